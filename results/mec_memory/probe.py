"""How much of `mec`'s hidden state can memory recover? A supervised probe.

Issue 26 asks a GRU policy on `mec` to get two thirds of the way from the feed-forward policy to a
GRU that observes the hidden state. That is possible only if the observation history holds
information about the current hidden state (shadowing, blockage, cloud load, cloud tasks) that
the current observation does not. This probe measures that directly, apart from RL: on the same
trajectories, a feed-forward network reading the current observation and a GRU reading the whole
history are trained to predict the current hidden state, and their held-out R^2 per hidden
column are compared. A GRU no better than the feed-forward net means the history holds nothing
more, whatever a policy does with it.

Trajectories: the `mec` training cells (v5..v50, f30, d200), private clouds, 64 copies each, a
behaviour that offloads often enough for rates to be realised (LOCAL 0.3, OFFLOAD 0.6, DISCARD
0.1, i.i.d.), and, as a second behaviour, always OFFLOAD (a realised rate every slot the link is
free). Training seed 0, held-out seed 1.

Run: python results/mec_memory/probe.py [steps] [epochs] [speed] [behaviour,...] (writes
probe_epochs<epochs>.csv beside this file; with ``speed`` the observation holds the last realised
cloud speed, ``env.params.observe_cloud_speed``, and the file is probe_speed_epochs<epochs>.csv).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn

from uavrl.envs.mec.core import MecObs
from uavrl.envs.preset import get_preset
from uavrl.envs.vector import make_vec_env

CELLS = ["v5-f30-d200", "v10-f30-d200", "v20-f30-d200", "v30-f30-d200", "v50-f30-d200"]
HIDDEN_NAMES = ["shadowing", "blockage", "cloud_load", "cloud_tasks"]
BEHAVIOURS = {"mixed": np.array([0.3, 0.6, 0.1]), "always_offload": np.array([0.0, 1.0, 0.0])}
COPIES = 64
HIDDEN = 128


def own_columns(speed: bool) -> int:
    """The agent's own observation columns: 17, 18 with the last realised cloud speed."""
    return MecObs.DIM + int(speed)


def trajectories(
    behaviour: np.ndarray, steps: int, seed: int, speed: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """obs (T, B, D), hidden (T, B, 4), starts (T, B) over every training cell side by side."""
    rng = np.random.default_rng(seed)
    obs_parts, hidden_parts, start_parts = [], [], []
    for i, name in enumerate(CELLS):
        cell = get_preset("mec").resolve_cells([name])[0]
        env = make_vec_env(
            "uavrl/Offload-v0",
            COPIES,
            {"preset": "mec", "observe_hidden": True, "observe_cloud_speed": speed, **cell.env_params()},
        )
        obs = env.reset(seed=seed * 100 + i, copy_indices=np.arange(COPIES))
        start = np.ones(COPIES)
        rows, starts = [], []
        for _ in range(steps):
            rows.append(obs.copy())
            starts.append(start)
            actions = rng.choice(3, size=COPIES, p=behaviour)
            step = env.step(actions)
            obs, start = step.obs, (step.terminated | step.truncated).astype(float)
        env.close()
        full = np.stack(rows)
        own = own_columns(speed)  # the hidden columns follow the agent's own
        obs_parts.append(full[..., :own])
        hidden_parts.append(full[..., own : own + len(HIDDEN_NAMES)])
        start_parts.append(np.stack(starts))
    return (np.concatenate(obs_parts, 1), np.concatenate(hidden_parts, 1), np.concatenate(start_parts, 1))


class Probe(nn.Module):
    def __init__(self, recurrent: bool, obs_dim: int) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(obs_dim, HIDDEN), nn.ReLU())
        self.gru = nn.GRU(HIDDEN, HIDDEN) if recurrent else None
        self.core = nn.Identity() if recurrent else nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.ReLU())
        self.head = nn.Linear(HIDDEN, len(HIDDEN_NAMES))

    def forward(
        self, obs: torch.Tensor, starts: torch.Tensor, h: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.encoder(obs)
        if self.gru is None:
            return self.head(self.core(x)), h
        outs = []
        for t in range(obs.shape[0]):
            h = h * (1.0 - starts[t]).unsqueeze(-1)
            out, h_n = self.gru(x[t : t + 1], h.unsqueeze(0))
            h = h_n[0]
            outs.append(out[0])
        return self.head(torch.stack(outs)), h


def fit_and_score(recurrent: bool, train: tuple, test: tuple, epochs: int, window: int = 50) -> np.ndarray:
    """Held-out R^2 per hidden column of a probe trained by truncated BPTT over ``window`` steps."""
    torch.manual_seed(0)
    model = Probe(recurrent, train[0].shape[-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    obs, hidden, starts = (torch.as_tensor(a, dtype=torch.float32) for a in train)
    steps, copies = obs.shape[:2]
    for _ in range(epochs):
        h = torch.zeros(copies, HIDDEN)
        for lo in range(0, steps, window):
            sl = slice(lo, lo + window)
            prediction, h = model(obs[sl], starts[sl], h.detach())
            loss = (prediction - hidden[sl]).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    obs, hidden, starts = (torch.as_tensor(a, dtype=torch.float32) for a in test)
    with torch.no_grad():
        prediction, _ = model(obs, starts, torch.zeros(obs.shape[1], HIDDEN))
    burn_in = 50  # the GRU's first steps have no history yet
    error = (prediction[burn_in:] - hidden[burn_in:]).pow(2).mean(dim=(0, 1))
    variance = hidden[burn_in:].var(dim=(0, 1))
    return (1.0 - error / variance).numpy()


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    epochs = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    speed = len(sys.argv) > 3 and sys.argv[3] == "speed"
    chosen = sys.argv[4].split(",") if len(sys.argv) > 4 else list(BEHAVIOURS)
    torch.set_num_threads(2)
    rows = []
    for behaviour_name in chosen:
        behaviour = BEHAVIOURS[behaviour_name]
        train, test = trajectories(behaviour, steps, 0, speed), trajectories(behaviour, steps, 1, speed)
        for recurrent in (False, True):
            r2 = fit_and_score(recurrent, train, test, epochs)
            model = "gru_history" if recurrent else "mlp_current_obs"
            rows += [
                (behaviour_name, model, name, float(v)) for name, v in zip(HIDDEN_NAMES, r2, strict=True)
            ]
            print(behaviour_name, model, np.round(r2, 3), flush=True)
    table = pd.DataFrame(rows, columns=["behaviour", "probe", "hidden", "r2_held_out"])
    name = f"probe_speed_epochs{epochs}.csv" if speed else f"probe_epochs{epochs}.csv"
    table.to_csv(Path(__file__).with_name(name), index=False)
    print(table.pivot_table(index=["behaviour", "hidden"], columns="probe", values="r2_held_out").round(3))


if __name__ == "__main__":
    main()
