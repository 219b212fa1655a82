"""An offloading env as other people write them: README's "your own environment" example.

Each step a UAV holds a job of ``N_TASKS`` independent tasks (each with its compute size and
its input data) and decides, per task, to run it on board or to offload it: a ``MultiBinary``
action, one offload bit per task. It observes a ``Dict``: the tasks, the channel state
(``Discrete``: bad, fair, good) and the edge server's load. On-board tasks run one after another
on the UAV; offloaded ones are uploaded one after another at the channel's rate and then run on
the server, slowed by its load. The job's latency is the later of the two finish times; the
reward is its negative. The state is drawn anew every step, so the best action of a state is
known exactly (:func:`best_latency`, over all 2^N assignments): a learning check with a known
optimum.

Importing this module registers ``TaskGraph-v0``, so ``env.id:
uavrl.envs.task_graph:TaskGraph-v0`` trains on it, as a third-party package's env would be.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np

N_TASKS = 6
LOCAL_SPEED = 1.0  # compute units per second on board
SERVER_SPEED = 4.0  # compute units per second on an idle server
RATES = np.array([0.5, 2.0, 8.0])  # data units per second: bad, fair, good channel
LOAD_SLOWDOWN = 0.8  # a server at load 1 runs at 20% of its speed


def latency(tasks: np.ndarray, channel: np.ndarray, load: np.ndarray, offload: np.ndarray) -> np.ndarray:
    """Job latency (s) of (..., N) offload bits for tasks (..., N, 2) = (size, data), channel
    (...,) and load (...,), broadcast over the leading axes."""
    size, data = tasks[..., 0], tasks[..., 1]
    local = (size * (1 - offload)).sum(axis=-1) / LOCAL_SPEED
    upload = (data * offload).sum(axis=-1) / RATES[channel]
    remote = upload + (size * offload).sum(axis=-1) / (SERVER_SPEED * (1.0 - LOAD_SLOWDOWN * load))
    return np.maximum(local, remote)


ASSIGNMENTS = ((np.arange(2**N_TASKS)[:, None] >> np.arange(N_TASKS)) & 1).astype(np.float64)


def best_latency(tasks: np.ndarray, channel: np.ndarray, load: np.ndarray) -> np.ndarray:
    """(B,) the lowest latency of B states over all 2^N assignments."""
    all_latencies = latency(tasks[:, None], channel[:, None], load[:, None], ASSIGNMENTS[None])
    return all_latencies.min(axis=1)


class TaskGraphEnv(gym.Env[dict[str, Any], np.ndarray]):
    """``episode_length`` jobs per episode; reward ``-latency`` per job."""

    def __init__(self, episode_length: int = 20) -> None:
        if episode_length < 1:
            raise ValueError(f"episode_length must be >= 1, got {episode_length}")
        self.episode_length = episode_length
        self.observation_space = gym.spaces.Dict(
            {
                "tasks": gym.spaces.Box(0.0, 1.0, (N_TASKS, 2), np.float32),
                "channel": gym.spaces.Discrete(len(RATES)),
                "load": gym.spaces.Box(0.0, 1.0, (1,), np.float32),
            }
        )
        self.action_space = gym.spaces.MultiBinary(N_TASKS)

    def _draw(self) -> dict[str, Any]:
        rng = self.np_random
        self._state: dict[str, Any] = {
            "tasks": rng.uniform(0.05, 1.0, (N_TASKS, 2)).astype(np.float32),
            "channel": int(rng.integers(len(RATES))),
            "load": rng.uniform(0.0, 1.0, (1,)).astype(np.float32),
        }
        return {
            key: value.copy() if isinstance(value, np.ndarray) else value
            for key, value in self._state.items()
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        self._t = 0
        return self._draw(), {}

    def step(self, action: np.ndarray) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        s = self._state
        cost = latency(
            s["tasks"].astype(np.float64), np.asarray(s["channel"]), s["load"][0], np.asarray(action)
        )
        best = best_latency(s["tasks"][None].astype(np.float64), np.array([s["channel"]]), s["load"])[0]
        self._t += 1
        info = {"latency": float(cost), "best_latency": float(best)}
        return self._draw(), -float(cost), False, self._t >= self.episode_length, info


if "TaskGraph-v0" not in gym.registry:
    gym.register("TaskGraph-v0", entry_point=f"{__name__}:TaskGraphEnv")
