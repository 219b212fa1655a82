"""The scenario grid and its named cell sets."""

from __future__ import annotations

import pytest

from uavrl.envs.scenarios import CELL_SETS, Cell, is_held_out, resolve_cells
from uavrl.errors import ConfigError


def test_grid_has_every_velocity_and_resource_level() -> None:
    assert len(CELL_SETS["all"]) == 8 * 3 * 3
    assert {c.velocity for c in CELL_SETS["all"]} == {5, 10, 20, 30, 50, 70, 90, 120}


def test_seen_and_held_out_cells_are_disjoint_and_inside_the_grid() -> None:
    seen, held_out = set(CELL_SETS["seen"]), set(CELL_SETS["held_out"])
    assert [c.velocity for c in CELL_SETS["seen"]] == [5, 10, 20, 30, 50]
    assert not seen & held_out
    assert seen | held_out <= set(CELL_SETS["all"])
    assert all(is_held_out(c) for c in held_out) and not any(is_held_out(c) for c in seen)


def test_names_round_trip_and_sets_expand_in_order_without_duplicates() -> None:
    for cell in CELL_SETS["all"]:
        assert Cell.parse(cell.name) == cell
    cells = resolve_cells("v30-l200-c1000,seen,v70-l150-c500")
    assert cells[0] == Cell(30, 200, 1000)
    assert cells[-1] == Cell(70, 150, 500)
    assert len(cells) == 6


@pytest.mark.parametrize("spec", ["v30", "unseen", "x30-l200-c1000", ""])
def test_unknown_cells_name_the_allowed_forms(spec: str) -> None:
    with pytest.raises(ConfigError, match="cell"):
        resolve_cells(spec)


def test_cell_parameters_are_validated_by_the_env() -> None:
    from uavrl.envs import make_core

    with pytest.raises(ConfigError, match="velocity"):
        make_core("paper", 1, **Cell(130, 200, 1000).env_params())
