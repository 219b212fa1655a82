"""SharedAdam: Adam whose whole state lives in shared memory.

``exp_avg``, ``exp_avg_sq`` and the step counter of every parameter are allocated up front and
moved to shared memory, so worker processes that receive the optimizer at spawn update one
common state. torch 2.x Adam keeps ``step`` as a tensor and increments it in place, so the
shared counter counts every update made by any process. Updates from several processes should
hold a lock (the A3C runner does) for the counter and moments to stay exact.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


class SharedAdam(torch.optim.Adam):
    """``torch.optim.Adam`` (single-tensor path) with eagerly created, shared state."""

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, foreach=False)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"] = torch.zeros((), dtype=torch.float32)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                for tensor in state.values():
                    tensor.share_memory_()

    @property
    def steps(self) -> int:
        """Updates applied so far (the shared counter of the first parameter)."""
        first = self.param_groups[0]["params"][0]
        return int(self.state[first]["step"].item())
