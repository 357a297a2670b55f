"""The package's layering: no import loops, no imports of sepconv inside functions, every module
importable on its own in a fresh interpreter.

Imports are read from the source (module level and inside functions; ``if TYPE_CHECKING:`` blocks
excepted, since they never run). Inside functions only optional or heavy third-party modules may
be imported (the plotting library, optional runtimes): an intra-package import inside a function
is how import loops hide.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "sepconv"
# Third-party modules that may be imported inside functions: heavy, and only some commands need them.
# onnxruntime.quantization: ~1-3 s to import, and only `export --int8` needs it.
LAZY_ALLOWED = {"matplotlib", "openvino", "onnxruntime.quantization"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    # __main__ modules run the command line when imported; they are entry points, not modules.
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py")) if p.name != "__main__.py"}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, bool, int]]:
    """(imported module, inside a function?, line) for every import statement of a module."""
    tree = ast.parse(path.read_text(), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: list[tuple[str, bool, int]] = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for other in child.orelse:
                    visit(other, in_function)
                continue
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                found.extend((alias.name, in_function, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - child.level + 1]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    found.append((sub if sub in known else target, in_function, child.lineno))
            visit(child, inner)

    visit(tree, False)
    return found


def test_no_import_loops_and_no_sepconv_imports_inside_functions() -> None:
    mods = modules()
    known = set(mods)
    graph: dict[str, set[str]] = {}
    lazy: list[str] = []
    for name, path in mods.items():
        edges = set()
        for target, in_function, line in imports(name, path, known):
            top = target.split(".")[0]
            if top == PACKAGE:
                edges.add(target)
                if in_function:
                    lazy.append(f"{name}:{line} imports {target} inside a function")
            elif in_function and not {top, target} & LAZY_ALLOWED and top not in sys.stdlib_module_names:
                lazy.append(f"{name}:{line} imports {target} inside a function")
        graph[name] = {e for e in edges if e in known and e != name}
    lazy_report = "\n".join(lazy)

    # Tarjan's strongly connected components: any component of two or more modules is a loop.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    loops: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                loops.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in graph:
        if v not in index:
            connect(v)
    assert not loops, "import loops:\n" + "\n".join(" -> ".join(c) for c in loops)
    assert not lazy, lazy_report


def test_every_module_imports_alone_in_a_fresh_interpreter_leaf_first() -> None:
    mods = modules()
    known = set(mods)
    graph = {
        n: {t for t, _, _ in imports(n, p, known) if t in known and t != n and t.startswith(PACKAGE)}
        for n, p in mods.items()
    }
    order: list[str] = []
    done: set[str] = set()

    def place(v: str) -> None:
        if v in done:
            return
        done.add(v)
        for w in sorted(graph[v]):
            place(w)
        order.append(v)

    for v in sorted(graph):
        place(v)
    code = "import importlib, sys\nfor name in sys.argv[1:]:\n    importlib.import_module(name)\n"
    proc = subprocess.run([sys.executable, "-c", code, *order], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
