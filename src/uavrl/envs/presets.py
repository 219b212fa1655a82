"""The environment presets and the one factory that builds a batched core from a name."""

from __future__ import annotations

from dataclasses import fields
from typing import Any

from uavrl.envs.cloud import CloudPool
from uavrl.envs.mec.core import MecCore, MecParams
from uavrl.envs.paper.core import HASH_NEUTRAL_PARAM, PaperCore, PaperParams
from uavrl.errors import ConfigError

ENV_ID = "uavrl/Offload-v0"
PRESETS = ("paper", "mec")
DEFAULT_PRESET = "paper"

Core = PaperCore | MecCore


def make_core(
    preset: str, n: int, pool: CloudPool | None = None, autoreset: bool = True, **params: Any
) -> Core:
    """A batched core of ``n`` copies of ``preset`` with the given parameters.

    ``mec`` shares its clouds inside one core (``cloud_group_size``), by processor sharing in
    simulated time; it takes no unit pool.
    """
    if preset == "paper":
        return PaperCore(n, PaperParams.from_kwargs(**params), pool=pool, autoreset=autoreset)
    if preset == "mec":
        if pool is not None:
            raise ConfigError(
                "preset 'mec' shares a cloud among the copies of one core (cloud_group_size), "
                "not through a cloud pool"
            )
        return MecCore(n, MecParams.from_kwargs(**params), autoreset=autoreset)
    raise ConfigError(f"preset must be one of {list(PRESETS)}, got {preset!r}")


def hash_neutral_params(preset: str) -> dict[str, Any]:
    """The parameters of ``preset`` that a config's identity leaves out at their default (name ->
    default): added after runs were on record, so those runs' configs keep their hashes."""
    params = {"paper": PaperParams, "mec": MecParams}.get(preset)
    if params is None:
        return {}
    return {f.name: f.default for f in fields(params) if f.metadata == HASH_NEUTRAL_PARAM}
