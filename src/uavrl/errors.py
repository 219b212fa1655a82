"""Exceptions shared by every layer."""


class ConfigError(ValueError):
    """A parameter or config value is invalid.

    The message names the field, the value given and what is allowed, e.g.
    ``ConfigError: env.velocity must be in [0, 120] km/h, got 150``.
    """


def check_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    unit: str = "",
) -> None:
    """Raise :class:`ConfigError` unless ``low <= value <= high`` (either bound may be open)."""
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
