"""The learner's device (``runner.learner_device``) and the actors' (``runner.actor_device``):
refusals everywhere, the update and the acting on CUDA where a GPU is present (those tests skip
on machines without one, as CI's)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml

from uavrl.algo.batch import TENSOR_FIELDS
from uavrl.algo.returns import _backward_scan, _backward_scan_in_torch, gae, vtrace
from uavrl.errors import ConfigError
from uavrl.experiments.train import resume, train
from uavrl.nn.models import ModelSpec, build_model, clone_model, stretches
from uavrl.runners.checkpoint import load_models, read_checkpoint, training_tensors
from uavrl.runners.device import DeviceBatches, actor_device, host_copy, learner_device
from uavrl.runners.learner import Learner, learner_optimizer
from uavrl.runners.session import make_pool
from uavrl.runners.worker import make_collector, make_worker_env

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA device")


def _rollouts(config, spec: ModelSpec, n: int = 2):
    """``n`` rollouts of the config's workers, acted by one seeded model (returned too)."""
    torch.manual_seed(0)
    model = build_model(spec)
    batches = []
    for worker_id in range(n):
        env = make_worker_env(config, worker_id, make_pool(config, cross_process=False))
        collector = make_collector(config, model, env, 7, worker_id * config.runner.envs_per_worker)
        batches.append(collector.collect(model, config.algo.rollout_length)[0])
    return model, batches


@pytest.mark.parametrize(
    ("field", "refused_on_ray", "why"),
    [("learner_device", "cuda:1", "Ray gives"), ("actor_device", "cuda", "its rollout actors")],
)
def test_the_devices_apply_to_the_kinds_with_a_central_learner(
    make_config, field: str, refused_on_ray: str, why: str
) -> None:
    impala = make_config(runner={"kind": "impala", field: "cuda:1"})
    assert getattr(impala.runner, field) == "cuda:1"
    assert getattr(make_config(runner={"kind": "a3c_data"}).runner, field) == "cpu"
    a3c = make_config(runner={"kind": "a3c"}).runner
    assert a3c.learns_on == a3c.acts_on == "cpu"
    for kind in ("a3c", "a2c"):
        with pytest.raises(ConfigError, match=rf"runner.{field}='cuda'.*a3c_data and impala.*kind is {kind}"):
            make_config(runner={"kind": kind, field: "cuda"})
    with pytest.raises(ConfigError, match=rf"runner.{field}: one of cpu, cuda or cuda:N.*got 'gpu'"):
        make_config(runner={"kind": "impala", field: "gpu"})
    with pytest.raises(ConfigError, match=rf"ray does not run runner.{field}: {refused_on_ray} \({why}"):
        make_config(runner={"kind": "impala", field: refused_on_ray, "serial": False, "backend": "ray"})
    # hash-neutral at its default: every config hashed before the field existed keeps its hash
    default = make_config(runner={"kind": "impala", field: "cpu"})
    assert default.hash() == make_config(runner={"kind": "impala"}).hash()


