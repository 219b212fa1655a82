"""Action heads: features -> distribution parameters -> distribution, chosen from the action space.

A head maps features (B, H) to a flat parameter tensor (B, P). ``distribution(params)`` turns
parameters into an object with ``sample``, ``mode``, ``log_prob`` and ``entropy``. Actions are
stored as tensors in the head's own format (Categorical: (B,) int64; MultiCategorical: (B, k)
int64, one index per entry; Gaussian: (B, d) float, the *unsquashed* sample; Composite, the
hybrid among them: (B, C) float, its parts' columns side by side, a discrete index as one
column), and ``to_env`` maps them to what the environment takes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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


class MultiCategoricalDist:
    """Independent categoricals, one per segment of the logits (``MultiDiscrete`` entries,
    ``MultiBinary`` bits): the log-probability and entropy of an action are their parts' sums."""

    def __init__(self, logits: torch.Tensor, sizes: list[int]) -> None:
        self.parts = [CategoricalDist(segment) for segment in logits.split(sizes, dim=-1)]

    def sample(self) -> torch.Tensor:
        return torch.stack([part.sample() for part in self.parts], dim=-1)

    def mode(self) -> torch.Tensor:
        return torch.stack([part.mode() for part in self.parts], dim=-1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.stack([p.log_prob(actions[..., i]) for i, p in enumerate(self.parts)], -1).sum(-1)

    def entropy(self) -> torch.Tensor:
        return torch.stack([part.entropy() for part in self.parts], dim=-1).sum(dim=-1)


Distribution = CategoricalDist | GaussianDist | MultiCategoricalDist


class CategoricalHead(nn.Module):
    """Logits for ``Discrete(n, start)``: index ``i`` is the env's action ``start + i``."""

    def __init__(self, in_dim: int, n: int, start: int = 0) -> None:
        super().__init__()
        self.n = n
        self.start = start
        self.param_dim = n
        self.action_shape: tuple[int, ...] = ()
        self.action_dtype = torch.int64
        self.logits = _linear(in_dim, n, gain=0.01)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features)

    def distribution(self, params: torch.Tensor, mask: torch.Tensor | None = None) -> CategoricalDist:
        return CategoricalDist(params, mask)

    def to_env(self, actions: torch.Tensor) -> np.ndarray:
        return actions.numpy().astype(np.int64) + self.start

    columns = 1  # float columns of an action inside a composite action

    def to_columns(self, actions: torch.Tensor) -> torch.Tensor:
        return actions.unsqueeze(-1).float()

    def from_columns(self, columns: torch.Tensor) -> torch.Tensor:
        return columns[..., 0].long()


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

    @property
    def columns(self) -> int:
        return self.dim

    def to_columns(self, actions: torch.Tensor) -> torch.Tensor:
        return actions

    def from_columns(self, columns: torch.Tensor) -> torch.Tensor:
        return columns


class MultiCategoricalHead(nn.Module):
    """Logits for ``MultiDiscrete(nvec)`` (one categorical per entry, offset by ``start``) or
    ``MultiBinary(shape)`` (a categorical over {0, 1} per bit). Params are the entries' logits
    side by side; an action is (B, k) int64, reshaped to the space's shape for the env."""

    def __init__(
        self, in_dim: int, sizes: list[int], shape: list[int], start: list[int], binary: bool
    ) -> None:
        super().__init__()
        self.sizes = [int(n) for n in sizes]
        self.param_dim = sum(self.sizes)
        self.action_shape: tuple[int, ...] = (len(self.sizes),)
        self.action_dtype = torch.int64
        self.shape = tuple(int(d) for d in shape)
        self.start = np.asarray(start, dtype=np.int64)
        self.binary = binary
        self.logits = _linear(in_dim, self.param_dim, gain=0.01)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.logits(features)

    def distribution(self, params: torch.Tensor, mask: torch.Tensor | None = None) -> MultiCategoricalDist:
        if mask is not None:
            raise ConfigError("action masks apply to Discrete actions only, not MultiDiscrete or MultiBinary")
        return MultiCategoricalDist(params, self.sizes)

    def to_env(self, actions: torch.Tensor) -> np.ndarray:
        values = actions.numpy().astype(np.int64) + self.start
        values = values.reshape(*values.shape[:-1], *self.shape)
        return values.astype(np.int8) if self.binary else values

    @property
    def columns(self) -> int:
        return len(self.sizes)

    def to_columns(self, actions: torch.Tensor) -> torch.Tensor:
        return actions.float()

    def from_columns(self, columns: torch.Tensor) -> torch.Tensor:
        return columns.long()


class CompositeDist:
    """Independent parts over column slices of one float action tensor: the log-probability and
    entropy of an action are the sums of its parts'."""

    def __init__(self, heads: list[Any], dists: list[Any], slices: list[slice]) -> None:
        self.parts = list(zip(heads, dists, slices, strict=True))

    def sample(self) -> torch.Tensor:
        return torch.cat([head.to_columns(dist.sample()) for head, dist, _ in self.parts], dim=-1)

    def mode(self) -> torch.Tensor:
        return torch.cat([head.to_columns(dist.mode()) for head, dist, _ in self.parts], dim=-1)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        terms = [dist.log_prob(head.from_columns(actions[..., cols])) for head, dist, cols in self.parts]
        return torch.stack(terms, dim=-1).sum(dim=-1)

    def entropy(self) -> torch.Tensor:
        return torch.stack([dist.entropy() for _, dist, _ in self.parts], dim=-1).sum(dim=-1)


