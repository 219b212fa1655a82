"""Counter-based random streams, one per batch copy, drawn for the whole batch at once.

Each copy owns a SplitMix64 stream: a 64-bit key derived from ``(seed, copy_index)`` with
``np.random.SeedSequence`` and a counter. Draw ``n`` of copy ``i`` is
``mix(key_i + (counter_i + n) * GAMMA)``, so one vectorised expression serves a batch of any size
and copy ``i`` of a batch yields exactly the numbers a lone copy with the same key yields.
SplitMix64 (Steele, Lea, Flood 2014) passes BigCrush; its constants are public.
"""

from __future__ import annotations

import functools

import numpy as np

from uavrl.errors import ConfigError

_GAMMA = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
_TO_UNIT = 2.0**-53


@functools.lru_cache(maxsize=1 << 16)
def stream_key(seed: int, copy_index: int) -> np.uint64:
    """The 64-bit key of copy ``copy_index`` of an environment seeded with ``seed``. Cached: an
    evaluation keys the same copies once per policy (common random numbers), and a SeedSequence
    costs tens of microseconds."""
    if seed < 0 or copy_index < 0:
        raise ValueError(f"seed and copy_index must be >= 0, got {seed}, {copy_index}")
    seq = np.random.SeedSequence(entropy=seed, spawn_key=(copy_index,))
    return np.uint64(seq.generate_state(1, dtype=np.uint64)[0])


class BatchedStreams:
    """``B`` independent uniform streams advanced together.

    Attributes:
        keys: (B,) uint64 stream keys.
        counters: (B,) uint64 number of draws consumed by each copy.
    """

    def __init__(self, n: int) -> None:
        self.keys = np.zeros(n, dtype=np.uint64)
        self.counters = np.zeros(n, dtype=np.uint64)
        self.current_seed: int | None = None

    def reset_rule(self, seed: int | None, copy_indices: np.ndarray | None) -> bool:
        """The seeding rule of a core's ``reset``: key copy ``i`` from ``(seed, copy_indices[i])``
        (default ``arange(B)``); ``None`` continues the current streams, or before the first
        keying draws a seed from OS entropy (kept in ``current_seed``).

        Returns:
            True when the streams were (re)keyed.
        """
        if seed is None and self.current_seed is None:
            seed = int(np.random.SeedSequence().generate_state(1)[0])
        if seed is None:
            return False
        rows = np.arange(self.keys.size)
        indices = rows if copy_indices is None else np.asarray(copy_indices, dtype=np.int64)
        if indices.shape != rows.shape:
            raise ConfigError(f"copy_indices must have shape {rows.shape}, got {indices.shape}")
        self.current_seed = int(seed)
        self.seed(rows, self.current_seed, indices)
        return True

    def seed(self, rows: np.ndarray, seed: int, copy_indices: np.ndarray) -> None:
        """Key the copies ``rows`` from ``(seed, copy_indices[j])`` and rewind their counters."""
        for row, index in zip(rows.tolist(), copy_indices.tolist(), strict=True):
            self.keys[row] = stream_key(seed, index)
        self.counters[rows] = 0

    def uniform(self, n: int, rows: np.ndarray | None = None) -> np.ndarray:
        """Next ``n`` draws in [0, 1) for each copy (or only ``rows``); shape (B, n)."""
        keys = self.keys if rows is None else self.keys[rows]
        counters = self.counters if rows is None else self.counters[rows]
        offsets = np.arange(n, dtype=np.uint64)
        z = keys[:, None] + (counters[:, None] + offsets) * _GAMMA
        z = (z ^ (z >> _S30)) * _MUL1
        z = (z ^ (z >> _S27)) * _MUL2
        z = z ^ (z >> _S31)
        if rows is None:
            self.counters += np.uint64(n)
        else:
            self.counters[rows] += np.uint64(n)
        return (z >> _S11).astype(np.float64) * _TO_UNIT
