"""Collect T-step rollouts from K envs with one batched forward pass per step."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from uavrl.algo.batch import RolloutBatch
from uavrl.algo.normalize import RewardScaler
from uavrl.envs.vector import VecEnv
from uavrl.nn.models import Actor, model_device, reset_hidden
from uavrl.runners.device import CPU
from uavrl.runners.inference import ServedPolicy


@dataclass
class FinishedEpisode:
    copy: int
    episode_return: float
    length: int


class RolloutCollector:
    """Steps a VecEnv with a model, carrying observations and hidden state across rollouts.

    The hidden state is detached at rollout boundaries (collection runs without gradients; the
    learner re-evaluates from ``h0``). Per-step data goes into NumPy buffers and becomes tensors
    once per rollout: per-step tensor bookkeeping would cost as much as the model.

    The model may live on an accelerator (``runner.actor_device``): then only its forward pass
    runs there, the hidden state stays there, and one copy per step brings the policy's
    parameters back, from which the action is sampled on the host as on the CPU path; the
    rollout it returns is in host memory either way.
    """

    def __init__(
        self,
        env: VecEnv,
        model: Actor | ServedPolicy,
        seed: int,
        first_copy: int = 0,
        reward_scaler: RewardScaler | None = None,
    ) -> None:
        self.env = env
        self.reward_scaler = reward_scaler
        self.n = env.n
        self.obs = env.reset(seed, first_copy + np.arange(self.n))
        self.h = model.initial_state(self.n)
        self.starts = np.ones(self.n, dtype=bool)
        self._returns = np.zeros(self.n)
        self._lengths = np.zeros(self.n, dtype=np.int64)

    def _act_state(self) -> torch.Tensor:
        if self.starts.any():
            starts = torch.from_numpy(self.starts.astype(np.float32)).to(self.h.device)
            return reset_hidden(self.h, starts)
        return self.h

    @torch.no_grad()
    def collect(self, model: Actor | ServedPolicy, length: int) -> tuple[RolloutBatch, list[FinishedEpisode]]:
        """Run ``length`` steps of every copy with ``model`` (or the inference server behind a
        :class:`~uavrl.runners.inference.ServedPolicy`); returns the batch and finished episodes."""
        head = model.policy
        device = CPU if isinstance(model, ServedPolicy) else model_device(model)
        self.h = self.h.to(device)  # a no-op but on the first rollout on an accelerator
        t_b = (length, self.n)
        obs = np.empty((*t_b, self.obs.shape[-1]), dtype=np.float32)
        rewards = np.empty(t_b, dtype=np.float32)
        terminated, truncated, starts = np.empty(t_b, bool), np.empty(t_b, bool), np.empty(t_b, bool)
        actions = torch.empty(*t_b, *head.action_shape, dtype=head.action_dtype)
        params_seq = torch.empty(*t_b, head.param_dim)
        final_values = torch.zeros(t_b)
        h0 = self.h.to(CPU)
        finished: list[FinishedEpisode] = []
        for t in range(length):
            obs[t], starts[t] = self.obs, self.starts
            params, self.h = model.act(torch.from_numpy(self.obs).to(device), self._act_state())
            params = params.to(CPU)  # on an accelerator, the step's one trip to the host
            action = head.distribution(params).sample()
            params_seq[t], actions[t] = params, action
            step = self.env.step(head.to_env(action))
            terminated[t], truncated[t] = step.terminated, step.truncated
            done = step.terminated | step.truncated
            scaler = self.reward_scaler
            rewards[t] = step.reward if scaler is None else scaler(step.reward, done)
            if step.truncated.any() and step.final_obs is not None:
                _, value, _ = model.step(torch.from_numpy(step.final_obs).to(device), self.h)
                final_values[t] = value.to(CPU) * torch.from_numpy(step.truncated.astype(np.float32))
            self.obs = step.obs
            self.starts = done
            if self.starts.any():
                finished.extend(self._finish(step.reward))
            else:
                self._returns += step.reward
                self._lengths += 1
        _, last_value, _ = model.step(torch.from_numpy(self.obs).to(device), self._act_state())
        batch = RolloutBatch(
            obs=torch.from_numpy(obs),
            actions=actions,
            behaviour_params=params_seq,
            rewards=torch.from_numpy(rewards),
            terminated=_as_float(terminated),
            truncated=_as_float(truncated),
            final_values=final_values,
            starts=_as_float(starts),
            h0=h0,
            last_value=last_value.to(CPU),
            next_obs=torch.from_numpy(self.obs.copy()),
            next_start=_as_float(self.starts),
        )
        return batch, finished

    def _finish(self, reward: np.ndarray) -> list[FinishedEpisode]:
        self._returns += reward
        self._lengths += 1
        done = self.starts
        episodes = [
            FinishedEpisode(int(i), float(self._returns[i]), int(self._lengths[i]))
            for i in np.flatnonzero(done)
        ]
        self._returns[done] = 0.0
        self._lengths[done] = 0
        return episodes


def _as_float(mask: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(mask.astype(np.float32))
