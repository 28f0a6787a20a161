"""The import graph of ``stripe_bridge``, drawn from the source: no cycles, a lean request path.

A cycle means two modules that cannot be read (or imported) one without the other; the
deploy package had three, from files split by size rather than by what they render. The
request path is what a webhook function imports on a cold start: it must not pull in
deploy-time code, the billing consumers or the operators' commands.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest
from stripe_bridge.billing.catalog import BILLING_FUNCTIONS, BillingFunction
from stripe_bridge_testing.repo import REPO_ROOT

PACKAGE = "stripe_bridge"
SOURCE = REPO_ROOT / "shared" / PACKAGE
#: What a webhook function imports to answer Stripe (written as prefixes: the modules may
#: become packages).
REQUEST_PATH = tuple(
    f"{PACKAGE}.{name}"
    for name in (
        "http",
        "webhook",
        "ingest",
        "runtime",
        "jetstream",
        "envelope",
        "signature",
        "message",
        "translations",
        "idempotency",
        "metrics",
        "push",
        "server",
        "config",
        "logsetup",
        "logjson",
        "inbox",
        "redact",
        "registry",
    )
)
#: Deploy-time code, the billing consumers, the CLI and the operators' jobs.
OFF_THE_REQUEST_PATH = tuple(
    f"{PACKAGE}.{name}"
    for name in (
        "deploy",
        "billing",
        "commands",
        "cli",
        "ops",
    )
)
#: The operations wing serves billing and the CLI and must not import them (nor deploy).
OPS = f"{PACKAGE}.ops"
ABOVE_OPS = tuple(f"{PACKAGE}.{name}" for name in ("billing", "commands", "cli", "deploy"))
#: Never in a billing function's cold start: the operators' jobs, the CLI, deploy code.
OFF_THE_BILLING_FUNCTIONS = tuple(
    f"{PACKAGE}.{name}" for name in ("ops", "commands", "cli", "deploy")
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(tree: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import statement, also inside functions (they run too), but not type-only ones."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            yield from (n for orelse in node.orelse for n in _imports_of(orelse))
            continue
        yield from _imports_of(node)


def _imports_of(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node
    else:
        yield from _imports(node)


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``stripe_bridge`` modules it imports (``from pkg import mod`` included)."""
    files = {_module_name(path): path for path in SOURCE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        targets: set[str] = set()
        for node in _imports(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
                continue
            base = package.split(".")
            if node.level:
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            targets.add(origin)
            # ``from pkg import mod`` imports the module ``pkg.mod``.
            targets.update(f"{origin}.{alias.name}" for alias in node.names)
        graph[module] = {t for t in targets if t in files and t != module}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a list of modules (first repeated last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(graph):
        if module not in state and (cycle := visit(module)):
            return cycle
    return None


def reachable(graph: dict[str, set[str]], start: str) -> dict[str, str]:
    """Every module ``start`` imports, directly or not, with the module importing it first."""
    seen: dict[str, str] = {}
    todo = [start]
    while todo:
        module = todo.pop()
        for target in sorted(graph[module]):
            if target not in seen and target != start:
                seen[target] = module
                todo.append(target)
    return seen


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def test_the_graph_sees_the_imports_it_must() -> None:
    graph = import_graph()
    # Relative, ``from . import``, lazy (inside a function) imports are all edges.
    assert f"{PACKAGE}.deploy.k8s" in graph[f"{PACKAGE}.deploy.knative"]
    assert f"{PACKAGE}.registry" in graph[f"{PACKAGE}.webhook"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


@pytest.mark.parametrize("entry", REQUEST_PATH)
def test_the_request_path_imports_no_deploy_billing_or_ops_code(entry: str) -> None:
    graph = import_graph()
    starts = [m for m in graph if _under(m, (entry,))]
    assert starts, f"{entry} is not in the package any more: update REQUEST_PATH"
    arrows = []
    for start in starts:
        for module, importer in reachable(graph, start).items():
            if _under(module, OFF_THE_REQUEST_PATH):
                arrows.append(f"{start}: {importer} -> {module}")
    assert not arrows, "\n".join(arrows)


@pytest.mark.parametrize("function", BILLING_FUNCTIONS, ids=lambda fn: fn.name)
def test_the_billing_functions_import_no_ops_commands_or_deploy_code(
    function: BillingFunction,
) -> None:
    # The USAGE stream's names live in ``streams`` for them and for redrive alike.
    graph = import_graph()
    start = f"{PACKAGE}.billing.{function.module}"
    arrows = [
        f"{start}: {importer} -> {module}"
        for module, importer in reachable(graph, start).items()
        if _under(module, OFF_THE_BILLING_FUNCTIONS)
    ]
    assert not arrows, "\n".join(arrows)


def test_the_ops_wing_imports_no_billing_commands_or_deploy_code() -> None:
    graph = import_graph()
    starts = [m for m in graph if _under(m, (OPS,))]
    assert f"{OPS}.redrive" in starts and f"{OPS}.backup" in starts
    arrows = [
        f"{start}: {importer} -> {module}"
        for start in starts
        for module, importer in reachable(graph, start).items()
        if _under(module, ABOVE_OPS)
    ]
    assert not arrows, "\n".join(arrows)
