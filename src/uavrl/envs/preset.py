"""The preset protocol: what the CLI, the study and the report ask of an environment preset.

A preset of ``uavrl/Offload-v0`` (``paper``, ``mec``) answers for its world: its scenario cells,
the pool regime a run trained in, the agents of a shared evaluation world, the parameters a run
is evaluated with, its reference policies (tuned on a run's training cells), how policies are
scored in evaluation worlds (returns, and the task metrics of presets that have them), and
whether a hindsight bound exists. Code outside ``envs/`` asks :func:`get_preset` instead of
branching on a preset's name; any other Gymnasium env has no preset (``None``) and is scored in
one world by :func:`score_worlds`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from uavrl.envs.presets import DEFAULT_PRESET, ENV_ID, PRESETS
from uavrl.envs.worlds import World
from uavrl.errors import ConfigError

Progress = Callable[[int, int, str], None]


@dataclass(frozen=True)
class WorldScore:
    """One policy in one world: its per-episode returns and the preset's task metrics."""

    policy: str
    world: World
    returns: np.ndarray
    metrics: dict[str, float] = field(default_factory=dict)


class Preset(Protocol):
    """One preset of ``uavrl/Offload-v0``.

    Attributes:
        name: the preset's name (``env.params.preset``).
        cell_params: the env parameters a scenario cell sets.
        cell_sets: named sets of cells (``seen``, ``held_out``...).
        metrics: the task metrics each evaluation row carries beside the returns (may be empty).
        objectives: the components of its vector cost, each weighted by ``env.params.w_<name>``
            (empty for a scalar reward).
        pools_across_workers: training with ``env.shared_pool`` puts copy ``j`` of every worker
            on one cloud pool ``j`` (so a shared evaluation includes the training world itself,
            and ``env.pool_price``, ``env.cells_by: copy`` and ``eval.cells`` apply).
        copy_cells_share: with ``env.cells_by: copy`` (every worker's cell stepped in one core),
            the cell parameters those cells must share; None where one core cannot step
            several cells.
        has_bound: a hindsight bound (``envs.paper.bound``) exists for its episodes.
        headline_report: a study of it gets the headline report (tables by pool regime and
            cell set normalised to the hindsight bound, the rule test, A3C against individual
            learning, their figures); else the final returns of each evaluation view, its rule
            test and its task metrics.
        reference_description: what its reference rules are tuned by, for progress messages.
    """

    name: str
    cell_params: tuple[str, ...]
    cell_sets: Mapping[str, Sequence[Any]]
    metrics: tuple[str, ...]
    objectives: tuple[str, ...]
    pools_across_workers: bool
    copy_cells_share: tuple[str, ...] | None
    has_bound: bool
    headline_report: bool
    reference_description: str

    def resolve_cells(self, spec: str | list[str]) -> list[Any]:
        """Cells named by sets and cell names (comma-separated or a list), in order, once each."""
        ...

    def cell_of(self, env_params: dict[str, Any]) -> Any:
        """The cell a core with ``env_params`` simulates (a run without ``worker_cells``)."""
        ...

    def trains_shared(self, env_params: dict[str, Any], shared_pool: bool) -> bool:
        """Whether a run with these env params (and ``env.shared_pool``) trains with shared clouds."""
        ...

    def shared_agents(self, env_params: dict[str, Any], n_workers: int) -> int:
        """Agents on one cloud in a shared evaluation world of a run with ``n_workers`` workers."""
        ...

    def evaluation_params(self, run_params: dict[str, Any], base: dict[str, Any] | None) -> dict[str, Any]:
        """The env parameters a run (``run_params``) is evaluated with, given an evaluation's
        ``base`` parameters (None: the run's own)."""
        ...

    def world_key(
        self, env_params: dict[str, Any], worker_cells: list[str] | None, n_workers: int, shared_pool: bool
    ) -> str:
        """What identifies the world a run's references are tuned and scored in (runs of one key
        share them)."""
        ...

    def reference_policies(
        self, run_params: dict[str, Any], tuning_worlds: Sequence[World], episodes: int, seed: int
    ) -> list[Any]:
        """Every reference policy, its parameters tuned in ``tuning_worlds`` (a run's training
        cells, one regime); ``run_params`` is what the rules may know of the run's world."""
        ...

    def score(
        self,
        policies: Sequence[Any],
        worlds: Sequence[World],
        episodes: int,
        seed: int,
        progress: Progress | None = None,
    ) -> list[WorldScore]:
        """Every policy in every world on the same streams (episodes ``0 .. episodes - 1``),
        world-major, policies in order within a world."""
        ...

    def reward_scale(self, env_params: dict[str, Any]) -> float:
        """The factor between its returns with ``env_params`` and its returns in natural units
        (1 where rewards are not scaled): what a change of evaluation scale multiplies by."""
        ...

    def observation_layout(self, env_params: dict[str, Any]) -> dict[str, Any] | None:
        """Named column ranges of its observation with ``env_params`` (for an exported model's
        sidecar), or None where none are named."""
        ...

    def units_note(self, env_params: dict[str, Any]) -> str:
        """A note on a table's units (``", reward 0.01 per unit"``), or empty."""
        ...


def score_worlds(
    policies: Sequence[Any],
    worlds: Sequence[World],
    episodes: int,
    seed: int,
    progress: Progress | None = None,
    env_id: str = ENV_ID,
) -> list[WorldScore]:
    """Every policy in every world, one world at a time (``World.episode_returns`` on ``env_id``),
    world-major; ``progress(done, total, world)`` is called before each world."""
    copies = np.arange(episodes)
    scores = []
    for i, world in enumerate(worlds):
        if progress is not None:
            progress(i, len(worlds), world.name)
        for policy in policies:
            returns = world.episode_returns(policy, seed, copies, policy.needs_privileged, env_id)
            scores.append(WorldScore(policy.name, world, returns))
    return scores


# Each preset's implementation: its module and the object in it (imported when first asked for,
# since they load their rules and evaluation code).
_IMPLEMENTATIONS = {"paper": ("uavrl.envs.paper.preset", "PAPER"), "mec": ("uavrl.envs.mec.preset", "MEC")}


def get_preset(name: str) -> Preset:
    """The preset named ``name``."""
    if name not in _IMPLEMENTATIONS:
        raise ConfigError(f"preset must be one of {list(PRESETS)}, got {name!r}")
    module, attribute = _IMPLEMENTATIONS[name]
    preset: Preset = getattr(importlib.import_module(module), attribute)
    return preset


def presets_with(capability: str) -> list[str]:
    """The names of the presets that have ``capability`` (a :class:`Preset` attribute that is
    true, or a non-empty tuple), for a refusal that says where an option applies."""
    return [name for name in PRESETS if getattr(get_preset(name), capability)]


def world_preset(world: World) -> Preset:
    """The preset a world of ``uavrl/Offload-v0`` runs (its agents' ``preset`` parameter)."""
    names = {str(p.get("preset", DEFAULT_PRESET)) for p in world.agent_params}
    if len(names) != 1:
        raise ConfigError(f"world {world.name!r}: its agents run one preset, got {sorted(names)}")
    return get_preset(names.pop())
