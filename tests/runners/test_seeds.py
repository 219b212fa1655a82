"""Seeds by purpose: each purpose keeps the stream it has always had, and purposes never meet."""

from __future__ import annotations

import numpy as np

from uavrl.runners.seeds import SeedPurpose, derived_seed, incarnation_seed


def _by_hand(*entropy: int) -> int:
    """A 63-bit seed from NumPy's SeedSequence over ``entropy``, as every run has drawn them."""
    return int(np.random.SeedSequence(list(entropy)).generate_state(1, np.uint64)[0] >> np.uint64(1))


def test_each_purpose_keys_the_stream_it_always_had() -> None:
    # the numbers that keyed these streams before they had names: a run seeded 7 draws the same
    assert [int(p) for p in SeedPurpose] == [1, 2, 3, 4, 5]
    assert derived_seed(7, SeedPurpose.LEARNER_INIT, 0) == _by_hand(7, 1, 0)
    assert derived_seed(7, SeedPurpose.ACTOR_SAMPLING, 2, 99) == _by_hand(7, 3, 2, 99)
    assert derived_seed(7, SeedPurpose.REPLAY) == _by_hand(7, 5)
    assert 0 <= derived_seed(7, SeedPurpose.REPLAY) < 2**63


def test_purposes_and_keys_give_different_seeds_and_a_first_start_keeps_its_env_seed() -> None:
    seeds = {derived_seed(7, purpose, 1) for purpose in SeedPurpose}
    assert len(seeds) == len(SeedPurpose)
    assert derived_seed(7, SeedPurpose.ACTOR_SAMPLING, 0) != derived_seed(7, SeedPurpose.ACTOR_SAMPLING, 1)
    assert incarnation_seed(1234, 3, 0) == 1234
    assert incarnation_seed(1234, 3, 1) == _by_hand(1234, 4, 3, 1) != incarnation_seed(1234, 3, 2)
