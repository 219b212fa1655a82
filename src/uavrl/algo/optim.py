"""SharedAdam: Adam whose whole state lives in shared memory.

``exp_avg``, ``exp_avg_sq`` and the step counter of every parameter are allocated up front and
moved to shared memory, so worker processes that receive the optimizer at spawn update one
common state. The step counter is a tensor incremented in place, so the shared counter counts
every update made by any process. Updates from several processes should hold a lock (the A3C
runner does) for the counter and moments to stay exact.

It computes exactly what ``torch.optim.Adam(foreach=False)`` computes (tested to the bit), but
it is not a ``torch.optim.Optimizer``: in torch 2.x every Optimizer imports the compiler stack
(``torch._dynamo``) on first use, 1.5-2 s of start-up in each process that touches one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch


class SharedAdam:
    """Adam (Kingma and Ba, 2015, with torch's placement of ``eps``) on shared state.

    ``param_groups[0]`` holds ``params``, ``lr``, ``betas``, ``eps`` and ``weight_decay``
    (L2 added to the gradient, as torch's Adam); a learning-rate schedule sets ``lr`` there.
    ``state[p]`` holds ``step``, ``exp_avg`` and ``exp_avg_sq`` of parameter ``p``.
    """

    def __init__(
        self,
        params: Iterable[torch.nn.Parameter],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        group: dict[str, Any] = {
            "params": list(params),
            "lr": lr,
            "betas": betas,
            "eps": eps,
            "weight_decay": weight_decay,
        }
        self.param_groups = [group]
        self.state: dict[torch.nn.Parameter, dict[str, torch.Tensor]] = {}
        for p in group["params"]:
            self.state[p] = {
                "step": torch.zeros((), dtype=torch.float32),
                "exp_avg": torch.zeros_like(p, memory_format=torch.preserve_format),
                "exp_avg_sq": torch.zeros_like(p, memory_format=torch.preserve_format),
            }
            for tensor in self.state[p].values():
                tensor.share_memory_()

    @torch.no_grad()
    def step(self) -> None:
        """One Adam update of every parameter that has a gradient."""
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad if weight_decay == 0 else p.grad.add(p, alpha=weight_decay)
                state = self.state[p]
                state["step"] += 1
                state["exp_avg"].lerp_(grad, 1 - beta1)
                state["exp_avg_sq"].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = state["step"].item()
                step_size = lr / (1 - beta1**step)
                denom = (state["exp_avg_sq"].sqrt() / (1 - beta2**step) ** 0.5).add_(eps)
                p.addcdiv_(state["exp_avg"], denom, value=-step_size)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Drop the gradients (``set_to_none``, as torch >= 2.0 does) or zero them."""
        for group in self.param_groups:
            for p in group["params"]:
                if set_to_none:
                    p.grad = None
                elif p.grad is not None:
                    p.grad.zero_()

    @property
    def steps(self) -> int:
        """Updates applied so far (the shared counter of the first parameter)."""
        first = self.param_groups[0]["params"][0]
        return int(self.state[first]["step"].item())
