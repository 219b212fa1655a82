"""Exceptions shared by every layer."""

import math
import numbers


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
