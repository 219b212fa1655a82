"""A user's script that calls uavrl without a main guard: every spawned child re-imports it.
Each child refuses in one line that names the fix, and the parent exits (before, it hung at
interpreter exit in its queue's feeder thread)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from uavrl.runners.supervise import MAIN_GUARD_HINT

SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from uavrl.config import config_from_dict
    from uavrl.experiments.train import train

    config = config_from_dict({
        "name": "unguarded", "seed": 1,
        "env": {"id": "uavrl/Offload-v0", "params": {"preset": "paper", "episode_length": 30}},
        "model": {"hidden_size": 8}, "algo": {"rollout_length": 5},
        "runner": {"n_workers": 2, "envs_per_worker": 2, "total_env_steps": 2000, "max_restarts": 1},
        "eval": {"episodes": 2}, "log": {"tensorboard": False, "progress": False},
    })
    train(config, Path(sys.argv[1]))  # no `if __name__ == "__main__":`
    """
)


def _group_empty(pgid: int, within_s: float) -> bool:
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    return False


def test_a_script_without_a_main_guard_is_refused_and_the_parent_exits(tmp_path: Path) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(SCRIPT)
    process = subprocess.Popen(
        [sys.executable, str(script), str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its children in its group: killed together if it hangs
    )
    try:
        _, err = process.communicate(timeout=150)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    assert process.returncode not in (0, None)
    assert MAIN_GUARD_HINT in err
    assert _group_empty(process.pid, within_s=15.0), "a child outlived the parent"
    assert 'if __name__ == "__main__":' in MAIN_GUARD_HINT
