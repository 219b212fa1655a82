"""The preset protocol: every preset answers it, and nothing outside ``envs/`` asks for a preset
by its name."""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import numpy as np
import pytest

from uavrl.envs.mec.baselines import MecConstantPolicy
from uavrl.envs.mec.core import OFFLOAD, MecParams
from uavrl.envs.paper.baselines import ConstantPolicy
from uavrl.envs.paper.core import LOCAL
from uavrl.envs.preset import Preset, WorldScore, get_preset, presets_with, score_worlds, world_preset
from uavrl.envs.presets import PRESETS
from uavrl.envs.worlds import World, cell_worlds
from uavrl.errors import ConfigError

SRC = Path(__file__).resolve().parents[2] / "src" / "uavrl"
pytestmark = pytest.mark.timeout(120)


def _members(protocol: type) -> set[str]:
    annotated = set(typing.get_type_hints(protocol))
    methods = {n for n, v in vars(protocol).items() if callable(v) and not n.startswith("_")}
    return annotated | methods


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_has_every_member_of_the_protocol(name: str) -> None:
    preset = get_preset(name)
    missing = sorted(m for m in _members(Preset) if not hasattr(preset, m))
    assert missing == []
    assert preset.name == name and get_preset(name) is preset


@pytest.mark.parametrize("name", PRESETS)
def test_cells_round_trip_through_their_env_params(name: str) -> None:
    preset = get_preset(name)
    seen = preset.resolve_cells("seen")
    assert seen == list(preset.cell_sets["seen"]) and len(seen) == 5
    for cell in seen:
        assert set(cell.env_params()) == set(preset.cell_params)
        assert preset.cell_of({"preset": name, **cell.env_params()}) == cell
    assert preset.resolve_cells(f"{seen[1].name},seen") == [seen[1], *(c for c in seen if c != seen[1])]
    with pytest.raises(ConfigError, match="moon"):
        preset.resolve_cells("moon")


def test_capabilities_name_the_presets_that_have_them() -> None:
    assert presets_with("has_bound") == ["paper"]
    assert presets_with("pools_across_workers") == ["paper"]
    assert presets_with("objectives") == ["mec"]
    assert presets_with("metrics") == ["mec"]
    paper, mec = get_preset("paper"), get_preset("mec")
    assert paper.trains_shared({}, shared_pool=True) and not paper.trains_shared({}, shared_pool=False)
    assert mec.trains_shared({"cloud_group_size": 3}, shared_pool=False)
    assert not mec.trains_shared({}, shared_pool=False)
    assert paper.shared_agents({}, 5) == 5
    assert mec.shared_agents({"cloud_group_size": 3}, 5) == 3 and mec.shared_agents({}, 5) == 5
    with pytest.raises(ConfigError, match=r"preset must be one of \['paper', 'mec'\], got 'warp'"):
        get_preset("warp")


def test_paper_evaluations_keep_only_what_the_run_observes_mec_keeps_its_own_params() -> None:
    run = {"preset": "paper", "reward_scale": 0.01, "observe_payable": True, "velocity": 30.0}
    base = {"preset": "paper", "reward_scale": 0.05}
    assert get_preset("paper").evaluation_params(run, base) == {**base, "observe_payable": True}
    assert get_preset("paper").evaluation_params(run, None) == run
    mec_run = {"preset": "mec", "w_energy": 2.0}
    assert get_preset("mec").evaluation_params(mec_run, base) == mec_run


def test_a_preset_scores_what_the_one_world_loop_scores_with_its_metrics() -> None:
    """`mec` steps every world of a policy in one batch: the returns equal one world at a time
    (each world on its own streams), and each score carries the task metrics."""
    mec = get_preset("mec")
    cells = mec.resolve_cells("v30-f30-d200,v90-f15-d200")
    worlds = cell_worlds(
        [(c.name, {"preset": "mec", "horizon": 20, **c.env_params()}) for c in cells], "shared", 2
    )
    policy = MecConstantPolicy(MecParams(horizon=20), OFFLOAD, "always_offload")
    batched = mec.score([policy], worlds, 3, 7)
    alone = [mec.score([policy], [w], 3, 7)[0] for w in worlds]
    for together, single in zip(batched, alone, strict=True):
        assert isinstance(together, WorldScore) and together.world.n_agents == 2
        np.testing.assert_array_equal(together.returns, single.returns)
        assert set(together.metrics) == set(mec.metrics)
    paper = get_preset("paper")
    paper_worlds = cell_worlds([("v30", {"preset": "paper", "velocity": 30.0})], "private", 1)
    always_local = ConstantPolicy(LOCAL, "always_local")
    assert [s.returns.tolist() for s in paper.score([always_local], paper_worlds, 3, 7)] == [
        s.returns.tolist() for s in score_worlds([always_local], paper_worlds, 3, 7)
    ]
    assert world_preset(paper_worlds[0]) is paper and world_preset(worlds[0]) is mec


def test_mec_refuses_to_batch_worlds_that_differ_beyond_their_cells() -> None:
    mec = get_preset("mec")
    policy = MecConstantPolicy(MecParams(), OFFLOAD, "always_offload")
    worlds = [
        World("a", ({"preset": "mec", "w_energy": 1.0},), shared=False),
        World("b", ({"preset": "mec", "w_energy": 2.0},), shared=False),
    ]
    with pytest.raises(ConfigError, match="differ in their cells only"):
        mec.score([policy], worlds, 2, 0)


def _preset_name_literals(path: Path) -> list[int]:
    """Lines of ``path`` where code (not a docstring) holds a preset's name as a string."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and node.value in PRESETS and id(node) not in docstrings
    ]


def test_no_code_outside_envs_names_a_preset() -> None:
    """The CLI, the config, the runners and the experiments ask the preset (``get_preset``,
    ``EnvCommon.uavrl_preset``) what it has; only ``envs/`` knows the presets by name."""
    found = {
        str(path.relative_to(SRC)): lines
        for path in sorted(SRC.rglob("*.py"))
        if "envs" not in path.relative_to(SRC).parts and (lines := _preset_name_literals(path))
    }
    assert found == {}
