"""The actor-critic loss on small known inputs."""

from __future__ import annotations

import pytest
import torch

from uavrl.algo.loss import actor_critic_loss


def test_loss_terms_by_hand() -> None:
    log_probs = torch.tensor([[-1.0, -2.0]], requires_grad=True)
    entropy = torch.tensor([[0.5, 0.7]], requires_grad=True)
    values = torch.tensor([[1.0, 2.0]], requires_grad=True)
    returns = torch.tensor([[3.0, 1.0]])
    advantages = returns - values
    terms = actor_critic_loss(log_probs, entropy, values, returns, advantages, 0.25, 0.05)
    policy = -((2.0 * -1.0) + (-1.0 * -2.0)) / 2
    value = 0.5 * (4.0 + 1.0) / 2
    assert terms.policy.item() == pytest.approx(policy)
    assert terms.value.item() == pytest.approx(value)
    assert terms.entropy.item() == pytest.approx(0.6)
    assert terms.total.item() == pytest.approx(policy + 0.25 * value - 0.05 * 0.6)
    terms.total.backward()
    # Advantages are constants: the value gradient comes from the value term only.
    assert values.grad is not None
    torch.testing.assert_close(values.grad, torch.tensor([[-0.25 * 2.0 / 2, 0.25 * 1.0 / 2]]))


def test_advantage_normalisation_is_scale_free() -> None:
    log_probs = torch.tensor([[-1.0, -2.0, -0.5]])
    zeros = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, 2.0, 6.0]])
    a = actor_critic_loss(log_probs, zeros, zeros, zeros, adv, 0.0, 0.0, normalize_advantages=True)
    b = actor_critic_loss(log_probs, zeros, zeros, zeros, 100 * adv, 0.0, 0.0, normalize_advantages=True)
    assert a.policy.item() == pytest.approx(b.policy.item(), rel=1e-5)


def _rollout(recurrent: bool, seed: int = 0):
    """A real 12-step rollout of 6 paper-preset copies (episodes of 5 steps: boundaries inside)."""
    from uavrl.envs.vector import make_vec_env
    from uavrl.nn.heads import describe_action_space
    from uavrl.nn.models import ModelSpec, build_model
    from uavrl.runners.rollout import RolloutCollector

    torch.manual_seed(seed)
    env = make_vec_env("uavrl/Offload-v0", 6, {"preset": "paper", "episode_length": 5})
    spec = ModelSpec(
        obs_dim=env.obs_dim,
        action=describe_action_space(env.action_space),
        hidden_size=16,
        recurrent=recurrent,
    )
    model = build_model(spec)
    collector = RolloutCollector(env, model, seed=seed)
    collector.collect(model, 3)  # start mid-episode, with a carried hidden state
    batch, _ = collector.collect(model, 12)
    return model, batch


@pytest.mark.parametrize("recurrent", [True, False])
def test_vtrace_loss_of_the_acting_weights_is_the_n_step_loss(recurrent: bool) -> None:
    from uavrl.algo.loss import rollout_loss, vtrace_loss

    model, batch = _rollout(recurrent)
    assert batch.terminated.sum() > 0  # episode ends inside the rollout
    on_policy = vtrace_loss(model, batch, 0.95, 1.0, 1.0, 0.5, 0.01)
    n_step = rollout_loss(model, batch, 0.95, None, 0.5, 0.01)
    for a, b in zip(on_policy, n_step, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    model.zero_grad()
    on_policy.total.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    rollout_loss(model, batch, 0.95, None, 0.5, 0.01).total.backward()
    for g, p in zip(grads, model.parameters(), strict=True):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)


def test_vtrace_loss_corrects_a_stale_behaviour_policy() -> None:
    """Actions drawn by older weights: the ratios pi/mu differ from 1 and the loss is V-trace's,
    not the on-policy one; with the behaviour weights the learner's own it is on-policy again."""
    from uavrl.algo.loss import actor_critic_loss, rollout_loss, vtrace_loss
    from uavrl.algo.returns import vtrace

    model, batch = _rollout(recurrent=False, seed=1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))  # the learner moved on
    params, values, _ = model.rollout(batch.obs, batch.h0, batch.starts)
    log_pi = model.policy.distribution(params).log_prob(batch.actions)
    log_mu = model.policy.distribution(batch.behaviour_params).log_prob(batch.actions)
    assert (log_pi - log_mu).abs().max() > 0.05
    _, bootstrap, _ = model.step(batch.next_obs, torch.zeros(batch.next_obs.shape[0], 0))
    targets = vtrace(
        (log_pi - log_mu).detach(),
        batch.rewards,
        values.detach(),
        bootstrap.detach(),
        batch.terminated,
        batch.truncated,
        batch.final_values,
        0.95,
        1.0,
        1.0,
    )
    expected = actor_critic_loss(
        log_pi,
        model.policy.distribution(params).entropy(),
        values,
        targets.vs,
        targets.pg_advantages,
        0.5,
        0.01,
    )
    loss = vtrace_loss(model, batch, 0.95, 1.0, 1.0, 0.5, 0.01)
    torch.testing.assert_close(loss.total, expected.total)
    assert not torch.isclose(loss.total, rollout_loss(model, batch, 0.95, None, 0.5, 0.01).total)


@pytest.mark.parametrize("targets", ["gae", "vtrace"])
def test_the_hidden_prediction_adds_its_weighted_squared_error_to_the_loss(targets: str) -> None:
    """A model with a hidden-state head: the loss is the actor-critic loss of the same weights
    plus ``hidden_coef * 0.5 * mean((prediction - hidden columns)^2)``, by hand."""
    from uavrl.algo.loss import rollout_loss, vtrace_loss
    from uavrl.nn.models import ModelSpec, build_model

    _, batch = _rollout(recurrent=True, seed=3)
    d = batch.obs.shape[-1]
    # the last 4 of the observation's columns play the hidden state the critic reads
    spec = ModelSpec(obs_dim=d, hidden_size=16, recurrent=True, critic_state_dim=4, hidden_target_dim=4)
    with_head = build_model(spec)
    plain = build_model(ModelSpec(obs_dim=d, hidden_size=16, recurrent=True, critic_state_dim=4))
    plain.load_state_dict(
        {k: v for k, v in with_head.state_dict().items() if not k.startswith("hidden_head.")}
    )

    def loss(m, coef: float):
        if targets == "gae":
            return rollout_loss(m, batch, 0.95, 0.9, 0.5, 0.01, hidden_coef=coef)
        return vtrace_loss(m, batch, 0.95, 1.0, 1.0, 0.5, 0.01, hidden_coef=coef)

    base, total = loss(plain, 0.3), loss(with_head, 0.3)
    assert base.hidden is None and total.hidden is not None
    prediction = with_head.rollout_outputs(batch.obs, batch.h0, batch.starts).hidden_prediction
    by_hand = 0.5 * ((prediction - batch.obs[..., d - 4 :]) ** 2).mean()
    torch.testing.assert_close(total.hidden, by_hand)
    torch.testing.assert_close(total.total, base.total + 0.3 * by_hand)
    for a, b in zip(base[1:4], total[1:4], strict=True):
        torch.testing.assert_close(a, b)
