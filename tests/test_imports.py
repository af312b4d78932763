"""The package's import graph: no circles, and arrows only point down the layers of STYLE.md.

Every module under ``src/sparta`` is parsed with :mod:`ast` (nothing is imported). An edge ``a -> b`` is an
``import``/``from ... import`` in ``a`` of a module ``b`` of the package (``from sparta.x import name`` counts
as importing ``sparta.x.name`` when that is a module, else ``sparta.x``). The rule:

* **eager** imports (at module level, including those under a module-level ``if``/``try``, e.g. an
  ``if __name__ == "__main__":`` block) must form no cycle: such a cycle makes import order matter;
* **lazy** imports (inside a function or method, used to keep ``sparta --help`` free of torch) must form no
  cycle either when added to the eager ones, since a circle that only runs later is still two modules that
  each need the other;
* both kinds respect the layer order ``kernels -> nn -> topology/optim/rundir -> train -> rl/parallel/grid -> cli``:
  a module imports only modules of its own layer or lower ones. ``sparta`` itself, ``sparta._lazy`` and
  ``sparta.console`` (the standard-library-only helpers every command shares) are the base layer; imports of a
  package's ``__init__`` by the package's own modules are within one layer. ``sparta/__init__.py`` names its
  lazy exports as strings, which are not imports;
* imports under ``if TYPE_CHECKING:`` never run (annotations only, e.g. ``sparta.nn.fused_step`` naming
  ``sparta.nn.mlp._Structure``) and are not edges.

The lazy edges are listed by ``python tests/test_imports.py``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
LAYERS = {"sparta": 0, "sparta._lazy": 0, "sparta.console": 0, "sparta.__main__": 6,
          "kernels": 1, "nn": 2, "topology": 3, "optim": 3, "rundir": 3, "train": 4, "rl": 5, "parallel": 5, "grid": 5,
          "sparta.cli": 6}
LONG_FILES = {"sparta/kernels/fused.py"}  # numba kernels kept together (one compilation unit), see the README's layout
MAX_LINES = 600


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "sparta").rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def _type_checking(node: ast.AST) -> bool:
    """``if TYPE_CHECKING:`` (or ``typing.TYPE_CHECKING``): a block only type checkers read."""
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING"
                                         or isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(node: ast.AST, lazy: bool = False):
    """``(import node, lazy)`` for every import under ``node`` that runs; lazy: inside a function or lambda."""
    for child in ast.iter_child_nodes(node):
        if _type_checking(child):
            continue
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, lazy
        yield from _imports(child, lazy or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda))


def edges() -> dict[tuple[str, str], str]:
    """``{(importer, imported): "eager" | "lazy"}`` over the package's modules (eager wins)."""
    known = modules()
    out: dict[tuple[str, str], str] = {}
    for mod, path in known.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node, lazy in _imports(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
            for t in targets:
                target = _resolve(t, known) if t.startswith("sparta") else None
                if target is not None and target != mod and out.get((mod, target)) != "eager":
                    out[(mod, target)] = "lazy" if lazy else "eager"
    return out


def layer(mod: str) -> int:
    if mod in LAYERS:
        return LAYERS[mod]
    return LAYERS[mod.split(".")[1]]


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def dfs(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state:
                found = dfs(v)
                if found:
                    return found
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state:
            found = dfs(u)
            if found:
                return found
    return None


def graph_of(kinds: tuple[str, ...]) -> dict[str, set[str]]:
    g: dict[str, set[str]] = {}
    for (a, b), kind in edges().items():
        if kind in kinds:
            g.setdefault(a, set()).add(b)
    return g


def test_the_graph_sees_the_imports_it_should():
    """The parser finds eager and lazy edges (a check that the tests below look at something)."""
    e = edges()
    assert e[("sparta.train.runs", "sparta.train.memory")] == "eager"
    assert e[("sparta.cli", "sparta.train.runs")] == "lazy"
    assert e[("sparta.cli", "sparta.grid.cli")] == "lazy"
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("kinds", [("eager",), ("eager", "lazy")], ids=["module-level", "with-lazy"])
def test_no_import_cycle(kinds):
    cycle = find_cycle(graph_of(kinds))
    assert cycle is None, "import circle: " + " -> ".join(cycle or [])


def test_imports_point_down_the_layers():
    upward = sorted(f"{a} -> {b} ({kind})" for (a, b), kind in edges().items()
                    if layer(b) > layer(a) and not b == a.rpartition(".")[0])
    assert not upward, "imports of a higher layer:\n" + "\n".join(upward)


def test_no_module_too_long():
    long = {str(p.relative_to(SRC)): n for p in (SRC / "sparta").rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES and str(p.relative_to(SRC)) not in LONG_FILES}
    assert not long, f"modules above {MAX_LINES} lines: {long}"


MOVED = {"BIG_WORKSPACE_BYTES": "fused_step", "MAX_FREE_WORKSPACES": "fused_step", "UPDATE_BLOCK": "fused_step"}


def test_moved_settings_are_set_where_they_live():
    """The fused step's settings moved from ``sparta.nn.mlp`` to ``sparta.nn.fused_step``: setting them on
    ``sparta.nn.mlp`` (a plain assignment, which would not fail) would change nothing. No test or benchmark does."""
    import re

    root = SRC.parent
    stale = [f"{p.relative_to(root)}: {m.group(0)}" for p in [*root.glob("tests/**/*.py"), *root.glob("benchmarks/*.py")]
             for m in re.finditer(r"(mlp_module|\bM|\bmlp)(\.|, \")(" + "|".join(MOVED) + r")\b", p.read_text())]
    assert not stale, stale


if __name__ == "__main__":
    for (a, b), kind in sorted(edges().items()):
        if kind == "lazy":
            print(f"{a} -> {b} (lazy)")