@pytest.mark.skipif(CUDA, reason="the refusal of an absent CUDA device")
@pytest.mark.parametrize("field", ["learner_device", "actor_device"])
def test_a_cuda_device_on_a_machine_without_one_is_refused_before_the_run_starts(
    make_config, tmp_path: Path, field: str
) -> None:
    config = make_config(runner={"kind": "impala", field: "cuda"})
    with pytest.raises(ConfigError, match=rf"runner.{field}='cuda': this machine has no CUDA device"):
        train(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    find = {"learner_device": learner_device, "actor_device": actor_device}[field]
    with pytest.raises(ConfigError, match=rf"runner.{field}='cuda:3'"):
        find(make_config(runner={"kind": "a3c_data", field: "cuda:3"}))


def _extend(run: Path, total: int) -> None:
    """Raise a finished run's budget to ``total`` env steps, so that it can be resumed."""
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["runner"]["total_env_steps"] = total
    (run / "config.yaml").write_text(yaml.safe_dump(saved))


def test_resume_moves_the_learner_only_where_it_can(make_config, tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(make_config(runner={"kind": "impala", "total_env_steps": 60}), run)
    _extend(run, 120)
    before = (run / "checkpoints" / "last.safetensors").read_bytes()
    if not CUDA:
        with pytest.raises(ConfigError, match=r"runner.learner_device='cuda': this machine has no CUDA"):
            resume(run, learner_device="cuda")
        assert (run / "checkpoints" / "last.safetensors").read_bytes() == before
    assert resume(run, learner_device="cpu")["env_steps"] == 120
    a3c = tmp_path / "a3c"
    train(make_config(runner={"total_env_steps": 60}), a3c)
    _extend(a3c, 120)
    with pytest.raises(ConfigError, match=r"runner.learner_device='cuda'.*applies to runner.kind a3c_data"):
        resume(a3c, learner_device="cuda")


def test_the_backward_scan_in_torch_equals_the_numpy_one() -> None:
    generator = torch.Generator().manual_seed(1)
    x, carry = torch.randn(7, 5, generator=generator), torch.rand(7, 5, generator=generator)
    init = torch.randn(5, generator=generator)
    torch.testing.assert_close(_backward_scan_in_torch(x, carry, init), _backward_scan(x, carry, init))


def test_on_the_cpu_the_learners_batch_is_the_rollouts_side_by_side(make_config) -> None:
    config = make_config(runner={"kind": "impala"})
    _, rollouts = _rollouts(config, ModelSpec(obs_dim=48, hidden_size=16, recurrent=True))
    rollouts[1].policy_version = 3
    batch = DeviceBatches(torch.device("cpu"))(rollouts)
    k = config.runner.envs_per_worker
    assert batch.obs.shape[:2] == (config.algo.rollout_length, 2 * k) and batch.h0.shape[0] == 2 * k
    for i, rollout in enumerate(rollouts):  # rollout i is copies [i K, (i + 1) K]
        part = batch.columns(i * k, (i + 1) * k)
        for name in TENSOR_FIELDS:
            torch.testing.assert_close(getattr(part, name), getattr(rollout, name))
    assert batch.policy_version == 0  # the oldest of theirs


def _one_update(config, model, rollouts, device: str):
    """Loss terms, gradient norm, finiteness, host copies of the gradients, and the training
    tensors after one update of a copy of ``model`` on ``device``."""
    on_device = clone_model(model).to(device)
    learner = Learner(config, on_device, learner_optimizer(config, on_device))
    batch = learner.on_device(rollouts)
    assert batch.obs.device.type == device
    terms, grad_norm, finite = learner.gradient(on_device, batch, 0)
    grads = [host_copy(p.grad) for p in on_device.parameters()]
    learner.step(on_device, 0)
    return terms, grad_norm, finite, grads, training_tensors([on_device], [learner.optimizer])


@needs_cuda
@pytest.mark.parametrize(
    ("kind", "gae_lambda"),
    [("impala", None), ("a3c_data", None), ("a3c_data", 0.95)],
    ids=["vtrace", "nstep", "gae"],
)
@pytest.mark.parametrize("recurrent", [True, False], ids=["gru", "mlp"])
def test_a_cuda_learner_makes_the_cpu_learners_update(
    make_config, kind: str, gae_lambda: float | None, recurrent: bool
) -> None:
    """Loss terms, gradient and Adam's moments after one update, on the GPU as on the CPU."""
    config = make_config(runner={"kind": kind}, algo={"normalize_advantages": True, "gae_lambda": gae_lambda})
    spec = ModelSpec(obs_dim=48, hidden_size=16, recurrent=recurrent, layer_norm=True)
    model, rollouts = _rollouts(config, spec)
    assert stretches(rollouts[0].starts.cuda()) == list(range(config.algo.rollout_length + 1))
    results = []
    # float32 throughout: cuDNN's default TF32 GRU differs from the CPU's by about 3e-4
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        for device in ("cpu", "cuda"):
            results.append(_one_update(config, model, rollouts, device))
    (cpu_terms, cpu_norm, _, cpu_grads, cpu_state), (terms, norm, finite, grads, state) = results
    assert finite
    for name in ("total", "policy", "value", "entropy"):
        expected = float(getattr(cpu_terms, name))
        assert float(getattr(terms, name)) == pytest.approx(expected, rel=1e-4, abs=1e-6), name
    assert norm == pytest.approx(cpu_norm, rel=1e-4)
    for gpu, cpu in zip(grads, cpu_grads, strict=True):
        torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-6)
    for name, value in cpu_state.items():
        if name.endswith(("exp_avg", "exp_avg_sq", "step")):
            torch.testing.assert_close(state[name], value, rtol=3e-3, atol=1e-8)


@needs_cuda
def test_vtrace_and_gae_on_cuda_equal_the_cpu_ones() -> None:
    generator = torch.Generator().manual_seed(2)
    t_b = (9, 6)
    rewards, values = torch.randn(t_b, generator=generator), torch.randn(t_b, generator=generator)
    log_rhos = 0.3 * torch.randn(t_b, generator=generator)
    terminated = (torch.rand(t_b, generator=generator) < 0.1).float()
    truncated = (torch.rand(t_b, generator=generator) < 0.1).float()
    final_values, last_value = torch.randn(t_b, generator=generator), torch.randn(6, generator=generator)
    args = (rewards, values, last_value, terminated, truncated, final_values)
    on_cuda = [a.cuda() for a in args]
    for cpu, gpu in zip(gae(*args, 0.99, 0.95), gae(*on_cuda, 0.99, 0.95), strict=True):
        assert gpu.is_cuda
        torch.testing.assert_close(gpu.cpu(), cpu)
    cpu_vt = vtrace(log_rhos, rewards, values, last_value, terminated, truncated, final_values, 0.99)
    cuda_vt = vtrace(log_rhos.cuda(), *(a.cuda() for a in (rewards, values, last_value)), *on_cuda[3:], 0.99)
    torch.testing.assert_close(cuda_vt.vs.cpu(), cpu_vt.vs)
    torch.testing.assert_close(cuda_vt.pg_advantages.cpu(), cpu_vt.pg_advantages)


@needs_cuda
@pytest.mark.parametrize("kind", ["impala", "a3c_data"])
def test_a_cuda_update_reads_nothing_back_before_the_step_decision(make_config, kind: str) -> None:
    """Staging, targets, loss, backward, clipping and Adam's step queue on the device without
    one synchronising call (torch's sync debug mode raises on any)."""
    config = make_config(runner={"kind": kind}, algo={"normalize_advantages": True})
    spec = ModelSpec(obs_dim=48, hidden_size=16, recurrent=True, layer_norm=True)
    model, rollouts = _rollouts(config, spec)
    model = model.cuda()
    learner = Learner(config, model, learner_optimizer(config, model))
    learner.learn_rollouts(rollouts, 0)  # warm-up: pinned buffers, cuDNN plans
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        batch = learner.on_device(rollouts)
        terms = learner.loss(model, batch, entropy_coef=0.01)
        terms.total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.algo.max_grad_norm)
        learner.optimizer.step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert all(p.grad is not None and p.grad.is_cuda for p in model.parameters())


