"""The architecture, checked: trainlab's top-level modules and packages each sit in one layer, and a
module imports only from its own layer or lower ones (function-level imports count), with no cycle
between modules of a layer. Inside a package, modules import each other directly, never through
the package's own `__init__`, and a package's `__init__` only re-exports its own modules. Only
settings.py (and cpus.py, before torch loads) read the environment; nothing below the interfaces
prints; `load_settings()` is called only by the interfaces and by the public API's own functions
(the names `trainlab` exports); no module does work at import beyond defining things.
The tests at the bottom show that each rule can fail."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "trainlab"

# lowest first; a name is a top-level module or a package (every module inside it is in its layer),
# or a module of a package placed apart from the rest of its package (the longest name wins)
LAYERS: dict[str, list[str]] = {
    "base": ["version", "errors", "fileio", "settings", "lazy", "system"],
    "core": ["recipes", "models", "optim", "metrics", "plots", "history", "data"],
    "engine": ["engine"],
    "records": ["runs"],
    "applications": ["training", "tuning", "analysis", "serving", "data.health"],
    "interfaces": ["cli", "__main__", "__init__", "web", "serving.server", "serving.open_inference"],
}
DATA_FOLDERS = {"presets", "tuning.spaces"}  # YAML shipped with the package, no code
ENV_READERS = {"settings", "system.process_wide"}  # OpenMP's variables are written before torch loads, before any Settings exists
MAX_TOP_LEVEL_MODULES = 14


def layer_of(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        name = ".".join(parts[:n])
        for i, names in enumerate(LAYERS.values()):
            if name in names:
                return i
    raise KeyError(module)


def public_functions() -> set[str]:
    """The functions `trainlab` exports (its lazily loaded names): the edge where a notebook user
    arrives without Settings, so they may read them."""
    src = (PACKAGE / "__init__.py").read_text()
    return set(re.findall(r'"(\w+)": "trainlab\.', src))


def trainlab_imports(tree: ast.AST, package: str | None) -> set[str]:
    """Every trainlab module a source imports, at any depth (function bodies included), as a node
    name: `data.registry`, `cpus`; `from trainlab.data import x` is the package's `__init__`, `data`,
    unless `x` is one of its modules."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name.removeprefix("trainlab.") for a in node.names if a.name.startswith("trainlab.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module == "trainlab":
                out.add("__init__")
            elif node.module.startswith("trainlab."):
                mod = node.module.removeprefix("trainlab.")
                subs = {f"{mod}.{a.name}" for a in node.names if (PACKAGE / mod.replace(".", "/") / f"{a.name}.py").is_file()}
                out |= subs or {mod}
    return out - DATA_FOLDERS


def violations(sources: dict[str, str], public: set[str] | None = None) -> list[str]:
    """Every broken rule, for {node name: source}."""
    public = public_functions() if public is None else public
    problems, edges = [], {}
    packages = {n.rsplit(".", 1)[0] for n in sources if "." in n} | {n for n in sources if f"{n}." in " ".join(sources)}
    for name, src in sources.items():
        tree = ast.parse(src)
        try:
            own = layer_of(name)
        except KeyError:
            problems.append(f"{name}: not assigned to a layer (add it to LAYERS and to the docs' architecture page)")
            continue
        edges[name] = set()
        package = name.rsplit(".", 1)[0] if "." in name else None
        for dep in sorted(trainlab_imports(tree, package) - {name}):
            if dep not in sources:
                continue  # a name the import resolves at run time (its own test would fail)
            if layer_of(dep) > own:
                problems.append(f"{name} ({list(LAYERS)[own]}) imports {dep} ({list(LAYERS)[layer_of(dep)]}): upward")
            elif layer_of(dep) == own:
                edges[name].add(dep)
            if package is not None and dep == package:
                problems.append(f"{name} imports its own package's __init__ ({package}); import the module directly")
            if name in packages and name != "__init__" and not dep.startswith(f"{name}.") and dep != "lazy":
                problems.append(f"{name}/__init__ imports {dep}: a package's __init__ re-exports only its own modules")
        problems += _side_effects(name, tree, own, public)
    return problems + _cycles(edges)


def _side_effects(name: str, tree: ast.Module, layer: int, public: set[str]) -> list[str]:
    out = []
    interfaces = layer >= layer_of("cli")
    for node in ast.walk(tree):
        if name not in ENV_READERS and isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv", "putenv") \
                and isinstance(node.value, ast.Name) and node.value.id == "os":
            out.append(f"{name}: reads the environment (only settings.py may)")
        if not interfaces and isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "print":
            out.append(f"{name}: calls print() below the interfaces")
    if not interfaces and name != "settings":
        for fn in _functions_calling(tree, "load_settings"):
            if fn not in public:
                out.append(f"{name}.{fn}: calls load_settings() (take a Settings from the caller; only the public API "
                           f"and the interfaces read them)")
    if not interfaces:  # the CLI's command registration (typer) is its definition
        for stmt in tree.body:
            if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call):
                out.append(f"{name}: does work at import (line {stmt.lineno}); do it when a function is called")
    return sorted(set(out))


