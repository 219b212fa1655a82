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
        """One Adam update of every parameter that has a gradient.

        Each elementwise operation runs once over all parameters (``torch._foreach_*``): on the
        CPU that is the same kernel per tensor as the per-parameter loop, without a Python
        dispatch per tensor (the default model, 18 tensors: 1.6 -> 0.8 ms per step here).
        """
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            lr, eps, weight_decay = group["lr"], group["eps"], group["weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            grads = [p.grad for p in params]
            if weight_decay != 0:
                grads = list(torch._foreach_add(grads, params, alpha=weight_decay))
            states = [self.state[p] for p in params]
            steps = [state["step"] for state in states]
            exp_avgs = [state["exp_avg"] for state in states]
            exp_avg_sqs = [state["exp_avg_sq"] for state in states]
            torch._foreach_add_(steps, 1)
            torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
            torch._foreach_mul_(exp_avg_sqs, beta2)
            torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
            counts = [step.item() for step in steps]
            denoms = torch._foreach_sqrt(exp_avg_sqs)
            torch._foreach_div_(denoms, [(1 - beta2**count) ** 0.5 for count in counts])
            torch._foreach_add_(denoms, eps)
            torch._foreach_addcdiv_(params, exp_avgs, denoms, [-lr / (1 - beta1**count) for count in counts])

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
