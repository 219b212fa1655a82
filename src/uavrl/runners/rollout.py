"""Collect T-step rollouts from K envs with one batched forward pass per step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from uavrl.algo.batch import RolloutBatch
from uavrl.envs.vector import VecEnv
from uavrl.nn.models import ActorCritic, reset_hidden


@dataclass
class FinishedEpisode:
    copy: int
    episode_return: float
    length: int


class RolloutCollector:
    """Steps a VecEnv with a model, carrying observations and hidden state across rollouts.

    The hidden state is detached at rollout boundaries (collection runs without gradients; the
    learner re-evaluates from ``h0``).
    """

    def __init__(self, env: VecEnv, model: ActorCritic, seed: int, first_copy: int = 0) -> None:
        self.env = env
        self.n = env.n
        self.obs = torch.from_numpy(env.reset(seed, first_copy + np.arange(self.n)))
        self.h = model.initial_state(self.n)
        self.starts = torch.ones(self.n)
        self._returns = np.zeros(self.n)
        self._lengths = np.zeros(self.n, dtype=np.int64)

    @torch.no_grad()
    def collect(self, model: ActorCritic, length: int) -> tuple[RolloutBatch, list[FinishedEpisode]]:
        """Run ``length`` steps of every copy with ``model``; returns the batch and finished episodes."""
        head = model.policy
        t_b = (length, self.n)
        obs = torch.empty(*t_b, self.obs.shape[-1])
        actions = torch.empty(*t_b, *head.action_shape, dtype=head.action_dtype)
        params_seq = torch.empty(*t_b, head.param_dim)
        rewards, terminated, truncated = torch.zeros(t_b), torch.zeros(t_b), torch.zeros(t_b)
        final_values, starts = torch.zeros(t_b), torch.empty(t_b)
        h0 = self.h
        finished: list[FinishedEpisode] = []
        for t in range(length):
            obs[t], starts[t] = self.obs, self.starts
            params, _, self.h = model.step(self.obs, reset_hidden(self.h, self.starts))
            action = head.distribution(params).sample()
            params_seq[t], actions[t] = params, action
            step = self.env.step(head.to_env(action))
            rewards[t] = torch.from_numpy(step.reward)
            terminated[t] = torch.from_numpy(step.terminated.astype(np.float32))
            truncated[t] = torch.from_numpy(step.truncated.astype(np.float32))
            if step.truncated.any() and step.final_obs is not None:
                _, value, _ = model.step(torch.from_numpy(step.final_obs), self.h)
                final_values[t] = value * truncated[t]
            self.obs = torch.from_numpy(step.obs)
            done = step.terminated | step.truncated
            self.starts = torch.from_numpy(done.astype(np.float32))
            finished.extend(self._book(step.reward, done))
        _, last_value, _ = model.step(self.obs, reset_hidden(self.h, self.starts))
        batch = RolloutBatch(
            obs,
            actions,
            params_seq,
            rewards,
            terminated,
            truncated,
            final_values,
            starts,
            h0,
            last_value,
        )
        return batch, finished

    def _book(self, reward: np.ndarray, done: np.ndarray) -> list[FinishedEpisode]:
        self._returns += reward
        self._lengths += 1
        episodes = [
            FinishedEpisode(int(i), float(self._returns[i]), int(self._lengths[i]))
            for i in np.flatnonzero(done)
        ]
        self._returns[done] = 0.0
        self._lengths[done] = 0
        return episodes
