"""uavrl: distributed actor-critic reinforcement learning for UAV task offloading.

``uavrl.train`` and ``uavrl.load`` (:mod:`uavrl.api`) are imported at their first use, so that
``import uavrl`` (in every worker process, and before the CLI validates a config) stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from uavrl.envs import register_envs

if TYPE_CHECKING:
    from uavrl.api import Policy, Run, load, train

__version__ = "0.1.0"

register_envs()

_API = ("train", "load", "Policy", "Run")


def __getattr__(name: str) -> Any:
    if name in _API:
        from uavrl import api

        return getattr(api, name)
    raise AttributeError(f"module 'uavrl' has no attribute {name!r}")


__all__ = ["Policy", "Run", "__version__", "load", "train"]
