"""The Ray backend on a 2-node cluster simulated on this machine (``ray.cluster_utils.Cluster``):
placement on both nodes, impala / a3c_data / a3c runs, a rollout actor and the learner killed
with -9 mid-run, and a driver killed with -9 then resumed."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from uavrl.config import Config, config_from_dict
from uavrl.errors import ConfigError
from uavrl.experiments.train import train

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from uavrl.experiments.study import load_study, plan  # noqa: E402
from uavrl.runners.ray_backend import actor_name  # noqa: E402
from uavrl.runners.supervise import process_status  # noqa: E402

FAULTY = "tests.runners.helper_envs:Faulty-v0"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def two_nodes() -> Any:
    """A head and a second node, 2 logical CPUs each; this process connects as the driver."""
    with pytest.MonkeyPatch.context() as patch:
        # Ray nices its workers by default: they must not starve behind the other tests
        patch.setenv("RAY_worker_niceness", "0")
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2, "include_dashboard": False})
        cluster.add_node(num_cpus=2)
        cluster.wait_for_nodes()
        # the rollout actors import the test envs from this repository
        ray.init(address=cluster.address, runtime_env={"env_vars": {"PYTHONPATH": str(ROOT)}})
        yield cluster
        ray.shutdown()
        cluster.shutdown()


def _config(make_config: Any, kind: str, steps: int = 2000, **env_params: Any) -> Config:
    """Rollouts of 100 env steps (4 envs x 25): few round trips, so the tests stay short."""
    return make_config(
        env={"id": FAULTY, "params": {"fault": "none", **env_params}, "worker_cells": None},
        runner={
            "kind": kind,
            "backend": "ray",
            "serial": False,
            "total_env_steps": steps,
            "envs_per_worker": 4,
            "checkpoint_every": 3,
        },
        algo={"rollout_length": 25, "lr": 1e-3, "gae_lambda": None},
        model={"hidden_size": 8, "recurrent": False},
        eval={"episodes": 2},
    )


def _answering_pid(actor: Any) -> int | None:
    try:
        return int(ray.get(actor.where.remote(), timeout=10)["pid"])
    except (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError):
        return None


def _learner_killer(run_dir: Path, killed: list[int]) -> Any:
    """A progress hook that kills the run's learner -9 once, at the first round past 1000 env
    steps (checkpoints every 3 updates, 600 env steps: 1000 is not one of them), records its pid
    in ``killed`` and returns once Ray has restarted it: killed between two calls and back before
    the next, so no call of the driver fails and the driver must notice the restart from the
    fresh process's answer."""

    def kill_learner(env_steps: int, models: Any) -> None:
        if killed or env_steps < 1000:
            return
        learner = ray.get_actor(actor_name(run_dir, "learner"))
        pid = ray.get(learner.where.remote())["pid"]
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        while _answering_pid(learner) == pid:
            time.sleep(0.1)

    return kill_learner


def _episodes_are_numbered_once(run_dir: Path) -> None:
    log = pd.read_csv(run_dir / "training_log.csv")
    for _, rows in log.groupby("worker_id"):
        episodes = sorted(rows["episode"])
        assert episodes == list(range(1, len(episodes) + 1))


def _on_both_nodes(summary: dict[str, Any]) -> None:
    nodes = {node["NodeID"] for node in ray.nodes() if node["Alive"]}
    assert len(nodes) == 2
    assert set(summary["ray"]["actors"]) == nodes  # SPREAD: one rollout actor on each node


def test_a3c_data_runs_on_two_nodes_on_policy(two_nodes: Any, make_config: Any, tmp_path: Path) -> None:
    config = _config(make_config, "a3c_data")
    summary = train(config, tmp_path)
    assert summary["status"] == "finished"
    assert config.runner.total_env_steps <= summary["env_steps"] <= config.runner.total_env_steps + 200
    _on_both_nodes(summary)
    lag = summary["policy_lag"]["histogram"]  # actors wait for the update they fed
    assert set(lag) == {"0"} and lag["0"] == summary["updates"] * config.runner.n_workers
    assert summary["faults"]["restarts"] == [0, 0] and summary["faults"]["rollouts_dropped"] == 0
    _episodes_are_numbered_once(tmp_path)
    assert (tmp_path / "checkpoints" / "last.safetensors").exists()


