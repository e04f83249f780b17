"""No import circles: the project's modules, read with ``ast``, import each other in one direction only.

Every import of a project module counts -- at the top, inside a function, under ``if TYPE_CHECKING`` -- because
a circle hidden in a function still ties two modules into one. A second test imports every module of ``shared/``
and ``serving/`` in a fresh interpreter in dependency order, and checks that the modules the gunicorn master and
the batch scorer's worker processes import never import Paddle.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("shared", "serving", "training", "bench", "scripts")

# What the gunicorn master (serving/gunicorn.conf.py, serving/reload.py's module level) and the batch scorer's
# spawn workers (serving.batch and what it imports at the top) load: Paddle must stay out of them.
PADDLE_FREE = ("serving.config", "serving.reload", "serving.batch", "serving.routing", "serving.uploads",
               "serving.answers", "serving.card_facts", "serving.explain", "serving.loadtest", "serving.healthcheck",
               "shared.model_outputs")


def project_modules() -> dict[str, Path]:
    """``{dotted module name: file}`` of every Python file of the project's packages."""
    modules = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            modules[name] = path
    return modules


def _imported(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """The dotted names an ``import`` / ``from ... import`` statement may refer to (modules or their members)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:  # relative: from the module's own package, one level up per extra dot
        package = module.split(".") if is_package else module.split(".")[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join([*package, *([base] if base else [])])
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def import_graph() -> dict[str, set[str]]:
    """``{module: the project modules it imports}``, from every import statement anywhere in each file."""
    modules = project_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        targets: set[str] = set()
        for node in ast.walk(tree):
            for dotted in _imported(node, name, path.name == "__init__.py"):
                # "from serving import batch" names the module serving.batch; "from serving.batch import Row" a
                # member of serving.batch: take the longest prefix that is a project module.
                parts = dotted.split(".")
                for end in range(len(parts), 0, -1):
                    candidate = ".".join(parts[:end])
                    if candidate in modules:
                        if candidate != name:
                            targets.add(candidate)
                        break
        graph[name] = targets
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import circles: one path ``a -> b -> ... -> a`` per strongly connected group of modules (Tarjan).

    A group of more than two modules may hold more circles than the one shown; the path names its first module.
    """
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_one_cycle(graph, group) for group in groups]


def _one_cycle(graph: dict[str, set[str]], group: list[str]) -> list[str]:
    """A shortest circle through the first module of a strongly connected group, as a path back to it."""
    members, start = set(group), group[0]
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(graph[v] & members):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    raise AssertionError(f"no circle through {start} in {group}")  # pragma: no cover - Tarjan's groups have one


def dependency_order(graph: dict[str, set[str]], names: list[str]) -> list[str]:
    """``names`` with every module after the modules it imports (graph restricted to ``names``)."""
    wanted, done, order = set(names), set(), []

    def visit(v: str) -> None:
        if v in done:
            return
        done.add(v)
        for w in sorted(graph[v] & wanted):
            visit(w)
        order.append(v)

    for v in sorted(names):
        visit(v)
    return order


def test_the_graph_sees_imports_inside_functions_and_relative_ones():
    graph = import_graph()
    assert "serving.model_set" in graph["serving.batch"]  # imported inside _score (Paddle only when needed)
    assert "training.simulator.params" in graph["training.simulator.api"]  # "from .params import ..."
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_import_circles(package):
    cycles = [c for c in find_cycles(import_graph()) if any(m == package or m.startswith(package + ".") for m in c)]
    assert not cycles, "import circles:\n" + "\n".join("  " + " -> ".join(c) for c in cycles)


def _import_in_a_fresh_interpreter(names: list[str], then: str) -> subprocess.CompletedProcess:
    """Import ``names`` in order in a new Python (printing each), then run the code ``then``."""
    code = ("import importlib, json, sys\n"
            "for name in json.loads(sys.argv[1]):\n"
            "    importlib.import_module(name)\n"
            "    print(name, flush=True)\n" + then)
    return subprocess.run([sys.executable, "-c", code, json.dumps(names)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_shared_and_serving_import_in_dependency_order_in_a_fresh_interpreter():
    graph = import_graph()
    names = [m for m in graph if m.split(".")[0] in ("shared", "serving") and "gunicorn" not in m]
    order = dependency_order(graph, names)
    assert order.index("serving.routing") < order.index("serving.predictor") < order.index("serving.model_set")
    run = _import_in_a_fresh_interpreter(order, "")
    assert run.returncode == 0, f"import failed after {run.stdout.split()[-1:]}:\n{run.stderr[-3000:]}"
    assert run.stdout.split() == order


def test_the_master_and_the_batch_workers_never_import_paddle():
    run = _import_in_a_fresh_interpreter(
        list(PADDLE_FREE), "print(sorted(m for m in sys.modules if m.split('.')[0] == 'paddle')[:5])\n")
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split("\n")[-2] == "[]", "Paddle imported by " + ", ".join(PADDLE_FREE) + ": " + run.stdout
