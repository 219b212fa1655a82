"""Action heads: features -> distribution parameters -> distribution, chosen from the action space.

A head maps features (B, H) to a flat parameter tensor (B, P). ``distribution(params)`` turns
parameters into an object with ``sample``, ``mode``, ``log_prob`` and ``entropy``. Actions are
stored as tensors in the head's own format (Categorical: (B,) int64; Gaussian: (B, d) float,
the *unsquashed* sample; Hybrid: (B, 1 + d) float, column 0 the discrete index), and
``to_env`` maps them to what the environment takes.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch
from torch import nn
from torch.distributions import Normal

from uavrl.errors import ConfigError

Squash = Literal["clip", "tanh"]
LOG_STD_BOUNDS = (-5.0, 2.0)


def _linear(in_dim: int, out_dim: int, gain: float) -> nn.Linear:
    layer = nn.Linear(in_dim, out_dim)
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class CategoricalDist:
    """Categorical over ``n`` actions from unnormalised logits; masked actions get probability 0.

    Sampling is Gumbel-max on the raw logits, so acting never normalises; ``log_prob`` and
    ``entropy`` normalise once, lazily.
    """

    def __init__(self, logits: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        if mask is not None:
            logits = logits.masked_fill(~mask, torch.finfo(logits.dtype).min)
        self.logits = logits
        self._log_p: torch.Tensor | None = None

    @property
    def log_p(self) -> torch.Tensor:
        if self._log_p is None:
            self._log_p = torch.log_softmax(self.logits, dim=-1)
        return self._log_p

    def sample(self) -> torch.Tensor:
        u = torch.rand_like(self.logits).clamp_(min=torch.finfo(self.logits.dtype).tiny)
        return (self.logits - torch.log(-torch.log(u))).argmax(dim=-1)

    def mode(self) -> torch.Tensor:
        return self.logits.argmax(dim=-1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.log_p.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        log_p = self.log_p
        return -(log_p.exp() * log_p).sum(dim=-1)


class GaussianDist:
    """Diagonal Gaussian over unsquashed actions ``u``; ``tanh`` squashing corrects log-probs.

    With ``squash="tanh"`` the env action is ``low + (tanh(u) + 1) / 2 * (high - low)`` and
    ``log p(a) = log N(u) - sum log(1 - tanh(u)^2) - sum log((high - low) / 2)``; the entropy
    returned is the Gaussian's (the squashed entropy has no closed form).
    """

    def __init__(
        self, mean: torch.Tensor, log_std: torch.Tensor, squash: Squash, half_range: torch.Tensor
    ) -> None:
        self.dist = Normal(mean, log_std.exp(), validate_args=False)
        self.squash = squash
        self.half_range = half_range

    def sample(self) -> torch.Tensor:
        return self.dist.sample()

    def mode(self) -> torch.Tensor:
        return self.dist.mean

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        log_prob = self.dist.log_prob(actions).sum(dim=-1)
        if self.squash == "tanh":
            # log(1 - tanh(u)^2) = 2 * (log 2 - u - softplus(-2u)), numerically stable.
            log_det = 2.0 * (math.log(2.0) - actions - nn.functional.softplus(-2.0 * actions))
            log_prob = log_prob - log_det.sum(dim=-1) - torch.log(self.half_range).sum()
        return log_prob

    def entropy(self) -> torch.Tensor:
        return self.dist.entropy().sum(dim=-1)


class HybridDist:
    """A discrete choice and a continuous value, independent given the state."""

    def __init__(self, discrete: CategoricalDist, continuous: GaussianDist) -> None:
        self.discrete = discrete
        self.continuous = continuous

    def sample(self) -> torch.Tensor:
        return torch.cat([self.discrete.sample().unsqueeze(-1).float(), self.continuous.sample()], dim=-1)

    def mode(self) -> torch.Tensor:
        return torch.cat([self.discrete.mode().unsqueeze(-1).float(), self.continuous.mode()], dim=-1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.discrete.log_prob(actions[..., 0]) + self.continuous.log_prob(actions[..., 1:])

    def entropy(self) -> torch.Tensor:
        return self.discrete.entropy() + self.continuous.entropy()


Distribution = CategoricalDist | GaussianDist | HybridDist


class CategoricalHead(nn.Module):
    """Logits for ``Discrete(n)``."""

    def __init__(self, in_dim: int, n: int) -> None:
        super().__init__()
        self.n = n
        self.param_dim = n
        self.action_shape: tuple[int, ...] = ()
        self.action_dtype = torch.int64
        self.logits = _linear(in_dim, n, gain=0.01)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features)

    def distribution(self, params: torch.Tensor, mask: torch.Tensor | None = None) -> CategoricalDist:
        return CategoricalDist(params, mask)

    def to_env(self, actions: torch.Tensor) -> np.ndarray:
        return actions.numpy().astype(np.int64)


class GaussianHead(nn.Module):
    """Mean and a learned, state-independent log-std for ``Box(low, high, (d,))``.

    Params are ``[mean (d) | log_std (d)]`` so that a stored parameter tensor alone rebuilds the
    behaviour distribution. Actions stay inside the bounds by clipping (``squash="clip"``, the
    log-prob is that of the unclipped sample) or by a tanh squash.
    """

    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, in_dim: int, low: np.ndarray, high: np.ndarray, squash: Squash = "clip") -> None:
        super().__init__()
        if not (np.isfinite(low).all() and np.isfinite(high).all()):
            raise ConfigError(f"a Gaussian head needs finite action bounds, got low={low}, high={high}")
        self.dim = int(low.size)
        self.param_dim = 2 * self.dim
        self.action_shape = (self.dim,)
        self.action_dtype = torch.float32
        self.squash: Squash = squash
        self.mean = _linear(in_dim, self.dim, gain=0.01)
        self.log_std = nn.Parameter(torch.zeros(self.dim))
        self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32).flatten())
        self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32).flatten())

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        mean = self.mean(features)
        log_std = self.log_std.clamp(*LOG_STD_BOUNDS).expand_as(mean)
        return torch.cat([mean, log_std], dim=-1)

    def distribution(self, params: torch.Tensor, mask: torch.Tensor | None = None) -> GaussianDist:
        mean, log_std = params.split(self.dim, dim=-1)
        return GaussianDist(mean, log_std, self.squash, (self.high - self.low) / 2)

    def to_env(self, actions: torch.Tensor) -> np.ndarray:
        if self.squash == "tanh":
            env_actions = self.low + (torch.tanh(actions) + 1.0) * (self.high - self.low) / 2
        else:
            env_actions = torch.maximum(torch.minimum(actions, self.high), self.low)
        return env_actions.numpy().astype(np.float32)


class HybridHead(nn.Module):
    """``Tuple(Discrete(n), Box(low, high, (d,)))``.

    Params are ``[logits (n) | mean (d) | log_std (d)]``.
    """

    def __init__(
        self, in_dim: int, n: int, low: np.ndarray, high: np.ndarray, squash: Squash = "clip"
    ) -> None:
        super().__init__()
        self.discrete = CategoricalHead(in_dim, n)
        self.continuous = GaussianHead(in_dim, low, high, squash)
        self.param_dim = n + self.continuous.param_dim
        self.action_shape = (1 + self.continuous.dim,)
        self.action_dtype = torch.float32

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.discrete(features), self.continuous(features)], dim=-1)

    def distribution(self, params: torch.Tensor, mask: torch.Tensor | None = None) -> HybridDist:
        logits, rest = params.split([self.discrete.n, self.continuous.param_dim], dim=-1)
        return HybridDist(self.discrete.distribution(logits, mask), self.continuous.distribution(rest))

    def to_env(self, actions: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
        return self.discrete.to_env(actions[..., 0].long()), self.continuous.to_env(actions[..., 1:])


ActionHead = CategoricalHead | GaussianHead | HybridHead


def describe_action_space(space: gym.Space[Any]) -> dict[str, Any]:
    """A JSON-able description of a supported action space (stored in checkpoints)."""
    if isinstance(space, gym.spaces.Discrete):
        return {"kind": "discrete", "n": int(space.n)}
    if isinstance(space, gym.spaces.Box):
        return {
            "kind": "box",
            "low": space.low.flatten().tolist(),
            "high": space.high.flatten().tolist(),
        }
    if (
        isinstance(space, gym.spaces.Tuple)
        and len(space.spaces) == 2
        and isinstance(space.spaces[0], gym.spaces.Discrete)
        and isinstance(space.spaces[1], gym.spaces.Box)
    ):
        box = space.spaces[1]
        return {
            "kind": "hybrid",
            "n": int(space.spaces[0].n),
            "low": box.low.flatten().tolist(),
            "high": box.high.flatten().tolist(),
        }
    raise ConfigError(f"action space must be Discrete, Box or Tuple(Discrete, Box), got {space}")


def make_head(in_dim: int, action: dict[str, Any], squash: Squash = "clip") -> ActionHead:
    """The head for an action space description from :func:`describe_action_space`."""
    kind = action["kind"]
    if kind == "discrete":
        return CategoricalHead(in_dim, action["n"])
    low, high = np.asarray(action.get("low")), np.asarray(action.get("high"))
    if kind == "box":
        return GaussianHead(in_dim, low, high, squash)
    if kind == "hybrid":
        return HybridHead(in_dim, action["n"], low, high, squash)
    raise ConfigError(f"action kind must be discrete, box or hybrid, got {kind!r}")