def test_an_a3c_data_learner_killed_mid_run_rolls_back_and_its_actors_stay_on_policy(
    two_nodes: Any, make_config: Any, tmp_path: Path
) -> None:
    """The learner killed -9 between two updates: the shared actor-learner loop finds it
    restarted at the next update, the run goes back to its last checkpoint and every actor acts
    again once; no actor is sent twice (a second rollout in flight would be acted by weights an
    update old), so every rollout stays on-policy and the full budget is trained."""
    config = _config(make_config, "a3c_data", steps=2400)
    killed: list[int] = []
    summary = train(config, tmp_path / "run", hook=_learner_killer(tmp_path / "run", killed))
    assert summary["status"] == "finished" and summary["env_steps"] >= config.runner.total_env_steps
    faults = summary["faults"]
    assert len(killed) == 1 and faults["learner_restarts"] == 1 and faults["env_steps_rolled_back"] > 0
    lag = summary["policy_lag"]["histogram"]
    assert set(lag) == {"0"}  # on-policy throughout, the rollback included
    (learner_event,) = [
        e for e in (tmp_path / "run" / "events.log").read_text().splitlines() if "learner died" in e
    ]
    assert "restarted from the last checkpoint" in learner_event
    _episodes_are_numbered_once(tmp_path / "run")


def test_a_composite_action_trains_on_ray_with_v_trace_on_its_joint_log_probability(
    two_nodes: Any, make_config: Any, tmp_path: Path
) -> None:
    """A Dict of Discrete, MultiBinary and Box actions through IMPALA's rollout actors and
    learner on two nodes: finished, with finite losses and a greedy return in the task's range."""
    config = _config(make_config, "impala")
    data = config.to_dict()
    data["env"] = {"id": "tests.runners.test_action_spaces:UavrlTest/OffloadChoice-v0", "params": {}}
    config = Config.model_validate(data)
    summary = train(config, tmp_path)
    assert summary["status"] == "finished" and summary["skipped_updates"] == 0
    _on_both_nodes(summary)
    losses = pd.read_csv(tmp_path / "training_log.csv")["policy_loss"].dropna()
    assert len(losses) > 0 and losses.map(math.isfinite).all()
    assert 0.0 <= summary["eval"]["mean_return"] <= 1.0


@pytest.mark.parametrize("kind", ["impala", "a3c"])
def test_killed_actors_are_restarted_and_the_budget_trained(
    two_nodes: Any, make_config: Any, tmp_path: Path, kind: str
) -> None:
    """A rollout actor killed -9 at its first env step is restarted by Ray (its rollout dropped);
    with impala the learner is killed -9 too, between checkpoints, and restarts from the last."""
    marker = tmp_path / "killed"
    config = _config(make_config, kind, steps=2400, fault="kill_once", at_step=1, marker=str(marker))
    if kind == "impala":  # its learner replays, and starts a new replay when restarted
        config = config.model_copy(update={"runner": config.runner.model_copy(update={"replay_size": 4})})
    killed: list[int] = []
    hook = _learner_killer(tmp_path / "run", killed) if kind == "impala" else None
    summary = train(config, tmp_path / "run", hook=hook)
    assert marker.exists()
    assert summary["status"] == "finished" and summary["env_steps"] >= config.runner.total_env_steps
    _on_both_nodes(summary)
    lag = summary["gradient_staleness" if kind == "a3c" else "policy_lag"]["histogram"]
    assert sum(lag.values()) >= summary["updates"] > 0
    faults = summary["faults"]
    assert sorted(faults["restarts"]) == [0, 1] and faults["rollouts_dropped"] >= 1
    events = (tmp_path / "run" / "events.log").read_text().splitlines()
    actor_events = [e for e in events if "rollout actor" in e]
    assert len(actor_events) == 1 and "restart 1 of 3" in actor_events[0]
    if kind == "impala":
        assert len(killed) == 1 and faults["learner_restarts"] == 1 and faults["env_steps_rolled_back"] > 0
        assert summary["replay"]["replayed_rollouts"] > 0  # the restarted learner's replay
        (learner_event,) = [e for e in events if "learner died" in e]
        assert "restarted from the last checkpoint" in learner_event
    else:
        assert len(events) == 1 and faults["learner_restarts"] == 0 and faults["rollouts_dropped"] == 1
    # the log was cut back to the checkpoint: each episode once, steps never going back
    _episodes_are_numbered_once(tmp_path / "run")
    assert pd.read_csv(tmp_path / "run" / "training_log.csv")["step"].is_monotonic_increasing


