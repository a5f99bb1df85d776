"""No import circle in runner/ and launchers/: every import counts, a lazy one inside a function and one under
TYPE_CHECKING too (a circle tied by a type annotation is still two modules that cannot be read apart)."""

import ast
from pathlib import Path
from typing import Dict, List, Set

from helpers.cli import ROOT

PACKAGES = ("runner", "launchers")


def _modules() -> Dict[str, Path]:
    return {f"{p.parent.name}.{p.stem}": p for package in PACKAGES for p in sorted((ROOT / package).glob("*.py"))
            if p.stem != "__init__"}


def _imported(path: Path, known: Set[str]) -> Set[str]:
    """The modules of `known` that a file imports anywhere in it (`from runner import a, b` imports both)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found & known


def _circles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """One path around each circle found by a depth-first walk (none when the imports form a tree)."""
    state, stack, found = {}, [], []

    def visit(name: str) -> None:
        state[name] = "open"
        stack.append(name)
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                found.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name)
    return found


def test_the_circle_finder_finds_a_circle():
    assert _circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_module_of_runner_or_launchers_imports_itself_round_a_circle():
    modules = _modules()
    assert "runner.client" in modules and "runner.server_pool" in modules
    graph = {name: _imported(path, set(modules)) - {name} for name, path in modules.items()}
    assert _circles(graph) == []
