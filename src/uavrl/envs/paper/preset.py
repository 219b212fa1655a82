"""The `paper` preset behind the preset protocol (:class:`~uavrl.envs.preset.Preset`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from uavrl.envs.paper.baselines import Policy, reference_policies
from uavrl.envs.paper.core import N_SLOTS, OBSERVATION_PARAMS, Obs, PaperParams
from uavrl.envs.preset import Progress, WorldScore, score_worlds
from uavrl.envs.scenarios import CELL_PARAMS, CELL_SETS, Cell, resolve_cells
from uavrl.envs.worlds import World


class PaperPreset:
    """`paper`: cells of velocity x local x cloud capacity, cloud pools shared across workers
    (``env.shared_pool``), the threshold rules, a hindsight bound; returns only."""

    name = "paper"
    cell_params = CELL_PARAMS
    cell_sets = CELL_SETS
    metrics: tuple[str, ...] = ()
    objectives: tuple[str, ...] = ()
    pools_across_workers = True
    copy_cells_share: tuple[str, ...] | None = ("cloud_capacity",)
    has_bound = True
    headline_report = True
    reference_description = "thresholds"

    def resolve_cells(self, spec: str | list[str]) -> list[Cell]:
        return resolve_cells(spec)

    def cell_of(self, env_params: dict[str, Any]) -> Cell:
        defaults = PaperParams()
        return Cell(
            float(env_params.get("velocity", defaults.velocity)),
            int(env_params.get("local_capacity", defaults.local_capacity)),
            int(env_params.get("cloud_capacity", defaults.cloud_capacity)),
        )

    def trains_shared(self, env_params: dict[str, Any], shared_pool: bool) -> bool:
        return shared_pool

    def shared_agents(self, env_params: dict[str, Any], n_workers: int) -> int:
        # a shared pool holds copy j of every worker
        return n_workers

    def evaluation_params(self, run_params: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
        # another evaluation's parameters (a reward scale), keeping what the run's models observe
        if base is None:
            return dict(run_params)
        observed = {k: v for k, v in run_params.items() if k in OBSERVATION_PARAMS}
        return {**base, **observed}

    def world_key(
        self, env_params: dict[str, Any], worker_cells: list[str] | None, n_workers: int, shared_pool: bool
    ) -> str:
        # its evaluations set their own env params: the cells and the pool sharing tell worlds apart
        return f"{worker_cells}|{n_workers}|{shared_pool}"

    def reference_policies(
        self, run_params: dict[str, Any], tuning_worlds: Sequence[World], episodes: int, seed: int
    ) -> list[Policy]:
        # the rules read everything they use from the observation
        return reference_policies(tuning_worlds, episodes, seed)

    def score(
        self,
        policies: Sequence[Any],
        worlds: Sequence[World],
        episodes: int,
        seed: int,
        progress: Progress | None = None,
    ) -> list[WorldScore]:
        return score_worlds(policies, worlds, episodes, seed, progress)

    def reward_scale(self, env_params: dict[str, Any]) -> float:
        return float(env_params.get("reward_scale", PaperParams().reward_scale))

    def observation_layout(self, env_params: dict[str, Any]) -> dict[str, Any]:
        """Column ranges of the observation (48 floats; one more for each of the feasibility
        and payable flags)."""
        feasibility = bool(env_params.get("observe_feasibility", False))
        layout: dict[str, Any] = {
            "free_local": Obs.FREE_LOCAL,
            "steps_left": Obs.STEPS_LEFT,
            "local_units": [Obs.LOCAL_UNITS.start, Obs.LOCAL_UNITS.stop],
            "local_time": [Obs.LOCAL_TIME.start, Obs.LOCAL_TIME.stop],
            "task_units": Obs.TASK_UNITS,
            "task_time": Obs.TASK_TIME,
            "flag_local": Obs.FLAG_LOCAL,
            "flag_offload": Obs.FLAG_OFFLOAD,
            "velocity": Obs.VELOCITY,
            "local_capacity": Obs.LOCAL_CAPACITY,
            "slots": N_SLOTS,
        }
        if feasibility:
            layout["local_feasible"] = Obs.LOCAL_FEASIBLE
        if env_params.get("observe_payable", False):
            layout["payable"] = Obs.payable(feasibility)
        return layout

    def units_note(self, env_params: dict[str, Any]) -> str:
        # returns are units x the scale: tables of different scales differ by their ratio
        return f", reward {self.reward_scale(env_params):g} per unit"


PAPER = PaperPreset()