@pytest.mark.parametrize("kind", ["a3c_data", "impala"])
def test_stopped_actors_are_killed_once_silent_and_the_budget_trained(
    two_nodes: Any, make_config: Any, tmp_path: Path, kind: str
) -> None:
    """A rollout actor stopped (SIGSTOP) at its first env step leaves its ping unanswered: after
    runner.heartbeat_timeout_s it is killed and Ray restarts it (a3c_data waits for every actor:
    without it the run would wait forever). With impala the learner is stopped too, mid-call:
    killed the same way, restarted from the last checkpoint."""
    marker = tmp_path / "stopped"
    config = _config(make_config, kind, steps=2400, fault="stop_once", at_step=1, marker=str(marker))
    config = config.model_copy(
        update={"runner": config.runner.model_copy(update={"heartbeat_timeout_s": 3.0})}
    )
    stopped: list[int] = []

    def stop_learner(env_steps: int, models: Any) -> None:
        if kind != "impala" or stopped or env_steps < 1000:
            return
        learner = ray.get_actor(actor_name(tmp_path / "run", "learner"))
        stopped.append(ray.get(learner.where.remote())["pid"])
        os.kill(stopped[0], signal.SIGSTOP)

    summary = train(config, tmp_path / "run", hook=stop_learner)
    assert summary["status"] == "finished" and summary["env_steps"] >= config.runner.total_env_steps
    faults = summary["faults"]
    assert sorted(faults["restarts"]) == [0, 1] and faults["rollouts_dropped"] >= 1
    events = (tmp_path / "run" / "events.log").read_text().splitlines()
    actor_events = [e for e in events if "rollout actor" in e]
    assert "silent for" in actor_events[0] and "(runner.heartbeat_timeout_s=3); killing it" in actor_events[0]
    assert any("restart 1 of 3" in e for e in actor_events[1:]), events
    if kind == "impala":
        assert faults["learner_restarts"] == 1 and faults["env_steps_rolled_back"] > 0
        assert any("learner silent for" in e for e in events), events
        assert any("learner died (killed for its silence)" in e for e in events), events
    else:
        assert faults["learner_restarts"] == 0
    _episodes_are_numbered_once(tmp_path / "run")
    # the stopped processes are gone, not left stopped
    for pid in [int(marker.read_text()), *stopped]:
        status = process_status(pid)
        assert status is None or status[0] == "Z", status


def test_an_actor_that_dies_as_the_run_starts_is_waited_for(
    two_nodes: Any, make_config: Any, tmp_path: Path
) -> None:
    """A rollout actor killed before the driver's first call reaches it (the chaos benchmark's
    fault at a run's start): the driver waits while Ray restarts it, and the run goes on. Before,
    the first call's ActorUnavailableError ended the run."""
    from uavrl.runners.ray_backend import RayDriver
    from uavrl.runners.session import TrainingSession

    config = _config(make_config, "a3c_data")
    session = TrainingSession(config, tmp_path, n_learners=1, n_slots=1, resume=False)
    driver = RayDriver(config, session, None)
    try:
        first = int(ray.get(driver.actors[0].where.remote(), timeout=120)["pid"])
        ray.kill(driver.actors[0], no_restart=False)  # Ray restarts it
        deadline = time.monotonic() + 60
        while (status := process_status(first)) is not None and status[0] != "Z":
            assert time.monotonic() < deadline, "the killed actor's process did not exit"
            time.sleep(0.05)
        placed = driver.placement()
        assert len(placed["actors"]) == config.runner.n_workers
        assert driver.pids[0] != first  # the restarted process answers for it
        assert "rollout actor 0 died while it started" in (tmp_path / "events.log").read_text()
    finally:
        driver.close()


