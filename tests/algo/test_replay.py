"""The learner's replay of recent rollouts: what it mixes into each update, and from where."""

from __future__ import annotations

import pytest

from uavrl.algo.batch import RolloutBatch
from uavrl.algo.replay import TrajectoryReplay
from uavrl.nn.models import ModelSpec, build_model
from uavrl.runners.transport import empty_rollout

MODEL = build_model(ModelSpec(obs_dim=3, hidden_size=4))


def _rollouts(n: int) -> list[RolloutBatch]:
    return [empty_rollout(MODEL, length=2, copies=1) for _ in range(n)]


def _ids(batches: list[RolloutBatch], stream: list[RolloutBatch]) -> list[int]:
    """Positions of ``batches`` in ``stream`` (rollouts are told apart by identity)."""
    return [next(i for i, s in enumerate(stream) if s is b) for b in batches]


def test_replay_adds_ratio_rollouts_per_fresh_one_from_those_stored_before() -> None:
    replay = TrajectoryReplay(capacity=100, ratio=1.0, seed=0)
    stream = _rollouts(12)
    first = replay.mix(stream[0:2])
    assert first == stream[0:2]  # nothing stored yet: fresh only, and no debt carried
    second = replay.mix(stream[2:4])
    assert second[:2] == stream[2:4] and sorted(_ids(second[2:], stream)) == [0, 1]
    third = replay.mix(stream[4:6])
    replayed = _ids(third[2:], stream)
    assert len(replayed) == 2 == len(set(replayed))  # without replacement
    assert set(replayed) <= {0, 1, 2, 3}  # never the update's own fresh rollouts
    assert len(replay) == 6
    assert sum(replay.ages.values()) == 4 and set(replay.ages) <= {1, 2}


def test_replay_keeps_only_the_latest_capacity_rollouts() -> None:
    replay = TrajectoryReplay(capacity=3, ratio=3.0, seed=1)
    stream = _rollouts(6)
    for i in range(5):
        replay.mix([stream[i]])
    last = replay.mix([stream[5]])
    assert sorted(_ids(last[1:], stream)) == [2, 3, 4]  # 0 and 1 were pushed out
    # it asks for 3 per update, so it replays all it holds: ages 1 to 3 updates
    assert replay.ages == {1: 5, 2: 4, 3: 3}
    assert len(replay) == 3


def test_a_fractional_ratio_carries_over_between_updates() -> None:
    replay = TrajectoryReplay(capacity=10, ratio=0.5, seed=2)
    stream = _rollouts(8)
    assert len(replay.mix([stream[0]])) == 1  # owes half a rollout, paid by the next update
    sizes = [len(replay.mix([stream[i]])) - 1 for i in range(1, 8)]
    assert sizes == [1, 0, 1, 0, 1, 0, 1]
    assert sum(replay.ages.values()) == 4


def test_the_seed_fixes_what_is_replayed() -> None:
    stream = _rollouts(20)

    def drawn(seed: int) -> list[int]:
        replay = TrajectoryReplay(capacity=20, ratio=1.0, seed=seed)
        order: list[int] = []
        for i in range(0, 20, 2):
            order += _ids(replay.mix(stream[i : i + 2])[2:], stream)
        return order

    assert drawn(7) == drawn(7)
    assert drawn(7) != drawn(8)


@pytest.mark.parametrize(("capacity", "ratio", "field"), [(0, 1.0, "capacity=0"), (4, 0.0, "ratio=0.0")])
def test_replay_refuses_empty_settings(capacity: int, ratio: float, field: str) -> None:
    with pytest.raises(ValueError, match=field):
        TrajectoryReplay(capacity, ratio, seed=0)