def _functions_calling(tree: ast.Module, callee: str) -> set[str]:
    """Names of the top-level functions (and methods, as Class.method) whose body calls `callee`."""
    found = set()
    for node in tree.body:
        defs = [(node.name, node)] if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else \
            [(f"{node.name}.{f.name}", f) for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))] \
            if isinstance(node, ast.ClassDef) else []
        for label, fn in defs:
            if any(isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id == callee for c in ast.walk(fn)):
                found.add(label)
    if any(isinstance(c, ast.Call) and isinstance(c.func, ast.Name) and c.func.id == callee
           for stmt in tree.body if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
           for c in ast.walk(stmt)):
        found.add("<module>")
    return found


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


def node_name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" and len(rel.parts) > 1 else rel.parts
    return ".".join(parts)


def package_sources() -> dict[str, str]:
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        name = node_name(p)
        if name.split(".")[0] in DATA_FOLDERS or name in DATA_FOLDERS:
            continue
        out[name] = p.read_text()
    return out


def test_the_package_keeps_the_layer_rule():
    assert violations(package_sources()) == []


def test_every_layer_name_exists_and_every_package_entry_has_a_layer():
    missing = [m for names in LAYERS.values() for m in names
               if not (PACKAGE / f"{m.replace('.', '/')}.py").is_file() and not (PACKAGE / m / "__init__.py").is_file()]
    assert missing == []
    entries = {p.stem for p in PACKAGE.glob("*.py")} | {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    placed = {m for names in LAYERS.values() for m in names} | DATA_FOLDERS
    assert sorted(entries - placed) == []


def test_the_public_api_is_what_the_settings_rule_allows():
    assert {"train", "resume", "tune", "find_lr", "load_dataset", "load_run"} <= public_functions()


@pytest.mark.parametrize("module, addition, expected", [
    ("data.registry", "\ndef f():\n    from trainlab.cli import app\n", "data.registry (core) imports cli.app (interfaces): upward"),
    ("metrics", "\nimport trainlab.runs.run\n", "metrics (core) imports runs.run (records): upward"),
    ("data.readers", "\nfrom trainlab.data.registry import DATASETS\n", "cycle: data.readers -> data.registry -> data.readers"),
    ("data.trees", "\nfrom trainlab.data import load_dataset\n", "data.trees imports its own package's __init__ (data)"),
    ("runs", "\nfrom trainlab.models import build_model\n", "runs/__init__ imports models: a package's __init__ re-exports"),
    ("engine.loop", "\nimport os\nX = os.environ.get('HOME')\n", "engine.loop: reads the environment (only settings.py may)"),
    ("models", "\ndef f():\n    print('hi')\n", "models: calls print() below the interfaces"),
    ("runs.run", "\nfrom trainlab import train\n", "runs.run (records) imports __init__ (interfaces): upward"),
    ("analysis.predict", "\nfrom trainlab.web.deps import RunCache\n", "analysis.predict (applications) imports web.deps (interfaces): upward"),
    ("serving.export", "\nfrom trainlab.serving.server import create_serve_app\n", "serving.export (applications) imports serving.server (interfaces): upward"),
    ("data.readers", "\nfrom trainlab.data.health import check_data\n", "data.readers (core) imports data.health (applications): upward"),
    ("web.deps", "\nfrom trainlab.web.app import create_app\n", "web.deps -> web.app"),
    ("runs.admin", "\ndef g():\n    return load_settings()\n", "runs.admin.g: calls load_settings()"),
    ("tuning.study", "\nimport optuna\noptuna.logging.set_verbosity(optuna.logging.WARNING)\n", "tuning.study: does work at import"),
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


def test_the_settings_docstring_names_every_variable():
    from trainlab import settings
    doc = settings.__doc__
    missing = [f.validation_alias for f in settings.Settings.model_fields.values() if f.validation_alias not in doc]
    assert missing == []


def test_the_top_level_is_small_and_only_the_engine_knows_its_steps():
    # a newcomer reads the architecture off the folders: a few base and core modules, the rest in packages
    modules = sorted(p.stem for p in PACKAGE.glob("*.py"))
    assert len(modules) <= MAX_TOP_LEVEL_MODULES, modules
    # the step strategies (the fused dense step, the captured CUDA graph) are chosen once, in the engine
    outside = [name for name, src in package_sources().items() if not name.startswith("engine")
               and re.search(r"engine\.(fused|graphed)\b|FusedDenseStep|GraphedStep|\.fused\b|fused_applies", src)]
    assert outside == []
