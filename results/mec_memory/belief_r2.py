"""How well does a trained policy's belief network (``model.belief``) predict `mec`'s hidden state?

The same held-out trajectories as ``probe.py`` (the 5 training cells, private clouds, 64 copies,
seed 1, the first 50 slots left out), under its two behaviours, and under the policy's own greedy
actions: R^2 per hidden column of the belief network's prediction, which the policy read as it
acted. Beside ``probe.py``'s figures, it says whether the RL run's belief learnt what the history
holds (the probe's GRU) or less.

Run: python results/mec_memory/belief_r2.py RUN_DIR [steps] (prints a table; RUN_DIR a
``uavrl train`` run with ``model.belief: true``).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from probe import BEHAVIOURS, CELLS, COPIES, HIDDEN_NAMES, trajectories

from uavrl.envs.mec.core import MecObs
from uavrl.envs.preset import get_preset
from uavrl.envs.vector import make_vec_env
from uavrl.nn.models import ActorCritic, reset_hidden
from uavrl.runners.checkpoint import load_models

BURN_IN = 50


def predictions(model: ActorCritic, obs: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """(T, B, K) the belief network's prediction along given trajectories (its own columns only)."""
    own = torch.as_tensor(obs, dtype=torch.float32)
    h = torch.zeros(own.shape[1], model.spec.hidden_size)
    out = []
    with torch.no_grad():
        for t in range(own.shape[0]):
            prediction, h = model._belief(
                own[t], reset_hidden(h, torch.as_tensor(starts[t], dtype=torch.float32))
            )
            out.append(prediction)
    return torch.stack(out).numpy()


def policy_trajectories(model: ActorCritic, steps: int, seed: int) -> tuple[np.ndarray, ...]:
    """obs, hidden, starts and the belief's predictions under the policy's own greedy actions."""
    parts: list[list[np.ndarray]] = [[], [], [], []]
    for i, name in enumerate(CELLS):
        cell = get_preset("mec").resolve_cells([name])[0]
        env = make_vec_env(
            "uavrl/Offload-v0", COPIES, {"preset": "mec", "observe_hidden": True, **cell.env_params()}
        )
        obs = env.reset(seed=seed * 100 + i, copy_indices=np.arange(COPIES))
        h, start = model.initial_state(COPIES), np.ones(COPIES)
        rows, hidden, starts, predicted = [], [], [], []
        with torch.no_grad():
            for _ in range(steps):
                own = torch.as_tensor(obs[:, : MecObs.DIM], dtype=torch.float32)
                h = reset_hidden(h, torch.as_tensor(start, dtype=torch.float32))
                _, h_belief = h.split(model.spec.hidden_size, dim=-1)
                prediction, _ = model._belief(own, h_belief)
                params, h = model.act(own, h)
                rows.append(obs[:, : MecObs.DIM].copy())
                hidden.append(obs[:, MecObs.HIDDEN].copy())
                starts.append(start)
                predicted.append(prediction.numpy())
                step = env.step(model.policy.distribution(params).mode().numpy())
                obs, start = step.obs, (step.terminated | step.truncated).astype(float)
        env.close()
        for part, rows_of in zip(parts, (rows, hidden, starts, predicted), strict=True):
            part.append(np.stack(rows_of))
    return tuple(np.concatenate(p, 1) for p in parts)


def r2(prediction: np.ndarray, hidden: np.ndarray) -> np.ndarray:
    error = ((prediction[BURN_IN:] - hidden[BURN_IN:]) ** 2).mean(axis=(0, 1))
    return 1.0 - error / hidden[BURN_IN:].var(axis=(0, 1))


def main() -> None:
    run_dir = Path(sys.argv[1])
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    torch.set_num_threads(1)
    models, _ = load_models(run_dir / "checkpoints", "last")
    model = models[0]
    if not model.spec.belief:
        raise SystemExit(f"{run_dir} has no belief network (model.belief: false)")
    print(f"| behaviour | {' | '.join(HIDDEN_NAMES)} |")
    print(f"|---|{'---|' * len(HIDDEN_NAMES)}")
    for behaviour, probabilities in BEHAVIOURS.items():
        obs, hidden, starts = trajectories(probabilities, steps, seed=1)
        scores = r2(predictions(model, obs, starts), hidden)
        print(f"| {behaviour} | {' | '.join(f'{s:.3f}' for s in scores)} |")
    _, hidden, _, predicted = policy_trajectories(model, steps, seed=1)
    print(f"| the policy, greedy | {' | '.join(f'{s:.3f}' for s in r2(predicted, hidden))} |")


if __name__ == "__main__":
    main()
