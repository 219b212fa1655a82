"""A replay of recent rollouts for an off-policy learner (IMPALA with replay).

The learner keeps the latest ``capacity`` rollouts it learned from. To the fresh rollouts of
every update it adds ``ratio`` replayed rollouts per fresh one (``ratio = 1``: half of each
batch is replayed), drawn uniformly without replacement from those stored before the update.
V-trace corrects for their age as for any policy lag: every rollout carries the distribution
parameters it was acted with. Fractional replays carry over, so ``ratio = 0.5`` with one fresh
rollout per update replays one rollout every second update.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence

import torch

from uavrl.algo.batch import RolloutBatch


class TrajectoryReplay:
    """The latest ``capacity`` rollouts; :meth:`mix` draws from them with ``seed``'s generator.

    Attributes:
        ages: how many learner updates old every replayed rollout was when it was replayed
            (1: stored by the update before), as a histogram.
    """

    def __init__(self, capacity: int, ratio: float, seed: int) -> None:
        if capacity < 1:
            raise ValueError(f"replay capacity={capacity}: must be at least 1 rollout")
        if not ratio > 0:
            raise ValueError(f"replay ratio={ratio}: must be > 0 replayed rollouts per fresh one")
        self.capacity = capacity
        self.ratio = ratio
        self._stored: deque[tuple[int, RolloutBatch]] = deque(maxlen=capacity)
        self._generator = torch.Generator().manual_seed(seed)
        self._owed = 0.0
        self._updates = 0
        self.ages = Counter[int]()

    def __len__(self) -> int:
        return len(self._stored)

    def mix(self, fresh: Sequence[RolloutBatch]) -> list[RolloutBatch]:
        """The rollouts of one update: ``fresh``, then the replayed ones; stores ``fresh``.

        While fewer rollouts are stored than the update asks for, it replays all of them (the
        shortfall is not carried over: early updates are not followed by a burst of replays).
        """
        self._owed += self.ratio * len(fresh)
        wanted = int(self._owed)
        self._owed -= wanted
        drawn = torch.randperm(len(self._stored), generator=self._generator)[:wanted].tolist()
        replayed = [self._stored[i] for i in drawn]
        self.ages.update(self._updates - stored_at for stored_at, _ in replayed)
        self._stored.extend((self._updates, rollout) for rollout in fresh)
        self._updates += 1
        return [*fresh, *(rollout for _, rollout in replayed)]
