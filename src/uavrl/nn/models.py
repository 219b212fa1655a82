"""Actor-critic models: a feed-forward one and a recurrent one (GRU, optional LayerNorm).

Both share one interface, so runners never ask which they have:

- ``initial_state(B)`` -> h (B, H) zeros (H = ``state_size``: 0 for the feed-forward model, the
  GRU's width, twice it with a belief network);
- ``step(obs (B, D), h (B, H))`` -> (dist params (B, P), value (B,), h' (B, H)), for acting;
- ``rollout(obs_seq (T, B, D), h0 (B, H), starts (T, B))`` -> (params (T, B, P), values (T, B),
  h_T), for re-evaluating a rollout with gradients. ``starts[t] = 1`` where ``obs_seq[t]``
  begins a new episode: the hidden state is zeroed before that step, exactly as an actor does
  with :func:`reset_hidden` before calling ``step``.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import torch
from torch import nn

from uavrl.nn.heads import ActionHead, Squash, make_head


@dataclass(frozen=True)
class ModelSpec:
    """Everything needed to rebuild a model (stored in every checkpoint).

    Attributes:
        obs_dim: observation size D.
        action: action space description (``heads.describe_action_space``).
        hidden_size: width H of the hidden layers and of the GRU state.
        recurrent: GRU core (True) or a second feed-forward layer (False).
        layer_norm: LayerNorm after the input layer and after the core.
        squash: how Gaussian actions are kept inside their bounds.
        critic_state_dim: G > 0 gives a centralised critic: the last G of the D observation
            columns are the world's state, read by a separate value network; the policy reads
            the first D - G (the agent's own observation).
        separate_critic: the value comes from its own feed-forward network over the D columns
            even when G = 0, so value-loss gradients never reach the policy's layers.
        hidden_target_dim: K > 0 adds a head that predicts, from the policy's core features, the
            K columns right after the agent's own (the hidden state a privileged critic reads):
            an auxiliary training target that makes the features (and a GRU's memory) carry
            what the agent cannot observe. The policy never reads it, unless ``belief``.
        belief: with K > 0 and a GRU core, the prediction comes from a belief network of its
            own (encoder -> GRU -> head over the agent's columns, trained by the prediction loss
            alone), and the policy reads the prediction (without gradient) beside the agent's
            columns: memory is learnt by supervision, not through the policy gradient. The
            state is then the policy's and the belief's GRU states side by side (B, 2H).
    """

    obs_dim: int
    action: dict[str, Any] = field(default_factory=lambda: {"kind": "discrete", "n": 3})
    hidden_size: int = 128
    recurrent: bool = True
    layer_norm: bool = True
    squash: Squash = "clip"
    critic_state_dim: int = 0
    separate_critic: bool = False
    hidden_target_dim: int = 0
    belief: bool = False

    @property
    def actor_obs_dim(self) -> int:
        """Observation columns the policy reads."""
        return self.obs_dim - self.critic_state_dim

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class RolloutOutputs(NamedTuple):
    """What :meth:`ActorCritic.rollout_outputs` returns for T steps of B copies."""

    params: torch.Tensor  # (T, B, P) action distribution parameters
    values: torch.Tensor  # (T, B)
    h_last: torch.Tensor  # (B, H) the hidden state after the last step
    hidden_prediction: torch.Tensor | None  # (T, B, K) predicted hidden state, None without K


def reset_hidden(h: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
    """Zero the hidden state (B, H) of the copies whose ``starts`` (B,) is 1."""
    return h * (1.0 - starts).unsqueeze(-1)


def stretches(starts: torch.Tensor) -> list[int]:
    """Bounds ``[0, ..., T]`` of the stretches of a (T, B) rollout in which no copy starts an
    episode after the first step: the fused GRU runs over each, the hidden state reset (per
    copy) only where one begins. On an accelerator every step is a stretch: finding them would
    stall the device on a trip to the host."""
    length = starts.shape[0]
    if starts.device.type != "cpu":
        return list(range(length + 1))
    return [0, *(torch.nonzero(starts[1:].any(dim=1)).flatten() + 1).tolist(), length]


def _norm(enabled: bool, size: int) -> nn.Module:
    return nn.LayerNorm(size) if enabled else nn.Identity()


def _orthogonal(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


def _gru_step(gru: nn.GRU, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """One step of a one-layer GRU: x (B, H), h (B, H) -> h' (B, H), through the cell kernel
    (a length-1 sequence through nn.GRU costs twice as much)."""
    w_ih, w_hh, b_ih, b_hh = gru.all_weights[0]
    return torch.gru_cell(x, h, w_ih, w_hh, b_ih, b_hh)


def _gru_sequence(
    gru: nn.GRU, x: torch.Tensor, h0: torch.Tensor, starts: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """x (T, B, H) from h0 (B, H), the state zeroed where ``starts`` (T, B) begins an episode:
    the outputs (T, B, H) and the last state (B, H), the fused GRU run over each stretch."""
    h, chunks = h0, []
    for a, b in itertools.pairwise(stretches(starts)):
        out, h_n = gru(x[a:b], reset_hidden(h, starts[a]).unsqueeze(0))
        chunks.append(out)
        h = h_n[0]
    return torch.cat(chunks), h


class ActorCritic(nn.Module):
    """Linear -> (LayerNorm) -> ReLU -> core -> (LayerNorm) -> policy head and value head.

    The core is ``Linear -> ReLU`` (feed-forward) or a one-layer GRU (recurrent). With a
    centralised critic (``spec.critic_state_dim > 0``) or ``spec.separate_critic`` the value
    comes from its own network, ``Linear -> (LayerNorm) -> ReLU -> Linear -> ReLU -> value
    head``, over all D columns, and the encoder reads the agent's own ``actor_obs_dim`` columns.
    Given only those columns (acting in evaluation or on board) a centralised critic's model
    returns NaN values. With ``spec.belief`` a second GRU (its own encoder) predicts the hidden
    state and the encoder reads the agent's columns and that prediction.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.spec = spec
        hidden = spec.hidden_size
        relu_gain = nn.init.calculate_gain("relu")
        if spec.belief and not (spec.hidden_target_dim and spec.recurrent):
            raise ValueError(
                "a belief network needs a hidden-state target (hidden_target_dim > 0) and a GRU core"
            )
        belief_dim = spec.hidden_target_dim if spec.belief else 0
        self.encoder = nn.Sequential(
            _orthogonal(nn.Linear(spec.actor_obs_dim + belief_dim, hidden), relu_gain),
            _norm(spec.layer_norm, hidden),
            nn.ReLU(),
        )
        self.belief_encoder: nn.Module | None = None
        self.belief_gru: nn.GRU | None = None
        if spec.belief:
            self.belief_encoder = nn.Sequential(
                _orthogonal(nn.Linear(spec.actor_obs_dim, hidden), relu_gain),
                _norm(spec.layer_norm, hidden),
                nn.ReLU(),
            )
            self.belief_gru = nn.GRU(hidden, hidden)
            self.belief_norm = _norm(spec.layer_norm, hidden)
        self.critic: nn.Module | None = None
        if spec.critic_state_dim or spec.separate_critic:
            self.critic = nn.Sequential(
                _orthogonal(nn.Linear(spec.obs_dim, hidden), relu_gain),
                _norm(spec.layer_norm, hidden),
                nn.ReLU(),
                _orthogonal(nn.Linear(hidden, hidden), relu_gain),
                nn.ReLU(),
            )
        self.gru: nn.GRU | None = nn.GRU(hidden, hidden) if spec.recurrent else None
        self.feedforward: nn.Module = (
            nn.Identity()
            if spec.recurrent
            else nn.Sequential(_orthogonal(nn.Linear(hidden, hidden), relu_gain), nn.ReLU())
        )
        self.core_norm = _norm(spec.layer_norm, hidden)
        self.policy: ActionHead = make_head(hidden, spec.action, spec.squash)
        self.value = _orthogonal(nn.Linear(hidden, 1), 1.0)
        self.hidden_head: nn.Linear | None = None
        if spec.hidden_target_dim:
            if spec.hidden_target_dim > spec.critic_state_dim:
                raise ValueError(
                    f"hidden_target_dim {spec.hidden_target_dim} exceeds the {spec.critic_state_dim} "
                    "columns only the critic reads"
                )
            self.hidden_head = _orthogonal(nn.Linear(hidden, spec.hidden_target_dim), 1.0)

    @property
    def state_size(self) -> int:
        if self.gru is None:
            return 0
        return 2 * self.spec.hidden_size if self.belief_gru is not None else self.spec.hidden_size

    def initial_state(self, batch: int) -> torch.Tensor:
        return torch.zeros(batch, self.state_size)

    def _value(self, features: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """V from the core's features, or from the centralised critic over all D columns (NaN
        when the observation holds only the agent's own columns)."""
        if self.critic is None:
            return self.value(features).squeeze(-1)
        if obs.shape[-1] == self.spec.obs_dim:
            return self.value(self.critic(obs)).squeeze(-1)
        return torch.full(obs.shape[:-1], float("nan"), device=obs.device)

    def _actor_input(self, obs: torch.Tensor) -> torch.Tensor:
        return obs if self.critic is None else obs[..., : self.spec.actor_obs_dim]

    def _belief(self, own: torch.Tensor, h_belief: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of the belief network: own (B, D') -> prediction (B, K), h' (B, H)."""
        assert (
            self.belief_encoder is not None and self.belief_gru is not None and self.hidden_head is not None
        )
        h_belief = _gru_step(self.belief_gru, self.belief_encoder(own), h_belief)
        return self.hidden_head(self.belief_norm(h_belief)), h_belief

    def _features(self, obs: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        own = self._actor_input(obs)
        if self.belief_gru is not None:
            h, h_belief = h.split(self.spec.hidden_size, dim=-1)
            prediction, h_belief = self._belief(own, h_belief)
            own = torch.cat([own, prediction.detach()], dim=-1)
        x = self.encoder(own)
        if self.gru is None:
            return self.core_norm(self.feedforward(x)), h
        h = _gru_step(self.gru, x, h)
        features = self.core_norm(h)
        return features, h if self.belief_gru is None else torch.cat([h, h_belief], dim=-1)

    def act(self, obs: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One step without the value (acting): obs (B, D), h (B, H) -> params (B, P), h' (B, H)."""
        features, h = self._features(obs, h)
        return self.policy(features), h

    def step(self, obs: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One step for B copies: obs (B, D), h (B, H) -> params (B, P), value (B,), h' (B, H)."""
        features, h = self._features(obs, h)
        return self.policy(features), self._value(features, obs), h

    def rollout(
        self, obs_seq: torch.Tensor, h0: torch.Tensor, starts: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """T steps for B copies: obs_seq (T, B, D), h0 (B, H), starts (T, B) float.

        Returns params (T, B, P), values (T, B), h_T (B, H).
        """
        params, values, h_last, _ = self.rollout_outputs(obs_seq, h0, starts)
        return params, values, h_last

    def rollout_outputs(
        self, obs_seq: torch.Tensor, h0: torch.Tensor, starts: torch.Tensor
    ) -> RolloutOutputs:
        """:meth:`rollout` with the hidden-state prediction (training targets)."""
        own = self._actor_input(obs_seq)
        prediction = None
        if self.belief_encoder is not None and self.belief_gru is not None and self.hidden_head is not None:
            h0, h_belief = h0.split(self.spec.hidden_size, dim=-1)
            belief_out, h_belief = _gru_sequence(self.belief_gru, self.belief_encoder(own), h_belief, starts)
            prediction = self.hidden_head(self.belief_norm(belief_out))
            own = torch.cat([own, prediction.detach()], dim=-1)
        x = self.encoder(own)
        if self.gru is None:
            features, h = self.core_norm(self.feedforward(x)), h0
        else:
            out, h = _gru_sequence(self.gru, x, h0, starts)
            features = self.core_norm(out)
        if prediction is not None:
            h = torch.cat([h, h_belief], dim=-1)
        elif self.hidden_head is not None:
            prediction = self.hidden_head(features)
        return RolloutOutputs(self.policy(features), self._value(features, obs_seq), h, prediction)

    def hidden_targets(self, obs_seq: torch.Tensor) -> torch.Tensor:
        """(..., K) the hidden-state columns the prediction head is trained to predict."""
        first = self.spec.actor_obs_dim
        return obs_seq[..., first : first + self.spec.hidden_target_dim]


class ModelTeam:
    """N models of one spec acting on N equal blocks of a batch: model ``i`` on rows
    ``[i B/N, (i + 1) B/N)``. Serial individual learning acts for all workers in one env step
    this way. Its ``policy`` is model 0's head: a head's distribution is built from the
    parameters alone, so one head serves every model's output.
    """

    def __init__(self, models: list[ActorCritic]) -> None:
        if any(m.spec != models[0].spec for m in models):
            raise ValueError("a model team needs models of one spec")
        self.members = list(models)
        self.spec = models[0].spec
        self.policy = models[0].policy

    def initial_state(self, batch: int) -> torch.Tensor:
        return self.members[0].initial_state(batch)

    def _blocks(self, obs: torch.Tensor, h: torch.Tensor) -> Any:
        n = len(self.members)
        if obs.shape[0] % n:
            raise ValueError(f"a batch of {obs.shape[0]} rows cannot be split among {n} models")
        return zip(self.members, obs.chunk(n), h.chunk(n), strict=True)

    def act(self, obs: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """obs (B, D), h (B, H) -> params (B, P), h' (B, H); B a multiple of N."""
        params, states = zip(*(m.act(o, hb) for m, o, hb in self._blocks(obs, h)), strict=True)
        return torch.cat(params), torch.cat(states)

    def step(self, obs: torch.Tensor, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """obs (B, D), h (B, H) -> params (B, P), value (B,), h' (B, H); B a multiple of N."""
        params, values, states = zip(*(m.step(o, hb) for m, o, hb in self._blocks(obs, h)), strict=True)
        return torch.cat(params), torch.cat(values), torch.cat(states)


Actor = ActorCritic | ModelTeam
"""What a rollout collector acts with: one model, or a team acting on blocks of the batch."""


def model_device(model: Actor) -> torch.device:
    """The device of ``model``'s parameters (a team's members share one)."""
    member = model.members[0] if isinstance(model, ModelTeam) else model
    return next(member.parameters()).device


def build_model(spec: ModelSpec | dict[str, Any]) -> ActorCritic:
    """A fresh model from a spec or its dict form (as stored in a checkpoint)."""
    return ActorCritic(spec if isinstance(spec, ModelSpec) else ModelSpec(**spec))


def clone_model(model: ActorCritic) -> ActorCritic:
    """A new model of ``model``'s spec with its weights (a worker's private copy, a snapshot)."""
    copy = build_model(model.spec)
    copy.load_state_dict(model.state_dict())
    return copy
