"""The scenario grids, with named cell sets.

`paper`: velocity x local capacity x cloud capacity, cells named ``v<km/h>-l<local units>-c<cloud
units>``, e.g. ``v30-l200-c1000``. `mec`: velocity x cloud capacity at a distance, cells named
``v<km/h>-f<cloud GHz>-d<m>``, e.g. ``v30-f30-d200``. Training uses the ``seen`` cells;
generalization is measured on held-out sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from uavrl.errors import ConfigError

if TYPE_CHECKING:
    from uavrl.envs.mec.core import MecParams

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
            v, local, cloud = _cell_numbers(name, "vlc")
            return cls(float(v), int(local), int(cloud))
        except ValueError:
            raise ConfigError(
                f"cell name must look like 'v30-l200-c1000' or be one of the sets "
                f"{sorted(CELL_SETS)}, got {name!r}"
            ) from None


def _cell_numbers(name: str, letters: str) -> list[str]:
    """The numbers of a cell name, each after its letter: ``("v30-l200-c1000", "vlc")`` gives
    ``["30", "200", "1000"]``; ValueError when the name has another form."""
    parts = name.split("-")
    if len(parts) != len(letters) or any(p[:1] != x for p, x in zip(parts, letters, strict=True)):
        raise ValueError(name)
    return [p[1:] for p in parts]


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
    return _resolve(spec, CELL_SETS, Cell.parse)


def _resolve(spec: str | list[str], sets: dict[str, list[Any]], parse: Any) -> list[Any]:
    names = spec.split(",") if isinstance(spec, str) else list(spec)
    cells: list[Any] = []
    for name in (n.strip() for n in names):
        if not name:
            continue
        for cell in sets.get(name) or [parse(name)]:
            if cell not in cells:
                cells.append(cell)
    if not cells:
        raise ConfigError(f"cells must name at least one cell or set, got {spec!r}")
    return cells


# -- the `mec` grid: velocity x cloud capacity (GHz), at a UAV-to-RSU distance ------------------

MEC_CLOUD_GHZ = {"low": 15.0, "default": 30.0, "high": 60.0}
MEC_DEFAULT_DISTANCE = 200.0


@dataclass(frozen=True, order=True)
class MecCell:
    """One `mec` scenario: velocity, cloud capacity and distance, named ``v30-f30-d200``."""

    velocity: float
    cloud_ghz: float = MEC_CLOUD_GHZ["default"]
    distance: float = MEC_DEFAULT_DISTANCE

    @property
    def name(self) -> str:
        return f"v{self.velocity:g}-f{self.cloud_ghz:g}-d{self.distance:g}"

    def env_params(self) -> dict[str, Any]:
        return {
            "velocity": float(self.velocity),
            "cloud_ghz": float(self.cloud_ghz),
            "distance": float(self.distance),
        }

    @classmethod
    def of(cls, params: MecParams) -> MecCell:
        """The cell a core with ``params`` simulates."""
        return cls(params.velocity, params.cloud_ghz, params.distance)

    @classmethod
    def parse(cls, name: str) -> MecCell:
        try:
            v, f, d = (float(x) for x in _cell_numbers(name, "vfd"))
            return cls(v, f, d)
        except ValueError:
            raise ConfigError(
                f"mec cell name must look like 'v30-f30-d200' or be one of the sets "
                f"{sorted(MEC_CELL_SETS)}, got {name!r}"
            ) from None


def _mec_cells(velocities: tuple[int, ...], clouds: tuple[float, ...]) -> list[MecCell]:
    return [MecCell(v, f) for v in velocities for f in clouds]


_OTHER_MEC_CLOUD = tuple(f for f in MEC_CLOUD_GHZ.values() if f != MEC_CLOUD_GHZ["default"])
MEC_CELL_SETS: dict[str, list[MecCell]] = {
    "seen": _mec_cells(SEEN_VELOCITIES, (MEC_CLOUD_GHZ["default"],)),
    "held_out_velocity": _mec_cells(HELD_OUT_VELOCITIES, (MEC_CLOUD_GHZ["default"],)),
    "held_out_cloud": _mec_cells(SEEN_VELOCITIES, _OTHER_MEC_CLOUD),
}
MEC_CELL_SETS["held_out"] = MEC_CELL_SETS["held_out_velocity"] + MEC_CELL_SETS["held_out_cloud"]
MEC_CELL_SETS["all"] = _mec_cells(VELOCITIES, tuple(MEC_CLOUD_GHZ.values()))


def resolve_mec_cells(spec: str | list[str]) -> list[MecCell]:
    """`mec` cells named by sets and cell names, as :func:`resolve_cells`: ``"seen,v90-f15-d200"``."""
    return _resolve(spec, MEC_CELL_SETS, MecCell.parse)


MEC_CELL_PARAMS = ("velocity", "cloud_ghz", "distance")
"""The env parameters a `mec` scenario cell sets."""


def is_held_out(cell: Cell) -> bool:
    """True unless the cell is one of the ``seen`` training cells."""
    return cell not in CELL_SETS["seen"]
