"""The environment presets and the one factory that builds a batched core from a name."""

from __future__ import annotations

from typing import Any

from uavrl.envs.cloud import CloudPool
from uavrl.envs.paper import PaperCore, PaperParams
from uavrl.errors import ConfigError

ENV_ID = "uavrl/Offload-v0"
PRESETS = ("paper",)


def make_core(
    preset: str, n: int, pool: CloudPool | None = None, autoreset: bool = True, **params: Any
) -> PaperCore:
    """A batched core of ``n`` copies of ``preset`` with the given parameters."""
    if preset != "paper":
        raise ConfigError(f"preset must be one of {list(PRESETS)}, got {preset!r}")
    return PaperCore(n, PaperParams.from_kwargs(**params), pool=pool, autoreset=autoreset)
