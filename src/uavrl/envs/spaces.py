"""Observations of any Gymnasium space as one float vector per copy.

A model reads a flat ``(B, D)`` float32 batch. :func:`observation_encoder` builds, once per env,
the function that turns a batch of observations of the env's declared space into that: a ``Box``
flattened, a ``Discrete`` one-hot, a ``MultiDiscrete`` one one-hot per entry, a ``MultiBinary``
as its bits, and ``Dict`` / ``Tuple`` the concatenation of their parts in the space's order,
nested (the layout of :func:`gymnasium.spaces.flatten`, batched). A value outside its declared
space is reported once per env and key (a warning naming both), then clipped into the space.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from uavrl.errors import ConfigError

Encode = Callable[[Any], np.ndarray]  # a batch of observations of one (sub)space -> (B, d)


@dataclass
class ObservationEncoder:
    """Batches of one env's observations -> (B, ``dim``) float32.

    ``layout`` names each part's columns: ``(key, kind, first column, last column + 1)``, the
    key a path such as ``observation["task"][1]``.
    """

    env_id: str
    dim: int
    layout: list[tuple[str, str, int, int]]
    _encode: Encode
    reported: set[str] = field(default_factory=set)

    def __call__(self, batch: Any) -> np.ndarray:
        return self._encode(batch)

    def report(self, key: str, what: str) -> None:
        """Warn once per key that an observation left its declared space."""
        if key not in self.reported:
            self.reported.add(key)
            warnings.warn(f"env.id {self.env_id!r}: {key} {what}; clipped into the space", stacklevel=4)


def observation_encoder(space: gym.Space[Any], env_id: str) -> ObservationEncoder:
    """The encoder of ``space`` (a single copy's observation space) for env ``env_id``. It
    takes a batch (as a Gymnasium vector env returns it) or one unbatched observation."""
    layout: list[tuple[str, str, int, int]] = []
    encoder = ObservationEncoder(env_id, 0, layout, lambda batch: batch)
    encode, dim = _part(space, "observation", encoder, 0)
    encoder.dim, encoder._encode = dim, encode
    return encoder


def _part(space: gym.Space[Any], key: str, encoder: ObservationEncoder, first: int) -> tuple[Encode, int]:
    """(encode, width) of one part at column ``first``; appends its layout rows."""
    if isinstance(space, gym.spaces.Dict | gym.spaces.Tuple):
        children: list[tuple[Any, gym.Space[Any], str]] = (
            [(name, sub, f"{key}[{name!r}]") for name, sub in space.spaces.items()]
            if isinstance(space, gym.spaces.Dict)
            else [(i, sub, f"{key}[{i}]") for i, sub in enumerate(space.spaces)]
        )
        parts, width = [], 0
        for name, sub_space, sub_key in children:
            part, w = _part(sub_space, sub_key, encoder, first + width)
            parts.append((name, part))
            width += w
        if not parts:
            raise ConfigError(f"env.id {encoder.env_id!r}: {key} is an empty {type(space).__name__}")

        def encode_all(batch: Any) -> np.ndarray:
            return np.concatenate([part(batch[name]) for name, part in parts], axis=1)

        return encode_all, width
    encode, width, kind = _leaf(space, key, encoder)
    encoder.layout.append((key, kind, first, first + width))
    return encode, width


def _leaf(space: gym.Space[Any], key: str, encoder: ObservationEncoder) -> tuple[Encode, int, str]:
    if isinstance(space, gym.spaces.Box):
        # the model reads float32: bounds compared in it, so one conversion per batch
        low = np.broadcast_to(space.low, space.shape).reshape(-1).astype(np.float32)
        high = np.broadcast_to(space.high, space.shape).reshape(-1).astype(np.float32)
        width = max(int(np.prod(space.shape)), 1)

        def box(batch: Any) -> np.ndarray:
            x = np.asarray(batch, dtype=np.float32).reshape(-1, width)
            if not np.isfinite(x).all():
                raise FloatingPointError(f"env.id {encoder.env_id!r}: {key} holds NaN or inf")
            if (x < low).any() or (x > high).any():
                encoder.report(key, f"left its Box bounds (got values in [{x.min():g}, {x.max():g}])")
                x = np.clip(x, low, high)
            return x

        return box, width, "Box"
    if isinstance(space, gym.spaces.Discrete):
        n, start = int(space.n), int(space.start)

        def discrete(batch: Any) -> np.ndarray:
            index = np.asarray(batch, dtype=np.int64).reshape(-1) - start
            if (index < 0).any() or (index >= n).any():
                seen = f"{int(index.min()) + start}..{int(index.max()) + start}"
                encoder.report(key, f"left Discrete({n}, start={start}) (got {seen})")
                index = np.clip(index, 0, n - 1)
            return np.eye(n, dtype=np.float32)[index]

        return discrete, n, "Discrete (one-hot)"
    if isinstance(space, gym.spaces.MultiDiscrete):
        nvec = np.asarray(space.nvec, dtype=np.int64).reshape(-1)
        starts = np.asarray(space.start, dtype=np.int64).reshape(-1)
        offsets = np.concatenate([[0], np.cumsum(nvec)[:-1]])
        width = int(nvec.sum())

        def multi_discrete(batch: Any) -> np.ndarray:
            index = np.asarray(batch, dtype=np.int64).reshape(-1, nvec.size) - starts
            if (index < 0).any() or (index >= nvec).any():
                encoder.report(key, f"left MultiDiscrete({nvec.tolist()})")
                index = np.clip(index, 0, nvec - 1)
            out = np.zeros((index.shape[0], width), dtype=np.float32)
            out[np.arange(index.shape[0])[:, None], offsets + index] = 1.0
            return out

        return multi_discrete, width, "MultiDiscrete (one-hot per entry)"
    if isinstance(space, gym.spaces.MultiBinary):
        width = int(np.prod(space.shape))

        def multi_binary(batch: Any) -> np.ndarray:
            bits = np.asarray(batch).reshape(-1, width)
            if ((bits != 0) & (bits != 1)).any():
                encoder.report(key, "left MultiBinary (values other than 0 and 1)")
                bits = bits != 0
            return bits.astype(np.float32)

        return multi_binary, width, "MultiBinary"
    raise ConfigError(
        f"env.id {encoder.env_id!r}: {key} is a {type(space).__name__}; observations may be Box, "
        "Discrete, MultiDiscrete, MultiBinary, and Dict or Tuple of these"
    )


@dataclass
class SpaceRandomPolicy:
    """Uniform over any Gymnasium action space (the reference of an env without rules): each
    row's action drawn by ``space.sample()`` from the space's own seeded generator, the rows
    batched as a Gymnasium vector env takes them (a Tuple or Dict space: a tuple or dict of
    arrays)."""

    space: Any
    seed: int = 0
    name: str = "random"
    needs_privileged: bool = False

    def __post_init__(self) -> None:
        self.space.seed(self.seed)

    def __call__(self, obs: np.ndarray, privileged: dict[str, np.ndarray] | None) -> Any:
        n = obs.shape[0]
        samples = [self.space.sample() for _ in range(n)]
        batch: Any = gym.vector.utils.create_empty_array(self.space, n)
        return gym.vector.utils.concatenate(self.space, samples, batch)
