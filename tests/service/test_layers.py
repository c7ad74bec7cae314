"""The domain services import each other in layers: no circle, no upward import.

Imports are read from the source with `ast`, every one of them: module level, inside
functions, and under `if TYPE_CHECKING:` (no exception is allowed for those; a service that
needs the type of a higher one takes a Protocol instead, as `energy.service.EnergyContext`
does). Modules outside the layer map are followed through, so a helper module cannot carry
an upward import for a service either.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# Lowest first. A module may import only modules of lower layers (same layer included: no).
LAYERS: list[tuple[str, ...]] = [
    ("scheduler.webhooks.service",),
    (
        "scheduler.budgets.service",
        "scheduler.carbon.service",
        "scheduler.datasets.service",
        "scheduler.teams.service",
    ),
    # Reads and accounting the life cycle builds on.
    ("scheduler.workers.fleet", "scheduler.energy.service"),
    # Every state change, the history and the reservation ledger.
    ("scheduler.jobs.lifecycle",),
    # The scheduling context: plans, promotes and replans through the life cycle.
    ("scheduler.scheduling.service",),
    # Submission and cancellation; the worker protocol's side of a job.
    ("scheduler.jobs.service",),
    ("scheduler.workers.service",),
]
LAYER_OF = {module: index for index, layer in enumerate(LAYERS) for module in layer}


def _module_file(module: str) -> Path | None:
    path = ROOT.joinpath(*module.split("."))
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    return None


def imports_of(module: str) -> set[str]:
    """Every `scheduler.*` module that `module`'s source imports, wherever the import is."""
    path = _module_file(module)
    assert path is not None, module
    return imports_in(path.read_text())


def imports_in(source: str) -> set[str]:
    """Every `scheduler.*` module an import anywhere in `source` loads."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from scheduler.jobs import lifecycle` imports the submodule, when it is one.
            names = [
                f"{node.module}.{alias.name}"
                if _module_file(f"{node.module}.{alias.name}")
                else node.module
                for alias in node.names
            ]
        for name in names:
            if name.split(".")[0] != "scheduler":
                continue
            parts = name.split(".")
            # Importing a module runs its packages' __init__ too.
            found.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return {name for name in found if _module_file(name) is not None}


def reached_services(module: str) -> set[str]:
    """The layered modules `module` imports, directly or through modules outside the map."""
    reached: set[str] = set()
    seen = {module}
    stack = [module]
    while stack:
        for imported in imports_of(stack.pop()):
            if imported in seen:
                continue
            seen.add(imported)
            if imported in LAYER_OF:
                reached.add(imported)
            else:
                stack.append(imported)
    return reached


def test_every_layered_module_exists() -> None:
    missing = [module for module in LAYER_OF if _module_file(module) is None]
    assert missing == []


@pytest.mark.parametrize("module", sorted(LAYER_OF))
def test_imports_only_lower_layers(module: str) -> None:
    upward = sorted(
        f"{module} (layer {LAYER_OF[module]}) imports {other} (layer {LAYER_OF[other]})"
        for other in reached_services(module)
        if LAYER_OF[other] >= LAYER_OF[module]
    )
    assert upward == []


def test_the_check_sees_function_local_and_type_checking_imports() -> None:
    """The kinds of import that held the old circle together are all found."""
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from scheduler.scheduling.service import Scheduling\n"
        "def claim():\n"
        "    from scheduler.workers import service\n"
        "    if True:\n"
        "        import scheduler.jobs.service\n"
    )
    assert {
        "scheduler.scheduling.service",
        "scheduler.workers.service",
        "scheduler.jobs.service",
    } <= imports_in(source)
    # And on a real module: the scheduling service imports the life cycle and the fleet.
    assert {"scheduler.jobs.lifecycle", "scheduler.workers.fleet"} <= imports_of(
        "scheduler.scheduling.service"
    )
