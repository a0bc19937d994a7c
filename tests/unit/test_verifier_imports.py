"""The verifier's modules form layers: no import cycle, one error root.

Static checks over the source (nothing is imported to find the imports):

* every import of a ``verifier`` module by another counts, wherever it is written
  (top level, inside a function, under ``if TYPE_CHECKING:``): a cycle hidden in a
  function or a type-only import is still two modules that cannot be read, tested
  or split one without the other;
* every exception class the package defines descends from
  ``verifier.errors.VerifierError`` (the CLI turns that root into one ``Error:`` line).
"""

from __future__ import annotations

import ast
import importlib
import pathlib

import pytest

PACKAGE = "verifier"
ROOT = pathlib.Path(__file__).resolve().parents[2] / PACKAGE


def _module_name(path: pathlib.Path) -> str:
    return f"{PACKAGE}.{path.stem}" if path.stem != "__init__" else PACKAGE


def _imported(tree: ast.AST, module: str) -> set[str]:
    """The ``verifier`` modules ``module``'s source imports, anywhere in it."""
    package = module if module == PACKAGE else module.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == PACKAGE}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([package, base]).rstrip(".") if base else package
            if base.split(".")[0] != PACKAGE:
                continue
            if base == PACKAGE:  # from . import trustsync
                found |= {f"{PACKAGE}.{alias.name}" for alias in node.names}
            else:
                found.add(base)
    return found - {module}


def import_graph(root: pathlib.Path = ROOT) -> dict[str, set[str]]:
    modules = {_module_name(path): path for path in sorted(root.glob("*.py"))}
    return {
        name: {target for target in _imported(ast.parse(path.read_text("utf-8")), name) if target in modules}
        for name, path in modules.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of ``graph`` as ``[a, b, ..., a]``, or None (depth-first search)."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target):] + [target]
            if target not in state:
                cycle = visit(target)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


@pytest.mark.parametrize(
    ("name", "graph", "cycle"),
    [
        ("no imports", {"a": set(), "b": set()}, None),
        ("a chain", {"a": {"b"}, "b": {"c"}, "c": set()}, None),
        ("two modules", {"a": {"b"}, "b": {"a"}}, ["a", "b", "a"]),
        ("three modules", {"a": {"b"}, "b": {"c"}, "c": {"a"}}, ["a", "b", "c", "a"]),
        ("a cycle off the first path", {"a": {"b"}, "b": set(), "c": {"d"}, "d": {"c"}}, ["c", "d", "c"]),
    ],
)
def test_the_cycle_finder_finds_cycles(name, graph, cycle):
    assert find_cycle(graph) == cycle, name


def test_imports_are_counted_wherever_they_are_written():
    source = """
from __future__ import annotations
from typing import TYPE_CHECKING
from . import trustsync
from .errors import VerifierError
import verifier.scan
if TYPE_CHECKING:
    from .runtime import Outcome
def later():
    from .display import Display
"""
    assert _imported(ast.parse(source), "verifier.output") == {
        "verifier.trustsync", "verifier.errors", "verifier.scan", "verifier.runtime", "verifier.display"}


def test_the_verifier_has_no_import_cycle():
    graph = import_graph()
    assert {"verifier.trustsync", "verifier.runtime", "verifier.errors"} <= set(graph)
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle in verifier/: " + " -> ".join(cycle or [])


def test_errors_imports_nothing_of_the_verifier():
    assert import_graph()["verifier.errors"] == set()


def _exception_classes():
    """Every exception class a verifier module defines (imported, then inspected)."""
    for path in sorted(ROOT.glob("*.py")):
        module = importlib.import_module(_module_name(path))
        for value in vars(module).values():
            if isinstance(value, type) and issubclass(value, BaseException) and value.__module__ == module.__name__:
                yield module.__name__, value


def test_every_verifier_error_is_under_one_root():
    from verifier.errors import VerifierError

    found = list(_exception_classes())
    assert len(found) >= 12, found
    outside = [
        f"{module}.{cls.__name__}"
        for module, cls in found
        if not issubclass(cls, VerifierError)
        # click's own exception: click prints it as one Error: line, exit code EXIT_ERROR
        and (module, cls.__name__) != ("verifier.__main__", "CliError")
    ]
    assert outside == []
    assert len({cls.reason for _, cls in found if issubclass(cls, VerifierError)}) == len(found) - 1  # CliError
