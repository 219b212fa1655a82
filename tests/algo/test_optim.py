"""SharedAdam: shared state, exact under a lock across processes, a counter that counts."""

from __future__ import annotations

import multiprocessing as mp
from typing import Any

import torch

from uavrl.algo.optim import SharedAdam
from uavrl.nn.models import ModelSpec, build_model
from uavrl.runners.learner import transfer_gradients

UPDATES_PER_PROCESS = 15


def _gradient(worker: int, k: int, like: torch.Tensor) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 * worker + k)
    return torch.randn(like.shape, generator=g)


def _apply(worker: int, params: list[torch.nn.Parameter], optimizer: SharedAdam, lock: Any, log: Any) -> None:
    torch.set_num_threads(1)
    for k in range(UPDATES_PER_PROCESS):
        with lock:
            for i, p in enumerate(params):
                p.grad = _gradient(worker, 10 * k + i, p)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            log[int(log[0]) + 1] = 100 * worker + k
            log[0] += 1


def _params() -> list[torch.nn.Parameter]:
    torch.manual_seed(0)
    return [torch.nn.Parameter(torch.randn(4, 3)), torch.nn.Parameter(torch.randn(5))]


def test_two_processes_under_a_lock_equal_one_process_in_the_same_order() -> None:
    ctx = mp.get_context("spawn")
    params = _params()
    for p in params:
        p.share_memory_()
    optimizer = SharedAdam(params, lr=1e-2)
    lock = ctx.Lock()
    log = ctx.Array("q", 1 + 2 * UPDATES_PER_PROCESS, lock=False)
    procs = [ctx.Process(target=_apply, args=(w, params, optimizer, lock, log)) for w in (1, 2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    assert all(p.exitcode == 0 for p in procs)
    assert optimizer.steps == 2 * UPDATES_PER_PROCESS
    order = list(log[1:])
    assert sorted(order) == sorted(100 * w + k for w in (1, 2) for k in range(UPDATES_PER_PROCESS))

    reference = _params()
    adam = torch.optim.Adam(reference, lr=1e-2, foreach=False)
    for entry in order:
        worker, k = divmod(entry, 100)
        for i, p in enumerate(reference):
            p.grad = _gradient(worker, 10 * k + i, p)
        adam.step()
        adam.zero_grad(set_to_none=True)
    for shared, ref in zip(params, reference, strict=True):
        torch.testing.assert_close(shared.detach(), ref.detach(), rtol=0, atol=0)
        torch.testing.assert_close(
            optimizer.state[shared]["exp_avg"], adam.state[ref]["exp_avg"], rtol=0, atol=0
        )


def test_state_lives_in_shared_memory() -> None:
    params = _params()
    optimizer = SharedAdam(params)
    for p in params:
        state = optimizer.state[p]
        assert all(state[k].is_shared() for k in ("step", "exp_avg", "exp_avg_sq"))


def test_gradients_do_not_accumulate_across_updates() -> None:
    """The torch >= 2.0 trap: zero_grad() sets .grad to None, so a learner that kept a stale
    reference (or summed into it) would step with old gradients. Two updates through
    transfer_gradients must equal Adam applied to g1 then g2 alone."""
    torch.manual_seed(3)
    spec = ModelSpec(obs_dim=4, hidden_size=8)
    local, learner = build_model(spec), build_model(spec)
    learner.load_state_dict(local.state_dict())
    reference = build_model(spec)
    reference.load_state_dict(local.state_dict())
    optimizer = SharedAdam(learner.parameters(), lr=1e-2)
    ref_adam = torch.optim.Adam(reference.parameters(), lr=1e-2, foreach=False)
    for k in range(2):
        obs = torch.randn(3, 4) * (k + 1)
        local.zero_grad(set_to_none=True)
        _, value, _ = local.step(obs, local.initial_state(3))
        value.pow(2).sum().backward()
        grads = [p.grad.clone() if p.grad is not None else None for p in local.parameters()]
        transfer_gradients(local, learner)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        assert all(p.grad is None for p in learner.parameters())
        for p, g in zip(reference.parameters(), grads, strict=True):
            p.grad = g
        ref_adam.step()
        ref_adam.zero_grad(set_to_none=True)
    for a, b in zip(learner.parameters(), reference.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert optimizer.steps == 2


def test_weight_decay_and_parameters_without_gradient_match_torch_adam_to_the_bit() -> None:
    """The L2 term as torch's Adam adds it; a parameter with no gradient is left alone and its
    step counter (hence its bias correction) stays behind, as in torch."""
    params, reference = _params(), _params()
    optimizer = SharedAdam(params, lr=1e-2, weight_decay=0.1)
    adam = torch.optim.Adam(reference, lr=1e-2, weight_decay=0.1, foreach=False)
    for k in range(6):
        for i, (p, ref) in enumerate(zip(params, reference, strict=True)):
            skip = i == 1 and k % 3 == 0  # the second parameter misses every third update
            p.grad = None if skip else _gradient(0, 10 * k + i, p)
            ref.grad = None if skip else _gradient(0, 10 * k + i, ref)
        optimizer.step()
        adam.step()
    for p, ref in zip(params, reference, strict=True):
        torch.testing.assert_close(p.detach(), ref.detach(), rtol=0, atol=0)
        assert optimizer.state[p]["step"].item() == adam.state[ref]["step"].item()
    assert optimizer.state[params[1]]["step"].item() == 4
