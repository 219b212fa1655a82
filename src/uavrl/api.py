"""uavrl from Python: train a config on any env, load the policy a run learned.

    run = uavrl.train("configs/cartpole_a3c.yaml", env="CartPole-v1")
    policy = uavrl.load(run.directory)
    action, state = policy.act(obs)                  # one observation, as the env returns it
    actions, state = policy.act(batch, state)        # or a batch (a leading axis on every part)

``env`` is a Gymnasium id or a callable that makes one env (a function or an env class that
can be imported by name, so that worker processes make it too); ``import uavrl`` stays free of
work: this module is imported at the first use of ``uavrl.train`` or ``uavrl.load``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from uavrl.config import Config, apply_overrides, config_from_dict, load_config
from uavrl.envs.presets import DEFAULT_PRESET
from uavrl.envs.spaces import ObservationEncoder, observation_encoder
from uavrl.envs.vector import attribute_path, env_maker, index_actions
from uavrl.errors import ConfigError
from uavrl.experiments import train as training
from uavrl.experiments.rundir import RunDir, next_free_run_dir
from uavrl.nn.models import ActorCritic, reset_hidden

EnvSource = str | Callable[..., gym.Env[Any, Any]]


class Policy:
    """A trained model acting in its env's own spaces, the recurrent state carried for you.

    ``act(obs, state=None, deterministic=True, episode_start=None) -> (action, state)`` takes
    one observation or a batch (every part with a leading axis of B) of the env's observation
    space and returns an action of its action space (or a batch of them) and the next state:
    an (H,) or (B, H) float32 array for a recurrent model, None for a feed-forward one. Pass
    ``state=None`` when every copy starts an episode, or ``episode_start`` (B,) booleans to
    clear the state of the copies that do (as Stable-Baselines3's ``predict``). Sampled actions
    (``deterministic=False``) draw from torch's global generator (``torch.manual_seed``).
    """

    def __init__(self, model: ActorCritic, config: Config) -> None:
        self.model = model.eval()
        self.config = config
        probe = env_maker(config.env.id, config.env.worker_params(0))()
        try:
            self.observation_space: gym.Space[Any] = probe.observation_space
            self.action_space: gym.Space[Any] = probe.action_space
        finally:
            probe.close()
        self.encode: ObservationEncoder = observation_encoder(self.observation_space, config.env.id)

    @property
    def recurrent(self) -> bool:
        return self.model.state_size > 0

    @torch.no_grad()
    def act(
        self,
        obs: Any,
        state: np.ndarray | None = None,
        deterministic: bool = True,
        episode_start: np.ndarray | None = None,
    ) -> tuple[Any, np.ndarray | None]:
        try:
            single = is_single(self.observation_space, obs)
            x = torch.from_numpy(self.encode(obs))  # (B, D)
        except (ValueError, KeyError, IndexError, TypeError) as err:
            raise ConfigError(
                f"the observation is not one (or a batch) of the run's observation space "
                f"{self.observation_space} (env.id {self.config.env.id!r}, env.params "
                f"{self.config.env.params}): {err}"
            ) from None
        batch = x.shape[0]
        if state is None or not self.recurrent:
            h = self.model.initial_state(batch)
        else:
            h = torch.as_tensor(np.asarray(state, dtype=np.float32)).reshape(batch, self.model.state_size)
            if episode_start is not None:
                starts = torch.as_tensor(np.asarray(episode_start, dtype=np.float32)).reshape(batch)
                h = reset_hidden(h, starts)
        params, h = self.model.act(x, h)
        dist = self.model.policy.distribution(params)
        action = self.model.policy.to_env(dist.mode() if deterministic else dist.sample())
        next_state = h.numpy() if self.recurrent else None
        if single:
            return index_actions(action, 0), None if next_state is None else next_state[0]
        return action, next_state


def is_single(space: gym.Space[Any], obs: Any) -> bool:
    """Whether ``obs`` is one observation of ``space`` rather than a batch: its first leaf has the
    leaf space's own shape (a batch has one axis more)."""
    while isinstance(space, gym.spaces.Dict | gym.spaces.Tuple):
        if isinstance(space, gym.spaces.Dict):
            key = next(iter(space.spaces))
            space, obs = space.spaces[key], obs[key]
        else:
            space, obs = space.spaces[0], obs[0]
    return bool(np.shape(obs) == space.shape)


@dataclass(frozen=True)
class Run:
    """A finished training run: its directory, ``summary.json``'s content and its config."""

    directory: Path
    summary: dict[str, Any]
    config: Config

    @property
    def policy(self) -> Policy:
        """The run's policy (:func:`load`); an individual-learning run has one per worker:
        ``uavrl.load(run.directory, model=i)``."""
        return load(self.directory)


def env_id_of(env: EnvSource) -> str:
    """``env.id`` for a Gymnasium id or a callable that makes one env: the callable's import path
    (``module:qualname``), checked to lead back to it, since worker processes make their envs
    from the config, not from an object of this process."""
    if isinstance(env, str):
        return env
    module, qualname = getattr(env, "__module__", None), getattr(env, "__qualname__", None)
    target: Any = None
    if module and qualname and "<" not in qualname:  # not a lambda, nor a function defined in one
        target = attribute_path(importlib.import_module(module), qualname)
    if target is not env:
        raise ConfigError(
            f"env {env!r} must be a Gymnasium id or a function or env class importable by name, so "
            "that worker processes can make it: define it at the top level of a module (not a "
            "lambda, a closure or a functools.partial) and give constructor arguments in env.params"
        )
    return f"{module}:{qualname}"


def resolve_config(config: Config | dict[str, Any] | str | Path, overrides: Sequence[str]) -> Config:
    """A Config from a Config, a dict of its fields or a YAML path, with ``key=value`` overrides."""
    if isinstance(config, str | Path):
        return load_config(config, list(overrides))
    data = config.to_dict() if isinstance(config, Config) else dict(config)
    data.pop("meta", None)
    return config_from_dict(apply_overrides(data, list(overrides)))


def train(
    config: Config | dict[str, Any] | str | Path,
    env: EnvSource | None = None,
    run_dir: str | Path | None = None,
    overrides: Sequence[str] = (),
) -> Run:
    """Train ``config`` (a :class:`~uavrl.config.Config`, a dict of its fields or a YAML path)
    on ``env`` (a Gymnasium id or a callable that makes one env; default: the config's
    ``env.id``), with ``overrides`` as ``uavrl train --set`` takes them, into ``run_dir``
    (default: ``runs/<name>``, numbered if a run is there). Returns the finished :class:`Run`.

    Worker processes are started with the spawn method: a script that calls this with a
    multi-process runner needs ``if __name__ == "__main__":`` around the call.
    """
    resolved = resolve_config(config, overrides)
    if env is not None:
        data = resolved.to_dict()
        env_id = env_id_of(env)
        if env_id != data["env"]["id"] and data["env"].get("params") == {"preset": DEFAULT_PRESET}:
            data["env"]["params"] = {}  # the defaults name uavrl's preset, which another env refuses
        data["env"]["id"] = env_id
        resolved = config_from_dict(data)
    directory = Path(run_dir) if run_dir is not None else next_free_run_dir(Path("runs") / resolved.name)
    summary = training.train(resolved, directory)
    return Run(directory, summary, resolved)


def load(run_dir: str | Path, model: int | None = None) -> Policy:
    """The policy of a run directory's last checkpoint (safetensors: loading runs no code).
    ``model`` picks one of an individual-learning run's models (one per worker)."""
    models, meta = RunDir(Path(run_dir)).load_models()
    if model is None and len(models) > 1:
        raise ConfigError(
            f"{run_dir} holds {len(models)} models (individual learning): choose one with model="
        )
    index = model or 0
    if not 0 <= index < len(models):
        raise ConfigError(f"model must be in [0, {len(models) - 1}], got {index}")
    return Policy(models[index], config_from_dict(meta["config"]))
