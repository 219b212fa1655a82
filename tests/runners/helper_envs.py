"""Small Gymnasium envs for runner tests, reachable as ``tests.runners.helper_envs:<Id>``."""

from __future__ import annotations

import os
import signal
from typing import Any

import gymnasium as gym
import numpy as np


class FaultyEnv(gym.Env[np.ndarray, np.int64]):
    """A trivial env that misbehaves from step ``at_step`` on (counted across episodes).

    ``fault``: ``"raise"`` raises, ``"nan"`` returns NaN rewards, ``"exit"`` ends the process
    (exit code 3), ``"kill_once"`` sends its own process SIGKILL, once per ``marker`` file: the
    first env to create the file (writing its pid there) dies, every other one, then and later,
    goes on; ``"stop_once"`` the same with SIGSTOP.
    """

    def __init__(self, fault: str = "raise", at_step: int = 50, marker: str = "") -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.fault, self.at_step, self.marker, self.steps, self.t = fault, at_step, marker, 0, 0

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return np.zeros(2, np.float32), {}

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.steps += 1
        self.t += 1
        reward = float(action)
        if self.steps >= self.at_step:
            if self.fault == "raise":
                raise RuntimeError("injected env failure")
            if self.fault == "exit":
                os._exit(3)
            if self.fault == "nan":
                reward = float("nan")
            if self.fault in ("kill_once", "stop_once"):
                signal_number = signal.SIGKILL if self.fault == "kill_once" else signal.SIGSTOP
                self.fault = "none"
                try:
                    fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                except FileExistsError:
                    pass  # another env died already
                else:
                    os.write(fd, str(os.getpid()).encode())  # who died, for the test
                    os.close(fd)
                    os.kill(os.getpid(), signal_number)
        return np.full(2, 0.5, np.float32), reward, False, self.t >= 10, {}


class CueMemoryEnv(gym.Env[np.ndarray, np.int64]):
    """A cue (+1 / -1) is shown at the first step only; after ``delay`` blank steps, the action
    at the last step earns +1 if it matches the cue, -1 otherwise. Memoryless policies cannot
    do better than chance (expected return 0); a recurrent policy can reach 1."""

    def __init__(self, delay: int = 4) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.delay = delay
        self.t = 0
        self.cue = 1

    def _obs(self) -> np.ndarray:
        cue = float(self.cue) if self.t == 0 else 0.0
        last = 1.0 if self.t == self.delay else 0.0
        return np.array([cue, last], np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        self.cue = 1 if self.np_random.random() < 0.5 else -1
        return self._obs(), {}

    def step(self, action: np.int64) -> tuple[np.ndarray, float, bool, bool, dict]:
        if self.t < self.delay:
            self.t += 1
            return self._obs(), 0.0, False, False, {}
        reward = 1.0 if (int(action) == 1) == (self.cue == 1) else -1.0
        return self._obs(), reward, True, False, {}


class HybridTargetEnv(gym.Env[np.ndarray, tuple[np.int64, np.ndarray]]):
    """A hybrid action (choice, level): the observation shows a side (+1 / -1) and a target level
    in [0, 1]; the reward is 1 for the matching choice minus the distance of the level from the
    target. Ten steps an episode (truncated), so a learner sees both kinds of episode end."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Tuple(
            (gym.spaces.Discrete(2), gym.spaces.Box(0.0, 1.0, (1,), np.float32))
        )
        self.t = 0
        self.obs = np.zeros(2, np.float32)

    def _draw(self) -> np.ndarray:
        side = 1.0 if self.np_random.random() < 0.5 else -1.0
        self.obs = np.array([side, self.np_random.random()], np.float32)
        return self.obs

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._draw(), {}

    def step(self, action: tuple[np.int64, np.ndarray]) -> tuple[np.ndarray, float, bool, bool, dict]:
        choice, level = action
        matched = (int(choice) == 1) == (self.obs[0] > 0)
        reward = float(matched) - abs(float(np.asarray(level).reshape(-1)[0]) - float(self.obs[1]))
        self.t += 1
        return self._draw(), reward, False, self.t >= 10, {}


class SwitchesEnv(gym.Env[np.ndarray, np.ndarray]):
    """An action space no model head takes (a Sequence of switches, of any length): a run on it
    must be refused before anything is written."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Sequence(gym.spaces.Discrete(2))

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return np.zeros(2, np.float32), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        return np.zeros(2, np.float32), 0.0, True, False, {}


for _id, _cls in (
    ("Faulty-v0", FaultyEnv),
    ("Switches-v0", SwitchesEnv),
    ("CueMemory-v0", CueMemoryEnv),
    ("HybridTarget-v0", HybridTargetEnv),
):
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=f"{__name__}:{_cls.__name__}")
