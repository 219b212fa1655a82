"""README's Python snippets run as written (the deployment example is run by the export tests,
beside the files it reads)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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
    assert deployment >= 4  # the gym env, the core, the vector env and mec come first
    code = "\n".join(snippets[:deployment])
    # what the comments promise: the reward space of the vector-reward mec env
    code += "\nassert env.unwrapped.reward_space.shape == (4,) and reward.shape == (4,)\n"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
