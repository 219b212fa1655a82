"""The `mec` preset behind the preset protocol (:class:`~uavrl.envs.preset.Preset`)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

import numpy as np

from uavrl.envs.mec.baselines import MecPolicy, mec_reference_policies
from uavrl.envs.mec.core import OBJECTIVES, MecParams
from uavrl.envs.mec.evaluation import MEC_METRICS, run_cells, task_metrics
from uavrl.envs.preset import Progress, WorldScore
from uavrl.envs.scenarios import MEC_CELL_PARAMS, MEC_CELL_SETS, MecCell, resolve_mec_cells
from uavrl.envs.worlds import World
from uavrl.errors import ConfigError


class MecPreset:
    """`mec`: cells of velocity x cloud GHz at a distance, ``cloud_group_size`` UAVs on one cloud
    inside a core, the cost-estimating rules with tuned margins, task metrics; no bound."""

    name = "mec"
    cell_params = MEC_CELL_PARAMS
    cell_sets = MEC_CELL_SETS
    metrics = MEC_METRICS
    objectives = OBJECTIVES
    pools_across_workers = False
    copy_cells_share: tuple[str, ...] | None = None
    has_bound = False
    headline_report = False
    reference_description = "the rules' margins"

    def resolve_cells(self, spec: str | list[str]) -> list[MecCell]:
        return resolve_mec_cells(spec)

    def cell_of(self, env_params: dict[str, Any]) -> MecCell:
        return MecCell.of(MecParams.from_env_params(env_params))

    def trains_shared(self, env_params: dict[str, Any], shared_pool: bool) -> bool:
        return MecParams.from_env_params(env_params).cloud_group_size > 1

    def shared_agents(self, env_params: dict[str, Any], n_workers: int) -> int:
        # as many UAVs per cloud as it trained with; a run trained alone is scored on shared
        # clouds with one UAV per worker, as a `paper` run's shared pool holds one per worker
        group = MecParams.from_env_params(env_params).cloud_group_size
        return group if group > 1 else n_workers

    def evaluation_params(self, run_params: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
        # a run is judged with the cost weights and constants it trained with
        return dict(run_params)

    def world_key(
        self, env_params: dict[str, Any], worker_cells: list[str] | None, n_workers: int, shared_pool: bool
    ) -> str:
        # judged in its own params: they, its cells, and the UAVs per cloud of a shared evaluation
        return f"{json.dumps(env_params, sort_keys=True)}|{worker_cells}|{n_workers}"

    def reference_policies(
        self, run_params: dict[str, Any], tuning_worlds: Sequence[World], episodes: int, seed: int
    ) -> list[MecPolicy]:
        # the rules know the UAV's CPU, the cost weights and the nominal cloud of the run's params
        tuning = [_world_params(w) for w in tuning_worlds]
        return mec_reference_policies(MecParams.from_env_params(run_params), tuning, episodes, seed)

    def score(
        self,
        policies: Sequence[Any],
        worlds: Sequence[World],
        episodes: int,
        seed: int,
        progress: Progress | None = None,
    ) -> list[WorldScore]:
        """Each policy steps every world in one batch (:func:`~uavrl.envs.mec.evaluation.run_cells`),
        each world on the streams it has alone; ``progress`` is called before each policy."""
        if not worlds:
            return []
        shared = {_shared_params(w) for w in worlds}
        if len(shared) != 1:
            raise ConfigError("mec worlds scored together must differ in their cells only")
        params = _world_params(worlds[0])
        cells = [MecCell.of(_world_params(w)).env_params() for w in worlds]
        runs = []
        for i, policy in enumerate(policies):
            if progress is not None:
                progress(i, len(policies), f"{policy.name} in {len(worlds)} cells")
            runs.append(run_cells(policy, params, cells, seed, np.arange(episodes), policy.needs_privileged))
        return [
            WorldScore(policy.name, world, returns, task_metrics(run))
            for k, world in enumerate(worlds)
            for policy, (returns, run) in zip(policies, (r[k] for r in runs), strict=True)
        ]

    def reward_scale(self, env_params: dict[str, Any]) -> float:
        return 1.0

    def observation_layout(self, env_params: dict[str, Any]) -> None:
        # its columns are MecObs's, documented there
        return None

    def units_note(self, env_params: dict[str, Any]) -> str:
        return ""


def _world_params(world: World) -> MecParams:
    """A `mec` world's parameters: its agents' (one cell), with its agents on one cloud."""
    return dataclasses.replace(
        MecParams.from_env_params(world.agent_params[0]), cloud_group_size=world.n_agents
    )


def _shared_params(world: World) -> str:
    """What worlds scored in one batch must share: everything but the cell, and the agents per cloud."""
    params = dataclasses.asdict(_world_params(world))
    return repr(sorted((k, v) for k, v in params.items() if k not in MEC_CELL_PARAMS))


MEC = MecPreset()