class CompositeHead(nn.Module):
    """A ``Tuple`` or ``Dict`` of action spaces, nested: one head per part (``part0``,
    ``part1``, ...), their params side by side, an action (B, C) float with each part's columns
    side by side (a discrete index as one column). ``to_env`` rebuilds the tuple or dict."""

    def __init__(
        self,
        in_dim: int,
        action: dict[str, Any],
        squash: Squash = "clip",
        names: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        self.container: str = action["container"]
        self.keys: list[Any] = list(action["keys"])
        self.heads: list[Any] = [make_head(in_dim, part, squash) for part in action["parts"]]
        for i, head in enumerate(self.heads):
            self.add_module(names[i] if names else f"part{i}", head)
        self.discrete_parts = [i for i, head in enumerate(self.heads) if isinstance(head, CategoricalHead)]
        self.param_sizes = [head.param_dim for head in self.heads]
        self.param_dim = sum(self.param_sizes)
        widths = [head.columns for head in self.heads]
        ends = np.cumsum(widths).tolist()
        self.slices = [slice(end - width, end) for end, width in zip(ends, widths, strict=True)]
        self.columns = int(ends[-1])
        self.action_shape: tuple[int, ...] = (self.columns,)
        self.action_dtype = torch.float32

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.cat([head(features) for head in self.heads], dim=-1)

    def distribution(self, params: torch.Tensor, mask: torch.Tensor | None = None) -> CompositeDist:
        """``mask`` (B, n) applies to the composite's one Discrete part (a hybrid's choice)."""
        if mask is not None and len(self.discrete_parts) != 1:
            raise ConfigError("an action mask applies to a Tuple or Dict with exactly one Discrete part")
        dists = [
            head.distribution(p, mask if i in self.discrete_parts else None)
            for i, (head, p) in enumerate(zip(self.heads, params.split(self.param_sizes, -1), strict=True))
        ]
        return CompositeDist(self.heads, dists, self.slices)

    def to_env(self, actions: torch.Tensor) -> Any:
        parts = [
            head.to_env(head.from_columns(actions[..., cols]))
            for head, cols in zip(self.heads, self.slices, strict=True)
        ]
        return tuple(parts) if self.container == "tuple" else dict(zip(self.keys, parts, strict=True))

    def to_columns(self, actions: torch.Tensor) -> torch.Tensor:
        return actions

    def from_columns(self, columns: torch.Tensor) -> torch.Tensor:
        return columns


class HybridHead(CompositeHead):
    """``Tuple(Discrete(n), Box(low, high, (d,)))``: the composite of a categorical and a
    Gaussian, its parts named ``discrete`` and ``continuous`` (as checkpoints name them). Params
    are ``[logits (n) | mean (d) | log_std (d)]``; an action is (B, 1 + d) float, column 0 the
    discrete index."""

    def __init__(
        self, in_dim: int, n: int, low: np.ndarray, high: np.ndarray, squash: Squash = "clip"
    ) -> None:
        box = {"kind": "box", "low": np.asarray(low).tolist(), "high": np.asarray(high).tolist()}
        action = {"container": "tuple", "keys": [0, 1], "parts": [{"kind": "discrete", "n": n}, box]}
        super().__init__(in_dim, action, squash, names=("discrete", "continuous"))


ActionHead = CategoricalHead | GaussianHead | MultiCategoricalHead | CompositeHead


def describe_action_space(space: gym.Space[Any]) -> dict[str, Any]:
    """A JSON-able description of a supported action space (stored in checkpoints)."""
    if isinstance(space, gym.spaces.Discrete):
        start = int(space.start)  # named only when not 0: older checkpoints have none
        return {"kind": "discrete", "n": int(space.n), **({"start": start} if start else {})}
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
    if isinstance(space, gym.spaces.Tuple | gym.spaces.Dict):
        items = (
            list(enumerate(space.spaces))
            if isinstance(space, gym.spaces.Tuple)
            else list(space.spaces.items())
        )
        if not items:
            raise ConfigError(f"action space must not be an empty {type(space).__name__}")
        return {
            "kind": "composite",
            "container": "tuple" if isinstance(space, gym.spaces.Tuple) else "dict",
            "keys": [key for key, _ in items],
            "parts": [describe_action_space(sub) for _, sub in items],
        }
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {
            "kind": "multi_discrete",
            "nvec": np.asarray(space.nvec).reshape(-1).tolist(),
            "shape": list(space.shape),
            "start": np.asarray(space.start).reshape(-1).tolist(),
        }
    if isinstance(space, gym.spaces.MultiBinary):
        return {"kind": "multi_binary", "n": int(np.prod(space.shape)), "shape": list(space.shape)}
    raise ConfigError(
        f"action space must be Discrete, MultiDiscrete, MultiBinary, Box or Tuple(Discrete, Box), got {space}"
    )


def make_head(in_dim: int, action: dict[str, Any], squash: Squash = "clip") -> ActionHead:
    """The head for an action space description from :func:`describe_action_space`."""
    kind = action["kind"]
    if kind == "discrete":
        return CategoricalHead(in_dim, action["n"], int(action.get("start", 0)))
    if kind == "multi_discrete":
        return MultiCategoricalHead(in_dim, action["nvec"], action["shape"], action["start"], binary=False)
    if kind == "multi_binary":
        n = int(action["n"])
        return MultiCategoricalHead(in_dim, [2] * n, action["shape"], [0] * n, binary=True)
    if kind == "composite":
        return CompositeHead(in_dim, action, squash)
    low, high = np.asarray(action.get("low")), np.asarray(action.get("high"))
    if kind == "box":
        return GaussianHead(in_dim, low, high, squash)
    if kind == "hybrid":
        return HybridHead(in_dim, action["n"], low, high, squash)
    raise ConfigError(
        f"action kind must be discrete, multi_discrete, multi_binary, box, hybrid or composite, got {kind!r}"
    )
