"""The chaos benchmark, small: faults at random instants and targets in short runs of every
runner kind; every run must end well (``uavrl bench chaos`` runs the same with 200 faults)."""

from __future__ import annotations

from pathlib import Path

import pytest
from uavrl.bench import chaos

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1500)]


def test_twenty_faults_leave_no_hang_no_orphan_and_no_duplicated_row(tmp_path: Path) -> None:
    trials, table = chaos.run(20, seed=7, faults_per_trial=4, directory=tmp_path)
    total = table.set_index("kind").loc["all"]
    assert total["child kills"] + total["child stops"] + total["run kills"] >= 20
    assert set(trials["kind"]) == set(chaos.KINDS)  # every runner kind had its trial
    assert total["hangs"] == 0 and total["orphans"] == 0, trials.to_string()
    assert total["duplicated rows"] == 0
    assert total["finished"] == total["trials"] == total["checkpoints load"], trials["error"].tolist()
    # a killed child loses at most the episodes of the update it had booked and not sent
    assert total["lost rows"] <= chaos.ENVS * total["child kills"]
    # every child fault was recovered from, the stopped ones after their heartbeat lapsed
    assert total["recover worst (s)"] < chaos.HEARTBEAT_S + 30


def test_faults_on_the_ray_backend_leave_no_hang_no_orphan_and_no_duplicated_row(tmp_path: Path) -> None:
    """The same on Ray: rollout actors and the learner killed and stopped, the driver killed."""
    pytest.importorskip("ray")
    trials, table = chaos.run(
        6, chaos.RAY_KINDS[1:], seed=3, faults_per_trial=3, directory=tmp_path, backend="ray"
    )
    total = table.set_index("kind").loc["all"]
    assert total["child kills"] + total["child stops"] + total["run kills"] >= 6
    assert total["hangs"] == 0 and total["orphans"] == 0, trials.to_string()
    assert total["duplicated rows"] == 0
    assert total["finished"] == total["trials"] == total["checkpoints load"], trials["error"].tolist()
    # the driver books an actor's episodes only when its rollout arrives; a dead learner's rows
    # are cut back with its checkpoint: nothing is lost
    assert total["lost rows"] == 0
    # an actor's restart is a new Ray worker process (about 6 s here); a stopped one, the heartbeat
    assert total["recover worst (s)"] < chaos.HEARTBEAT_S + 60
