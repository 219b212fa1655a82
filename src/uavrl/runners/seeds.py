"""The seeds of a run: one stream per purpose, all derived from ``config.seed``."""

from __future__ import annotations

import enum

import numpy as np


class SeedPurpose(enum.IntEnum):
    """What a derived seed is for: one stream per purpose (the values key the streams, so they
    never change)."""

    LEARNER_INIT = 1  # the initial weights of learner i
    RESUMED_ENVS = 2  # the env streams of the r-th resumed session
    ACTOR_SAMPLING = 3  # torch's action sampling in an actor (or the one serial actor)
    RESTARTED_ENVS = 4  # the env streams of a worker's i-th restart
    REPLAY = 5  # the learner's replay draws


def derived_seed(seed: int, purpose: SeedPurpose, *keys: int) -> int:
    """A 63-bit seed for one ``purpose`` of one run, told apart by ``keys`` (e.g. the worker)."""
    state = np.random.SeedSequence([seed, int(purpose), *keys]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def incarnation_seed(env_seed: int, worker_id: int, incarnation: int) -> int:
    """Env seed of worker ``worker_id``'s ``incarnation``-th restart (0: the first start): a
    restarted worker draws new streams instead of replaying the ones it had."""
    return (
        env_seed
        if incarnation == 0
        else derived_seed(env_seed, SeedPurpose.RESTARTED_ENVS, worker_id, incarnation)
    )
