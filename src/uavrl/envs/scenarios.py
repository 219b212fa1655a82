"""The scenario grid: velocity x local capacity x cloud capacity, with named cell sets.

Cell names read ``v<km/h>-l<local units>-c<cloud units>``, e.g. ``v30-l200-c1000``. Training uses
the ``seen`` cells; generalization is measured on held-out sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from uavrl.errors import ConfigError

VELOCITIES = (5, 10, 20, 30, 50, 70, 90, 120)
SEEN_VELOCITIES = (5, 10, 20, 30, 50)
HELD_OUT_VELOCITIES = (70, 90, 120)
LOCAL_CAPACITIES = (100, 150, 200)
CLOUD_CAPACITIES = {"low": 500, "default": 1000, "high": 2000}
DEFAULT_LOCAL = 200
DEFAULT_CLOUD = CLOUD_CAPACITIES["default"]


CELL_PARAMS = ("velocity", "local_capacity", "cloud_capacity")
"""The env parameters a scenario cell sets."""


@dataclass(frozen=True, order=True)
class Cell:
    """One scenario: a velocity and the two resource levels."""

    velocity: float
    local_capacity: int = DEFAULT_LOCAL
    cloud_capacity: int = DEFAULT_CLOUD

    @property
    def name(self) -> str:
        return f"v{self.velocity:g}-l{self.local_capacity}-c{self.cloud_capacity}"

    def env_params(self) -> dict[str, Any]:
        """Keyword arguments for ``make_core`` / ``gymnasium.make`` (the keys of ``CELL_PARAMS``)."""
        return {
            "velocity": float(self.velocity),
            "local_capacity": self.local_capacity,
            "cloud_capacity": self.cloud_capacity,
        }

    @classmethod
    def parse(cls, name: str) -> Cell:
        """Inverse of :attr:`name`."""
        try:
            v, local, cloud = name.split("-")
            if not (v[0] == "v" and local[0] == "l" and cloud[0] == "c"):
                raise ValueError
            return cls(float(v[1:]), int(local[1:]), int(cloud[1:]))
        except (ValueError, IndexError):
            raise ConfigError(
                f"cell name must look like 'v30-l200-c1000' or be one of the sets "
                f"{sorted(CELL_SETS)}, got {name!r}"
            ) from None


def _cells(velocities: tuple[int, ...], locals_: tuple[int, ...], clouds: tuple[int, ...]) -> list[Cell]:
    return [Cell(v, lc, cc) for v in velocities for lc in locals_ for cc in clouds]


_OTHER_LOCAL = tuple(c for c in LOCAL_CAPACITIES if c != DEFAULT_LOCAL)
_OTHER_CLOUD = tuple(c for c in CLOUD_CAPACITIES.values() if c != DEFAULT_CLOUD)

CELL_SETS: dict[str, list[Cell]] = {
    "seen": _cells(SEEN_VELOCITIES, (DEFAULT_LOCAL,), (DEFAULT_CLOUD,)),
    "held_out_velocity": _cells(HELD_OUT_VELOCITIES, (DEFAULT_LOCAL,), (DEFAULT_CLOUD,)),
    "held_out_local": _cells(SEEN_VELOCITIES, _OTHER_LOCAL, (DEFAULT_CLOUD,)),
    "held_out_cloud": _cells(SEEN_VELOCITIES, (DEFAULT_LOCAL,), _OTHER_CLOUD),
}
CELL_SETS["held_out"] = (
    CELL_SETS["held_out_velocity"] + CELL_SETS["held_out_local"] + CELL_SETS["held_out_cloud"]
)
CELL_SETS["all"] = _cells(VELOCITIES, LOCAL_CAPACITIES, tuple(CLOUD_CAPACITIES.values()))


def resolve_cells(spec: str | list[str]) -> list[Cell]:
    """Cells named by a comma-separated string or list of set names and cell names.

    Order is kept and duplicates are dropped: ``"seen,v70-l200-c1000"``.
    """
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    cells: list[Cell] = []
    for name in (n.strip() for n in names):
        if not name:
            continue
        for cell in CELL_SETS.get(name) or [Cell.parse(name)]:
            if cell not in cells:
                cells.append(cell)
    if not cells:
        raise ConfigError(f"cells must name at least one cell or set, got {spec!r}")
    return cells


def is_held_out(cell: Cell) -> bool:
    """True unless the cell is one of the ``seen`` training cells."""
    return cell not in CELL_SETS["seen"]
