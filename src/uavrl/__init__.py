"""uavrl: distributed actor-critic reinforcement learning for UAV task offloading."""

from uavrl.envs import register_envs

__version__ = "0.1.0"

register_envs()

__all__ = ["__version__"]
