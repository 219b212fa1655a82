"""Config validation: values that would pass and then crash, or silently mean something else."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from uavrl.config import MAX_PROCESSES_PER_CORE, load_config
from uavrl.errors import ConfigError

CONFIGS = Path(__file__).parent.parent / "configs"
BASE = CONFIGS / "cartpole_a3c.yaml"


@pytest.mark.parametrize("field", ["algo.lr", "algo.entropy_coef", "algo.value_coef", "algo.gamma"])
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", "inf"])
def test_non_finite_numbers_are_refused_naming_the_field(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=rf"{field}: Input should be a finite number"):
        load_config(BASE, [f"{field}={value}"])


@pytest.mark.parametrize("setting", ["runner.n_workers=true", "algo.lr=false", "runner.total_env_steps=true"])
def test_a_boolean_is_not_a_number(setting: str) -> None:
    name = setting.split(".")[1].split("=")[0]
    with pytest.raises(ConfigError, match=rf"{name} must be a number, got (True|False)"):
        load_config(BASE, [setting])
    # a real boolean field still takes one
    assert load_config(BASE, ["runner.serial=true"]).runner.serial is True


def test_an_empty_config_file_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.yaml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(empty)


def test_processes_far_above_the_cores_need_an_explicit_flag() -> None:
    many = MAX_PROCESSES_PER_CORE * (os.cpu_count() or 1) + 1
    with pytest.raises(ConfigError, match=rf"runner.n_workers={many} starts {many} worker processes"):
        load_config(BASE, [f"runner.n_workers={many}"])
    assert load_config(
        BASE, [f"runner.n_workers={many}", "runner.allow_many_processes=true"]
    ).runner.n_workers
    # one process whatever the worker count
    assert load_config(BASE, [f"runner.n_workers={many}", "runner.serial=true"]).runner.serial


def test_unset_env_params_name_the_paper_preset_only_for_uavrls_own_id() -> None:
    """``--set env.id=CartPole-v1`` on the defaults makes CartPole with no arguments, and the
    defaults' identity (every run hash made before this rule) is unchanged: their params were
    the paper preset."""
    assert load_config(None, ["env.id=CartPole-v1"]).env.params == {}
    default = load_config(None, [])
    assert default.env.params == {"preset": "paper"}
    assert default.hash() == load_config(None, ["env.params={preset: paper}"]).hash()


def test_a_preset_parameter_added_later_leaves_the_hash_at_its_default() -> None:
    """``observe_payable`` came after runs were on record: set to its default (false) a config
    hashes as it did without it, so a study that pins it off keeps its confirmatory hash; on,
    it is another config. A parameter from before (``observe_feasibility``) counts even at its
    default, as it always did."""
    base = load_config(None, [])

    def with_param(item: str) -> str:
        return load_config(None, [f"env.params={{preset: paper, {item}}}"]).hash()

    assert with_param("observe_payable: false") == base.hash()
    assert with_param("observe_payable: true") != base.hash()
    assert with_param("observe_feasibility: false") != base.hash()


def test_where_workers_run_is_one_field_and_the_old_serial_flag_reads_as_it() -> None:
    """``runner.backend: serial | process | ray``. ``serial: true`` (configs and run directories
    written before) reads as ``backend: serial`` with the same config hash, ``serial: false``
    over a serial config as ``process``; anything else is refused naming the field."""
    serial = load_config(BASE, ["runner.backend=serial"])
    assert serial.runner.backend == "serial" and serial.runner.serial
    old = load_config(BASE, ["runner.serial=true"])
    assert old.runner.backend == "serial" and old.hash() == serial.hash()
    assert old.to_dict()["runner"]["backend"] == "serial" and "serial" not in old.to_dict()["runner"]
    process = load_config(BASE, ["runner.backend=process"])
    assert not process.runner.serial and process.hash() != serial.hash()
    assert load_config(BASE, ["runner.serial=false"]).hash() == process.hash()
    # the old flag given over a serial config turns it off, as it did
    assert load_config(BASE, ["runner.backend=serial", "runner.serial=false"]).runner.backend == "process"
    with pytest.raises(ConfigError, match=r"runner\.serial must be true or false"):
        load_config(BASE, ["runner.serial=3"])