@needs_cuda
@pytest.mark.parametrize("acting", ["cpu", "cuda"], ids=["cpu_actors", "cuda_actors"])
@pytest.mark.parametrize("backend", ["serial", "process"])
@pytest.mark.parametrize("kind", ["impala", "a3c_data"])
def test_a_cuda_learner_trains_checkpoints_to_host_tensors_and_moves_on_resume(
    make_config, tmp_path: Path, kind: str, backend: str, acting: str
) -> None:
    run = tmp_path / "run"
    runner = {"kind": kind, "serial": backend == "serial", "learner_device": "cuda", "actor_device": acting}
    config = make_config(runner={**runner, "total_env_steps": 300})
    summary = train(config, run)
    assert summary["env_steps"] >= 300 and summary["status"] == "finished"
    meta, tensors = read_checkpoint(run / "checkpoints", "last")
    assert all(t.device.type == "cpu" for t in tensors.values())
    assert meta["config"]["runner"]["learner_device"] == "cuda"
    models, _ = load_models(run / "checkpoints", "last")
    assert next(models[0].parameters()).device.type == "cpu"
    # go on with the learner (and the actors) on the CPU from the CUDA run's checkpoint, then back
    for device, total in (("cpu", 600), ("cuda", 900)):
        _extend(run, total)
        summary = resume(run, learner_device=device, actor_device=device if acting == "cuda" else None)
        assert summary["env_steps"] >= total
        meta, _ = read_checkpoint(run / "checkpoints", "last")
        assert meta["counters"]["resumes"] >= 1


@needs_cuda
@pytest.mark.parametrize("recurrent", [True, False], ids=["gru", "mlp"])
def test_acting_on_cuda_collects_the_cpu_collectors_rollout(make_config, recurrent: bool) -> None:
    """Same seeds, same weights: the rollout acted on the GPU is the CPU's (the action is
    sampled on the host from the parameters brought back), in host memory, hidden state
    carried across rollouts on the device."""
    config = make_config(runner={"kind": "impala", "total_env_steps": 10_000})
    spec = ModelSpec(obs_dim=48, hidden_size=16, recurrent=recurrent, layer_norm=True)
    torch.manual_seed(0)
    model = build_model(spec)
    rollouts = {}
    with torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        for device in ("cpu", "cuda"):
            acting = clone_model(model).to(device)
            env = make_worker_env(config, 0, make_pool(config, cross_process=False))
            collector = make_collector(config, acting, env, 7, 0)
            torch.manual_seed(1)  # the host's generator samples the actions on both
            rollouts[device] = [collector.collect(acting, config.algo.rollout_length)[0] for _ in range(3)]
            assert collector.h.device.type == device
    for cpu, gpu in zip(rollouts["cpu"], rollouts["cuda"], strict=True):
        for name in TENSOR_FIELDS:
            value = getattr(gpu, name)
            assert value.device.type == "cpu", name
            torch.testing.assert_close(value, getattr(cpu, name), rtol=1e-4, atol=1e-5, msg=name)
