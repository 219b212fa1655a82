"""Small, fast configs for runner tests."""

from __future__ import annotations

from typing import Any

import pytest

from uavrl.config import Config, config_from_dict


def small_config(**sections: Any) -> Config:
    """A tiny paper-preset run; ``sections`` override whole keys (e.g. ``runner={...}``)."""
    data: dict[str, Any] = {
        "name": "test",
        "seed": 3,
        "env": {
            "id": "uavrl/Offload-v0",
            "params": {"preset": "paper", "episode_length": 30},
            "worker_cells": ["v5-l200-c1000", "v50-l200-c1000"],
        },
        "model": {"hidden_size": 16},
        "algo": {"rollout_length": 5, "lr": 1e-3},
        "runner": {"n_workers": 2, "envs_per_worker": 3, "total_env_steps": 600, "serial": True},
        "eval": {"episodes": 4},
        "log": {"tensorboard": False, "progress": False},
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return config_from_dict(data)


@pytest.fixture
def make_config() -> Any:
    return small_config
