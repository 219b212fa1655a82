"""Models: rollout() reproduces step-by-step acting, done masks reset the state, switches work."""

from __future__ import annotations

import pytest
import torch

from uavrl.nn.models import ModelSpec, ModelTeam, build_model, reset_hidden


@pytest.mark.parametrize("recurrent", [True, False])
@pytest.mark.parametrize("layer_norm", [True, False])
def test_rollout_equals_step_by_step(recurrent: bool, layer_norm: bool) -> None:
    torch.manual_seed(0)
    model = build_model(ModelSpec(obs_dim=7, hidden_size=16, recurrent=recurrent, layer_norm=layer_norm))
    t, b = 9, 4
    obs = torch.randn(t, b, 7)
    starts = torch.zeros(t, b)
    starts[3, 1] = 1.0  # a done in the middle of copy 1
    starts[6, :2] = 1.0
    h0 = torch.randn(b, model.state_size)
    h = h0
    step_params, step_values, step_states = [], [], []
    for i in range(t):
        params, value, h = model.step(obs[i], reset_hidden(h, starts[i]))
        step_params.append(params)
        step_values.append(value)
        step_states.append(h)
    params, values, h_last = model.rollout(obs, h0, starts)
    torch.testing.assert_close(params, torch.stack(step_params), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(values, torch.stack(step_values), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(h_last, step_states[-1], rtol=1e-6, atol=1e-6)


def test_done_makes_the_past_irrelevant() -> None:
    torch.manual_seed(1)
    model = build_model(ModelSpec(obs_dim=5, hidden_size=8))
    obs = torch.randn(6, 2, 5)
    obs[:3, 1] = torch.randn(3, 5)  # copy 1 has a different history before its reset
    obs[3:, 1] = obs[3:, 0]
    starts = torch.zeros(6, 2)
    starts[3] = 1.0
    params, _, _ = model.rollout(obs, torch.zeros(2, 8), starts)
    torch.testing.assert_close(params[3:, 0], params[3:, 1])
    assert not torch.allclose(params[:3, 0], params[:3, 1])


def test_switches_change_the_parameters() -> None:
    names = {
        (rec, ln): {
            n for n, _ in build_model(ModelSpec(obs_dim=3, recurrent=rec, layer_norm=ln)).named_parameters()
        }
        for rec in (True, False)
        for ln in (True, False)
    }
    assert any("gru" in n for n in names[(True, True)])
    assert not any("gru" in n for n in names[(False, True)])
    assert any("norm" in n or "encoder.1" in n for n in names[(True, True)])
    assert len(names[(True, False)]) < len(names[(True, True)])
    assert build_model(ModelSpec(obs_dim=3, recurrent=False)).state_size == 0


@pytest.mark.parametrize("recurrent", [True, False])
def test_model_team_acts_with_model_i_on_block_i(recurrent: bool) -> None:
    torch.manual_seed(0)
    spec = ModelSpec(obs_dim=7, hidden_size=16, recurrent=recurrent)
    models = [build_model(spec) for _ in range(3)]
    team = ModelTeam(models)
    obs = torch.randn(6, 7)
    h = torch.randn(6, models[0].state_size)
    params, values, h_next = team.step(obs, h)
    for i, model in enumerate(models):
        rows = slice(2 * i, 2 * i + 2)
        p, v, hn = model.step(obs[rows], h[rows])
        torch.testing.assert_close(params[rows], p, rtol=0, atol=0)
        torch.testing.assert_close(values[rows], v, rtol=0, atol=0)
        torch.testing.assert_close(h_next[rows], hn, rtol=0, atol=0)
    assert team.initial_state(6).shape == (6, models[0].state_size)
    with pytest.raises(ValueError, match="cannot be split among 3 models"):
        team.step(obs[:5], h[:5])
    with pytest.raises(ValueError, match="one spec"):
        ModelTeam([models[0], build_model(ModelSpec(obs_dim=7, hidden_size=8, recurrent=recurrent))])


@pytest.mark.parametrize("recurrent", [True, False])
def test_central_critic_reads_the_state_and_the_policy_does_not(recurrent: bool) -> None:
    """With ``critic_state_dim = G`` the last G columns move the value, never the policy; the
    agent's own columns alone still act (value NaN), as in evaluation and on board."""
    torch.manual_seed(2)
    spec = ModelSpec(obs_dim=10, hidden_size=16, recurrent=recurrent, critic_state_dim=4)
    model = build_model(spec)
    assert spec.actor_obs_dim == 6 and model.encoder[0].in_features == 6
    obs = torch.randn(5, 10)
    other_state = obs.clone()
    other_state[:, 6:] = torch.randn(5, 4)
    h = model.initial_state(5)
    params, value, h1 = model.step(obs, h)
    params2, value2, h2 = model.step(other_state, h)
    torch.testing.assert_close(params, params2)
    torch.testing.assert_close(h1, h2)
    assert not torch.allclose(value, value2)
    own_params, own_value, _ = model.step(obs[:, :6], h)
    torch.testing.assert_close(own_params, params)
    assert torch.isnan(own_value).all()
    # the rollout path gives the same values as step-by-step acting
    seq = torch.randn(3, 5, 10)
    _, values, _ = model.rollout(seq, h, torch.zeros(3, 5))
    h_t = h
    for t in range(3):
        _, v, h_t = model.step(seq[t], h_t)
        torch.testing.assert_close(values[t], v, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("recurrent", [True, False])
def test_a_separate_critic_keeps_value_gradients_out_of_the_policy(recurrent: bool) -> None:
    """``separate_critic``: the value loss moves only the critic's network and the value head;
    the policy loss never reaches them; values agree between step and rollout."""
    torch.manual_seed(5)
    model = build_model(ModelSpec(obs_dim=6, hidden_size=16, recurrent=recurrent, separate_critic=True))
    assert model.critic is not None and model.critic[0].in_features == model.encoder[0].in_features == 6
    critic_names = {n for n, _ in model.named_parameters() if n.startswith(("critic.", "value."))}
    seq, h0 = torch.randn(4, 3, 6), model.initial_state(3)
    params, values, _ = model.rollout(seq, h0, torch.zeros(4, 3))
    assert torch.isfinite(values).all()
    for loss, moved in ((values.square().sum(), critic_names), (params.square().sum(), None)):
        model.zero_grad()
        loss.backward(retain_graph=True)
        with_grad = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
        if moved is None:
            assert with_grad and not with_grad & critic_names
        else:
            assert with_grad == moved
    h_t = h0
    for t in range(4):
        _, v, h_t = model.step(seq[t], h_t)
        torch.testing.assert_close(values[t], v, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("recurrent", [True, False])
def test_the_hidden_state_head_trains_the_policy_core_and_leaves_acting_unchanged(recurrent: bool) -> None:
    """``hidden_target_dim = K``: the head predicts the K columns after the agent's own from the
    policy's core features; its loss moves the encoder, the core and the head, never the policy,
    value or critic; acting and the rollout's params and values are those of the same weights
    without the head."""
    torch.manual_seed(7)
    spec = ModelSpec(obs_dim=10, hidden_size=16, recurrent=recurrent, critic_state_dim=4, hidden_target_dim=3)
    model = build_model(spec)
    seq, h0, starts = torch.randn(5, 2, 10), model.initial_state(2), torch.zeros(5, 2)
    starts[2, 1] = 1.0
    out = model.rollout_outputs(seq, h0, starts)
    assert out.hidden_prediction is not None and out.hidden_prediction.shape == (5, 2, 3)
    torch.testing.assert_close(model.hidden_targets(seq), seq[..., 6:9])
    plain = build_model(ModelSpec(obs_dim=10, hidden_size=16, recurrent=recurrent, critic_state_dim=4))
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("hidden_head.")})
    for a, b in zip(plain.rollout(seq, h0, starts), out[:3], strict=True):
        torch.testing.assert_close(a, b)
    model.zero_grad()
    (out.hidden_prediction - model.hidden_targets(seq)).square().mean().backward()
    moved = {
        n.split(".")[0] for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0
    }
    assert moved == {"encoder", "gru" if recurrent else "feedforward", "hidden_head"} | (
        {"core_norm"} if spec.layer_norm else set()
    )
    with pytest.raises(ValueError, match="hidden_target_dim 5 exceeds the 4 columns"):
        build_model(ModelSpec(obs_dim=10, critic_state_dim=4, hidden_target_dim=5))


def test_a_belief_network_learns_from_the_prediction_alone_and_the_policy_reads_its_prediction() -> None:
    """``belief``: a second GRU predicts the K hidden columns from the agent's own; the state is
    both GRUs' (B, 2H); rollout() reproduces step-by-step acting (resets included); the
    prediction loss moves only the belief network and the policy-gradient side never reaches
    it (the policy reads the prediction without gradient); a different prediction changes the
    policy's output."""
    torch.manual_seed(11)
    spec = ModelSpec(obs_dim=10, hidden_size=16, critic_state_dim=4, hidden_target_dim=3, belief=True)
    model = build_model(spec)
    assert model.state_size == 32 and model.initial_state(2).shape == (2, 32)
    t, b = 7, 3
    seq, h0, starts = torch.randn(t, b, 10), torch.randn(b, 32), torch.zeros(t, b)
    starts[2, 1] = starts[5, :] = 1.0
    h, step_params, step_values = h0, [], []
    for i in range(t):
        params, value, h = model.step(seq[i], reset_hidden(h, starts[i]))
        step_params.append(params)
        step_values.append(value)
    out = model.rollout_outputs(seq, h0, starts)
    torch.testing.assert_close(out.params, torch.stack(step_params), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.values, torch.stack(step_values), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(out.h_last, h, rtol=1e-6, atol=1e-6)
    assert out.hidden_prediction is not None and out.hidden_prediction.shape == (t, b, 3)

    def moved_by(loss: torch.Tensor) -> set[str]:
        model.zero_grad()
        loss.backward()
        return {
            n.split(".")[0]
            for n, p in model.named_parameters()
            if p.grad is not None and p.grad.abs().sum() > 0
        }

    out = model.rollout_outputs(seq, h0, starts)
    assert moved_by((out.hidden_prediction - model.hidden_targets(seq)).square().mean()) == {
        "belief_encoder",
        "belief_gru",
        "belief_norm",
        "hidden_head",
    }
    out = model.rollout_outputs(seq, h0, starts)
    assert not moved_by(out.params.square().sum() + out.values.sum()) & {
        "belief_encoder",
        "belief_gru",
        "belief_norm",
        "hidden_head",
    }
    with torch.no_grad():
        model.hidden_head.bias += 1.0  # type: ignore[union-attr]
    assert not torch.allclose(model.rollout_outputs(seq, h0, starts).params, out.params)
    with pytest.raises(ValueError, match="a belief network needs a hidden-state target"):
        build_model(ModelSpec(obs_dim=10, critic_state_dim=4, belief=True))
    with pytest.raises(ValueError, match="a belief network needs a hidden-state target"):
        build_model(
            ModelSpec(obs_dim=10, critic_state_dim=4, hidden_target_dim=3, recurrent=False, belief=True)
        )


@pytest.mark.parametrize("critic_state_dim", [0, 4])
@pytest.mark.parametrize("recurrent", [True, False])
def test_act_is_step_without_the_value(recurrent: bool, critic_state_dim: int) -> None:
    """Acting (rollout collection, evaluation) skips the value, and the centralised critic with
    it; its parameters and next state are step's, for one model and for a team."""
    torch.manual_seed(4)
    spec = ModelSpec(obs_dim=10, hidden_size=16, recurrent=recurrent, critic_state_dim=critic_state_dim)
    models = [build_model(spec), build_model(spec)]
    obs, h = torch.randn(6, 10), torch.randn(6, models[0].state_size)
    for actor in (models[0], ModelTeam(models)):
        params, _, h_next = actor.step(obs, h)
        act_params, act_h = actor.act(obs, h)
        torch.testing.assert_close(act_params, params, rtol=0, atol=0)
        torch.testing.assert_close(act_h, h_next, rtol=0, atol=0)
