"""Exceptions shared by every layer."""

import math
import numbers
from typing import Any


class ConfigError(ValueError):
    """A parameter or config value is invalid.

    The message names the field, the value given and what is allowed, e.g.
    ``ConfigError: env.velocity must be in [0, 120] km/h, got 150``.
    """


class CheckpointError(ValueError):
    """A checkpoint file is unreadable, incomplete, or holds non-finite or mismatched tensors;
    the message names the file and the defect."""


class RunInterrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C after its last checkpoint was written."""

    def __init__(self, env_steps: int, run_dir: str) -> None:
        super().__init__(
            f"interrupted at {env_steps:,} env steps; resume with uavrl train --resume {run_dir}"
        )
        self.env_steps = env_steps
        self.run_dir = run_dir


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    unit: str = "",
    integer: bool = False,
) -> None:
    """Raise :class:`ConfigError` unless ``value`` is a finite number (a whole one when
    ``integer``) with ``low <= value <= high`` (either bound may be open). Booleans and strings
    are refused, not read as numbers."""
    kind = "an integer" if integer else "a finite number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    if not math.isfinite(value) or (integer and value != int(value)):
        raise ConfigError(f"{name} must be {kind}, got {value!r}")
    ok = (low is None or value >= low) and (high is None or value <= high)
    if ok:
        return
    suffix = f" {unit}" if unit else ""
    if low is not None and high is not None:
        allowed = f"in [{low}, {high}]{suffix}"
    elif low is not None:
        allowed = f">= {low}{suffix}"
    else:
        allowed = f"<= {high}{suffix}"
    raise ConfigError(f"{name} must be {allowed}, got {value!r}")


def reject_unknown(given: dict[str, Any], allowed: set[str], what: str) -> None:
    """Raise a ConfigError naming every key of ``given`` not in ``allowed`` (e.g. ``what`` =
    "preset 'paper'")."""
    unknown = {k: v for k, v in given.items() if k not in allowed}
    if unknown:
        listed = ", ".join(f"{k}={v!r}" for k, v in unknown.items())
        raise ConfigError(f"unknown parameter {listed} for {what}; allowed: {sorted(allowed)}")
