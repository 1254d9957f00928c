"""No two of our modules import each other, directly or round a longer loop, not even inside a
function: a module a newcomer reads should not need the one that needs it. The graph is built
from the source with ``ast`` — every ``import`` and ``from … import`` of our own modules, wherever
it stands — so an import hidden in a function to dodge Python's circular-import error counts."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("annotation", "dialogs", "groundwork", "toolset", "trainer")

# Cycles known today; remove an entry with its cycle. None is left: keep it that way.
KNOWN_CYCLES: set[frozenset[str]] = set()


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" in path.parts:
                continue
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _ours(name: str, known: dict[str, Path]) -> str | None:
    """The module of ours that importing ``name`` loads (``trainer.models.X`` → ``trainer.models``)."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of ours that ``module`` imports, anywhere in its body."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    targets: set[str | None] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets.update(_ours(alias.name, known) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # from . import x, from ..y import z
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:  # "from trainer import services": the module trainer.services
                full = f"{base}.{alias.name}"
                targets.add(full if full in known else _ours(base, known))
    return {target for target in targets if target and target != module}


def import_graph() -> dict[str, set[str]]:
    known = modules()
    return {module: imports(module, path, known) for module, path in known.items()}


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The groups of modules that reach each other (strongly connected, more than one)."""

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for target in graph.get(todo.pop(), ()):
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        return seen

    reach = {module: reachable(module) for module in graph}
    return {
        frozenset({module} | {other for other in reach[module] if module in reach[other]})
        for module in graph
        if module in reach[module]
    }


def test_the_graph_sees_imports_inside_functions() -> None:
    graph = import_graph()

    assert "groundwork.celery" in graph["groundwork.queueing"]  # imported inside a function
    assert "trainer.services.requests" in graph["trainer.api"]  # from trainer.services import requests
    assert "trainer.models" in graph["trainer.selectors"]


def test_no_module_imports_one_that_imports_it() -> None:
    found = cycles(import_graph())

    assert {cycle for cycle in found if cycle not in KNOWN_CYCLES} == set()
    assert KNOWN_CYCLES - found == set(), "a known cycle is gone: remove it from KNOWN_CYCLES"
