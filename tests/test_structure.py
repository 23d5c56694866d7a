"""The package's shape, checked statically: no import cycles, no long functions, Flower internals in one adapter."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

PACKAGE = Path(__file__).resolve().parent.parent / "fedcl"
MAX_FUNCTION_LINES = 60
#: Flower modules outside its public app API (flwr.app, flwr.clientapp, flwr.serverapp, flwr.simulation, flwr.common):
#: only the adapter may import them
FLOWER_INTERNALS = ("flwr.proto", "flwr.supercore", "flwr.common.serde_utils", "flwr.common.constant", "flwr.server", "flwr.client",
                    "flwr.simulation.")
ADAPTER = "fedcl.federation.flower_adapter"


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


def _type_checking_only(tree: ast.Module) -> set[int]:
    """ids of import nodes inside ``if TYPE_CHECKING:`` blocks (never executed, so never a cycle)."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", getattr(node.test, "attr", "")) == "TYPE_CHECKING":
            skipped.update(id(child) for child in ast.walk(node))
    return skipped


def _imports(tree: ast.Module) -> set[str]:
    """Every module name a module imports at run time (``from a import b`` counts a and a.b)."""
    found = set()
    skipped = _type_checking_only(tree)
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    cycles.append(sorted(component))
    return cycles


def test_cycle_finder_finds_a_cycle():
    assert import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert import_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    modules = _modules()
    graph = {name: {i for i in _imports(tree) if i in modules and i != name} for name, tree in modules.items()}
    assert import_cycles(graph) == []


def test_no_function_over_60_lines():
    long = [f"{name}.{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for name, tree in _modules().items() for node in ast.walk(tree)
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def _imported_modules(tree: ast.Module) -> set[str]:
    """Modules named by import statements (not the names imported from them)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def is_flower_internal(module: str) -> bool:
    return any(module == p or module.startswith(p if p.endswith(".") else p + ".") for p in FLOWER_INTERNALS)


def test_flower_internal_check():
    assert is_flower_internal("flwr.supercore.inflatable") and is_flower_internal("flwr.server")
    assert not is_flower_internal("flwr.serverapp") and not is_flower_internal("flwr.simulation")


def test_flower_internals_only_in_the_adapter():
    users = sorted(name for name, tree in _modules().items() if name != ADAPTER
                   and any(is_flower_internal(m) for m in _imported_modules(tree)))
    assert users == []
