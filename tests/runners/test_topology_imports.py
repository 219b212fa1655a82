"""Layout: each topology module of ``runners/`` is built on the shared ones (session,
transport, bookkeeping, learner, worker...), never on another topology's module; only the
registry that dispatches a config to its runner imports them all."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

RUNNERS = Path(__file__).resolve().parents[2] / "src" / "uavrl" / "runners"
TOPOLOGIES = ("a3c", "a2c", "actor_learner", "ray_backend")
pytestmark = pytest.mark.timeout(60)


def _imported_runner_modules(path: Path) -> set[str]:
    """The ``uavrl.runners`` modules ``path`` imports, at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("uavrl.runners."):
            found.add(node.module.removeprefix("uavrl.runners."))
        elif isinstance(node, ast.Import):
            found |= {
                a.name.removeprefix("uavrl.runners.")
                for a in node.names
                if a.name.startswith("uavrl.runners.")
            }
    return found


@pytest.mark.parametrize("topology", TOPOLOGIES)
def test_no_topology_module_imports_another(topology: str) -> None:
    imported = _imported_runner_modules(RUNNERS / f"{topology}.py")
    assert imported & set(TOPOLOGIES) == set()
    assert imported, "the module is built on the shared runner modules"


def test_only_the_registry_imports_the_topologies() -> None:
    importers = {
        path.stem
        for path in RUNNERS.glob("*.py")
        if _imported_runner_modules(path) & set(TOPOLOGIES) and path.stem not in TOPOLOGIES
    }
    assert importers == {"registry"}
