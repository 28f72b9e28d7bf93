"""The layer rule: a module imports only from its own layer or lower ones, with no cycle inside a
layer; function-level imports count. Only settings.py reads the environment, and nothing below the
interfaces calls print(). The README's "Code map" shows the same table."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "trainlab"

# lowest first
LAYERS: dict[str, list[str]] = {
    "base": ["version", "errors", "fileio", "settings", "cpus", "runtime"],
    "core": ["recipes", "images", "preprocess", "readers", "trees", "data", "augment", "models", "optim", "history", "metrics",
             "plots", "space", "handwriting"],
    "engine": ["state", "inference", "callbacks", "progress", "fused", "checkpoint", "distributed", "loop"],
    "records": ["record", "store", "events", "runs"],
    "applications": ["training", "evaluate", "predict", "pictures", "lrfind", "tune", "export"],
    "interfaces": ["cli", "__main__", "__init__", "web"],
}
ENV_READERS = {"settings", "cpus"}  # cpus writes OpenMP's variables before torch loads, before any Settings exists


def layer_of(module: str) -> int:
    top = module.split(".")[0]
    for i, names in enumerate(LAYERS.values()):
        if top in names:
            return i
    raise KeyError(module)


def trainlab_imports(tree: ast.AST) -> set[str]:
    """Every trainlab module a source imports, at any depth (function bodies included)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.removeprefix("trainlab.") for a in node.names if a.name.startswith("trainlab.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "trainlab":
                out |= {f"__init__:{a.name}" for a in node.names}
            elif node.module.startswith("trainlab."):
                out.add(node.module.removeprefix("trainlab."))
    return {_module(m) for m in out} - {"presets", "spaces"}


def _module(m: str) -> str:
    """The layer-table name of an imported module: a top-level module, or web.<module> (the web
    package's modules are separate nodes, so a cycle inside it is found)."""
    if m.startswith("__init__:"):
        return "__init__"
    parts = m.split(".")
    return ".".join(parts[:2]) if parts[0] == "web" and len(parts) > 1 else parts[0]


def violations(sources: dict[str, str]) -> list[str]:
    """Upward imports, cycles inside a layer, environment reads and prints, for {module: source}."""
    problems, edges = [], {}
    for name, src in sources.items():
        tree = ast.parse(src)
        try:
            own = layer_of(name)
        except KeyError:
            problems.append(f"{name}: not assigned to a layer (add it to LAYERS and the README's code map)")
            continue
        edges[name] = set()
        for dep in sorted(trainlab_imports(tree) - {name}):
            if layer_of(dep) > own:
                problems.append(f"{name} ({list(LAYERS)[own]}) imports {dep} ({list(LAYERS)[layer_of(dep)]}): upward")
            elif layer_of(dep) == own:
                edges[name].add(dep)
        problems += _side_effects(name, tree, own)
    return problems + _cycles(edges)


def _side_effects(name: str, tree: ast.AST, layer: int) -> list[str]:
    out = []
    for node in ast.walk(tree):
        if name not in ENV_READERS and isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv") \
                and isinstance(node.value, ast.Name) and node.value.id == "os":
            out.append(f"{name}: reads the environment (only settings.py may)")
        if layer < layer_of("cli") and isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id == "print":
            out.append(f"{name}: calls print() below the interfaces")
    return sorted(set(out))


def _cycles(edges: dict[str, set[str]]) -> list[str]:
    out, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                out.append("cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for n in sorted(edges):
        if n not in state:
            visit(n, [n])
    return out


def package_sources() -> dict[str, str]:
    sources = {p.stem: p.read_text() for p in sorted(PACKAGE.glob("*.py"))}
    sources.update({f"web.{p.stem}": p.read_text() for p in sorted((PACKAGE / "web").glob("*.py"))})
    return sources


def test_the_package_keeps_the_layer_rule():
    assert violations(package_sources()) == []


def test_every_layer_module_exists():
    missing = [m for names in LAYERS.values() for m in names
               if not (PACKAGE / f"{m}.py").is_file() and not (PACKAGE / m / "__init__.py").is_file()]
    assert missing == []


@pytest.mark.parametrize("module, addition, expected", [
    ("data", "\ndef f():\n    from trainlab.cli import app\n", "data (core) imports cli (interfaces): upward"),
    ("metrics", "\nimport trainlab.runs\n", "metrics (core) imports runs (records): upward"),
    ("readers", "\nfrom trainlab.data import DATASETS\n", "cycle: data -> readers -> data"),
    ("loop", "\nimport os\nX = os.environ.get('HOME')\n", "loop: reads the environment (only settings.py may)"),
    ("models", "\ndef f():\n    print('hi')\n", "models: calls print() below the interfaces"),
    ("runs", "\nfrom trainlab import train\n", "runs (records) imports __init__ (interfaces): upward"),
    ("predict", "\nfrom trainlab.web.deps import RunCache\n", "predict (applications) imports web.deps (interfaces): upward"),
    ("web.deps", "\nfrom trainlab.web.app import create_app\n", "cycle: web.app -> web.deps -> web.app"),
])
def test_the_rule_catches_a_violation(module, addition, expected):
    sources = package_sources()
    sources[module] += addition
    found = violations(sources)
    assert any(expected in v for v in found), found


def test_a_new_module_must_be_placed():
    sources = package_sources()
    sources["newthing"] = "x = 1\n"
    assert "newthing: not assigned to a layer" in " ".join(violations(sources))
