"""The calls flow one way: no module of controlplane/, deployments/, regions/ or workers/ imports,
directly or through others, a module that imports it back, counting imports inside functions;
and nothing imports the Celery tasks (work is enqueued by task name)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("controlplane", "deployments", "regions", "workers")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            if "migrations" not in path.parts:
                found[_module_name(path)] = path
    return found


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every project module ``name`` imports, at any depth of its code (functions included)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            candidates = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from a import b``: the module a.b when there is one, else a.
            candidates = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for candidate in candidates:
            while candidate and candidate not in known:
                candidate = candidate.rpartition(".")[0]
            # (Importing a.b.c runs a and a.b first: a module's own packages are not edges.)
            if candidate and candidate != name and not name.startswith(candidate + "."):
                targets.add(candidate)
    return targets


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules around it, or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return stack[stack.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_the_graph_sees_imports_inside_functions():
    graph = _graph()
    # An import inside a function is an edge like any other.
    source = "def f():\n    from deployments import models\n"
    path = ROOT / "tests" / "_nested_import_probe.py"
    path.write_text(source)
    try:
        assert "deployments.models" in _imports("probe", path, set(graph))
    finally:
        path.unlink()


def test_no_module_imports_itself_back_even_from_inside_a_function():
    cycle = _cycle(_graph())
    assert cycle is None, "import circle: " + " → ".join(cycle)


def test_nothing_imports_the_celery_tasks():
    importers = sorted(name for name, targets in _graph().items() if "workers.tasks" in targets)
    assert importers == []


def test_nothing_below_the_engine_imports_a_service_or_a_front_door():
    graph = _graph()
    below = [n for n in graph if n.startswith(("deployments.engine", "regions.", "controlplane.notify"))]
    upward = (
        "deployments.services",
        "deployments.api",
        "deployments.views",
        "deployments.webhooks",
        "workers",
    )
    wrong = {n: sorted(t for t in graph[n] if t.startswith(upward)) for n in below}
    assert {n: t for n, t in wrong.items() if t} == {}
