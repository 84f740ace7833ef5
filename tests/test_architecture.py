"""The import rule of docs/architecture.md, checked by reading every module's imports (function-local ones too).

Each module belongs to a component: `pipeline.<package>`, `engines`, `trainer`, or an entry point (run.py,
enroll.py, bench/, the trainer's CLI). A component may import only the components the rule lists, and no two
modules may import each other, directly or round a longer loop.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
OURS = ("pipeline", "engines", "trainer", "bench", "run", "enroll", "serve")
PIPELINE = {f"pipeline.{p}" for p in ("core", "detect", "recognise", "gallery", "redis", "video", "events",
                                             "unknowns", "api", "mqtt", "app", "cameras")}
EVERYTHING = {*PIPELINE, "engines", "trainer", "bench", "pipeline"}

# component -> the components it may import (besides itself). Keep in step with docs/architecture.md.
ALLOWED: dict[str, set[str]] = {
    "pipeline.core": set(),
    "engines": {"pipeline.core"},
    "trainer": {"pipeline.core", "engines"},
    "pipeline.detect": {"pipeline.core", "engines"},
    "pipeline.gallery": {"pipeline.core"},
    "pipeline.redis": {"pipeline.core"},
    # Camera registry and leases: plain Redis scripts, no gallery (run.py --worker and enroll.py wire it in).
    "pipeline.cameras": {"pipeline.core", "pipeline.redis"},
    "pipeline.recognise": {"pipeline.core", "engines", "pipeline.gallery"},
    "pipeline.events": {"pipeline.core", "pipeline.gallery"},
    "pipeline.unknowns": {"pipeline.core", "pipeline.gallery"},
    # The console and the MQTT bridge receive built services (serve.py builds them through pipeline.app).
    "pipeline.api": {"pipeline.core", "pipeline.gallery", "pipeline.unknowns", "pipeline.events", "pipeline.redis"},
    "pipeline.mqtt": {"pipeline.core", "pipeline.events", "pipeline.redis"},
    "pipeline.video": {"pipeline.core", "pipeline.recognise", "pipeline.gallery", "pipeline.events",
                       "pipeline.unknowns"},
    # The composition root builds everything; from the trainer it needs only the architectures (torch-cuda).
    "pipeline.app": (PIPELINE - {"pipeline.app"}) | {"engines", "trainer.models"},
    # Entry points: the CLIs and benchmarks use the composition root and whatever they measure.
    "entry": EVERYTHING,
}
ENTRY_POINTS = {"run", "enroll", "serve", "trainer.__main__"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def component(module: str) -> str:
    if module in ENTRY_POINTS or module.split(".")[0] == "bench":
        return "entry"
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "pipeline" and len(parts) > 1 else parts[0]


def is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported(path: Path, module: str) -> set[str]:
    """Every module of ours that `path` imports, at any depth of the file."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            submodules = {f"{base}.{alias.name}" for alias in node.names if is_module(f"{base}.{alias.name}")}
            found |= submodules
            if len(submodules) < len(node.names):  # some names come from the package's __init__ itself
                found.add(base)
    return {m for m in found if m.split(".")[0] in OURS and m != module}


def graph() -> dict[str, set[str]]:
    files = [p for p in REPO.glob("**/*.py") if p.relative_to(REPO).parts[0] in {"pipeline", "engines", "trainer", "bench"}]
    files += [p for p in (REPO / "run.py", REPO / "enroll.py", REPO / "serve.py") if p.is_file()]
    return {module_name(p): imported(p, module_name(p)) for p in files if ".venv" not in p.parts}


GRAPH = graph()


def allowed(source: str, target: str) -> bool:
    mine, theirs = component(source), component(target)
    if mine == theirs or theirs == "pipeline":  # `pipeline` itself is an empty namespace package
        return True
    rule = ALLOWED[mine]
    return theirs in rule or any(target == r or target.startswith(r + ".") for r in rule)


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_module_imports_only_what_the_rule_allows(module):
    wrong = sorted(t for t in GRAPH[module] if not allowed(module, t))
    assert not wrong, f"{module} ({component(module)}) may not import {wrong}: see docs/architecture.md"


def test_no_import_cycles():
    """Tarjan's strongly connected components over module -> module edges (a package's __init__ included)."""
    nodes = set(GRAPH)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:  # the graph has ~200 nodes: recursion depth is fine
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in GRAPH.get(node, ()):
            if nxt not in nodes:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            members = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                members.append(member)
                if member == node:
                    break
            if len(members) > 1:
                cycles.append(sorted(members))

    for node in sorted(nodes):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles: {cycles}"


def test_the_rule_sees_local_imports(tmp_path):
    """The reader must see imports inside functions, or a hidden circle would pass."""
    source = tmp_path / "sample.py"
    source.write_text("def f():\n    from pipeline.app.services import open_gallery\n")
    assert "pipeline.app.services" in imported(source, "sample")
    assert not allowed("engines.registry", "pipeline.app.services")
    assert not allowed("pipeline.core.errors", "pipeline.gallery.store")