def test_the_backend_refuses_what_it_cannot_run(make_config: Any) -> None:
    with pytest.raises(ConfigError, match=r"runner\.backend: ray does not run runner\.serial: True"):
        make_config(runner={"backend": "ray", "serial": True})
    with pytest.raises(ConfigError, match=r"runner\.max_grad_staleness applies to runner\.backend: ray"):
        make_config(runner={"max_grad_staleness": 2})


def test_a_cuda_learner_on_a_cluster_without_a_gpu_is_refused(
    two_nodes: Any, make_config: Any, tmp_path: Path
) -> None:
    data = _config(make_config, "impala").to_dict()
    data["runner"]["learner_device"] = "cuda"
    config = config_from_dict(data)
    with pytest.raises(ConfigError, match=r"learner_device='cuda' on runner.backend: ray needs a GPU"):
        train(config, tmp_path)


def test_a_driver_stopped_by_ctrl_c_then_killed_with_9_resumes(two_nodes: Any, tmp_path: Path) -> None:
    """``uavrl train --address`` as a driver process on the cluster: Ctrl-C checkpoints and exits
    130; ``--resume``, then kill -9 of that driver (Ray ends a dead driver's actors); ``--resume``
    again finishes the budget with a clean log."""
    run_dir = tmp_path / "run"
    config = {
        "name": "ray-resume",
        "seed": 1,
        "env": {"id": FAULTY, "params": {"fault": "none"}},
        "model": {"hidden_size": 8, "recurrent": False},
        "algo": {"rollout_length": 25, "gae_lambda": None},
        "runner": {
            "kind": "impala",
            "backend": "ray",
            "n_workers": 1,
            "envs_per_worker": 4,
            "total_env_steps": 3000,
            "checkpoint_every": 3,
        },
        "eval": {"episodes": 2},
        "log": {"tensorboard": False, "progress": False},
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    uavrl = [sys.executable, "-m", "uavrl.cli"]
    address = ["--address", two_nodes.address]
    checkpoint = run_dir / "checkpoints" / "last.json"

    def start_and_wait(args: list[str], steps: int) -> subprocess.Popen[bytes]:
        """Start a driver; return once its checkpoint has ``steps`` env steps."""
        driver = subprocess.Popen([*uavrl, *args, *address], env=env, cwd=ROOT, start_new_session=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and driver.poll() is None:
            if checkpoint.exists() and json.loads(checkpoint.read_text())["counters"]["env_steps"] >= steps:
                break
            time.sleep(0.2)
        assert driver.poll() is None, "the driver ended before it was stopped"
        return driver

    driver = start_and_wait(["train", "--config", str(path), "--run-dir", str(run_dir)], 600)
    os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole group
    assert driver.wait(timeout=60) == 130
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "interrupted"
    assert summary["env_steps"] == json.loads(checkpoint.read_text())["counters"]["env_steps"]

    driver = start_and_wait(["train", "--resume", str(run_dir)], summary["env_steps"] + 600)
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    resume = [*uavrl, "train", "--resume", str(run_dir), *address]
    done = subprocess.run(resume, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["env_steps"] >= 3000
    assert json.loads(checkpoint.read_text())["counters"]["resumes"] == 2
    _episodes_are_numbered_once(run_dir)
    assert pd.read_csv(run_dir / "training_log.csv")["step"].is_monotonic_increasing


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (state, ppid, ...); None if
    the process is gone or a zombie."""
    try:
        fields = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields


def _live_descendants(pid: int) -> dict[int, str]:
    """Live descendants of ``pid`` with their command lines."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (fields := _stat(int(entry.name))) is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found: dict[int, str] = {}
    stack = [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            try:
                cmdline = (Path("/proc") / str(child) / "cmdline").read_bytes()
            except OSError:
                continue
            found[child] = cmdline.replace(b"\0", b" ").decode()
            stack.append(child)
    return found


@pytest.mark.skipif(not Path("/proc").exists(), reason="reads the process tree from /proc")
def test_a_driver_that_started_ray_leaves_no_ray_process_when_killed_with_9(
    two_nodes: Any, tmp_path: Path
) -> None:
    """``uavrl train --backend ray`` without an address starts Ray itself, even while another
    cluster runs on this machine (the 2-node one); kill -9 of that driver ends the GCS, the
    raylet and every actor and worker at once (they share its fate). Ray's two agents are left
    out: each reports the raylet's death to the GCS that died with it, and exits when that call
    times out (60 s, fixed in Ray)."""
    config = {
        "name": "ray-local",
        "env": {"id": FAULTY, "params": {"fault": "none"}},
        "model": {"hidden_size": 8, "recurrent": False},
        "algo": {"rollout_length": 25, "gae_lambda": None},
        "runner": {
            "kind": "impala",
            "n_workers": 1,
            "envs_per_worker": 4,
            "total_env_steps": 10**7,
            "checkpoint_every": 1,
        },
        "log": {"tensorboard": False, "progress": False},
    }
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["PYTHONPATH"] = str(ROOT)
    run_dir = tmp_path / "run"
    args = ["train", "--config", str(path), "--run-dir", str(run_dir), "--backend", "ray"]
    driver = subprocess.Popen(
        [sys.executable, "-m", "uavrl.cli", *args], env=env, cwd=ROOT, start_new_session=True
    )
    deadline = time.monotonic() + 120
    while not (run_dir / "checkpoints" / "last.json").exists() and time.monotonic() < deadline:
        assert driver.poll() is None, "the driver ended before it was killed"
        time.sleep(0.2)
    ray_processes = _live_descendants(driver.pid)
    commands = " ".join(ray_processes.values())
    assert "gcs_server" in commands and "raylet" in commands and "RolloutActor" in commands, commands
    agents = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")
    ray_processes = {pid: cmd for pid, cmd in ray_processes.items() if not cmd.startswith(agents)}
    os.kill(driver.pid, signal.SIGKILL)
    driver.wait()
    deadline = time.monotonic() + 15
    while (left := {p: c for p, c in ray_processes.items() if _stat(p)}) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"outlived their killed driver: {left}"


def test_a_study_runs_as_ray_tasks_retries_a_killed_run_and_skips_finished_ones(
    two_nodes: Any, tmp_path: Path
) -> None:
    """Each run a Ray task; the first training env to step 100 times kills its task's process
    (-9), which Ray retries once; the run directories land under the study directory here."""
    from uavrl.experiments.study import run_study

    marker = tmp_path / "killed"
    spec = {
        "name": "ray_study",
        "base": {
            "env": {"id": FAULTY, "params": {"fault": "kill_once", "at_step": 100, "marker": str(marker)}},
            "model": {"hidden_size": 8, "recurrent": False},
            "algo": {"rollout_length": 10},
            "runner": {"n_workers": 2, "envs_per_worker": 2, "serial": True},
            "log": {"tensorboard": False, "progress": False},
        },
        "seeds": 1,
        "arms": ["a3c", "individual"],
        "env_steps_per_worker": 500,
        "evaluation": {"episodes": 4},
    }
    (tmp_path / "study.yaml").write_text(json.dumps(spec))
    study = load_study(tmp_path / "study.yaml")
    study_dir = tmp_path / "out"
    results, progress = run_study(study, study_dir, poll_s=0.1, backend="ray")
    assert marker.exists()  # one run's task died, and its retry finished it
    assert progress.done == 2 and progress.failed == 0
    learned = results[results["arm"] != "reference"]
    assert set(learned["arm"]) == {"a3c", "individual"} and set(learned["seed"]) == {0}
    for run in plan(study, study_dir):
        summary = json.loads((run.run_dir / "summary.json").read_text())
        assert summary["status"] == "finished" and summary["config_hash"] == run.config.hash()
        assert (run.run_dir / "checkpoints" / "last.safetensors").exists()
    _, again = run_study(study, study_dir, poll_s=0.1, backend="ray")
    assert again.skipped == 2 and again.done == 0
