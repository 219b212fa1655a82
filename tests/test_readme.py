"""README's Python snippets run as written (the deployment example is run by the export tests,
beside the files it reads)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"


def python_snippets() -> list[str]:
    """Every ```python block of README, in order."""
    return re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)


def test_the_environment_snippets_run_in_order_in_a_fresh_process(tmp_path: Path) -> None:
    """All blocks before the deployment example, run one after another in one namespace (later
    blocks use the imports of earlier ones, as a reader pasting them would), with every
    attribute they name checked by running it."""
    snippets = python_snippets()
    deployment = next(i for i, s in enumerate(snippets) if "onnxruntime" in s)
    environment = [s for s in snippets[:deployment] if "uavrl.train(" not in s]
    assert len(environment) >= 4  # the gym env, the core, the vector env and mec
    code = "\n".join(environment)
    # what the comments promise: the reward space of the vector-reward mec env
    code += "\nassert env.unwrapped.reward_space.shape == (4,) and reward.shape == (4,)\n"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.timeout(240)
def test_the_python_api_snippet_trains_loads_and_acts_as_a_script(tmp_path: Path) -> None:
    """README's `uavrl.train` / `uavrl.load` example, saved as a script and run from a directory
    that holds the configs, as a user would run it: it trains, prints the run's return and acts
    with the loaded policy (6 offload bits)."""
    snippet = next(s for s in python_snippets() if "uavrl.train(" in s)
    script = tmp_path / "train_my_env.py"
    script.write_text(snippet)
    (tmp_path / "configs").symlink_to(README.parent / "configs")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=200
    )
    assert done.returncode == 0, done.stderr
    run_line, action_line = done.stdout.strip().splitlines()[-2:]
    directory, mean_return = run_line.rsplit(" ", 1)
    assert (tmp_path / directory / "summary.json").exists() and float(mean_return) < 0
    assert len(action_line.strip("[]").split()) == 6


def shell_commands() -> list[str]:
    """Every `uavrl ...` command of README's ```bash blocks, as a reader would type it: comments
    cut, `a && b` split, optional parts in [brackets] kept (their brackets dropped)."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.DOTALL):
        for line in block.splitlines():
            code = re.sub(r"\s+#.*$", "", line).strip()
            for part in code.split("&&"):
                part = part.strip().replace("[", "").replace("]", "")
                if part.startswith("uavrl "):
                    commands.append(part)
    return commands


def test_every_shell_command_of_readme_parses_and_names_configs_that_load() -> None:
    """Each `uavrl` command of README is accepted by the CLI's own parser (its subcommand, every
    option and choice), and a config it names loads with the overrides it gives, so README
    cannot drift from the code. (Running each would take hours: the quick start, the training,
    evaluation, export and study commands run end to end in the CLI tests with short budgets.)"""
    import shlex

    from uavrl.cli import build_parser
    from uavrl.config import load_config
    from uavrl.experiments.study import load_study
    from uavrl.experiments.tune import load_tune

    parser = build_parser()
    commands = shell_commands()
    assert len(commands) >= 25
    subcommands = set()
    for command in commands:
        argv = shlex.split(command.replace("HEAD_IP", "10.0.0.1"))[1:]
        try:
            args = parser.parse_args(argv)
        except SystemExit as exit_:
            raise AssertionError(f"README command refused by the CLI: {command}") from exit_
        subcommands.add(argv[0])
        config = getattr(args, "config", None)
        if config:
            path = Path(__file__).parents[1] / config
            overrides = getattr(args, "set", None) or []
            loader = {"study": load_study, "tune": load_tune}.get(argv[0], load_config)
            loader(path, overrides)
    assert {"train", "evaluate", "baselines", "study", "tune", "export", "bench", "pareto"} <= subcommands
