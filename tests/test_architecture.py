"""The layout's rules, checked over the imports: layers only import downward, no circles, display in cli/.

Layers, top to bottom (ARCHITECTURE in README.md):
  cli -> commands (evolve, quality, evaluate, train, report) -> calls, store, models, slots -> records, seeds,
  rundir, kv, datadir, redact. Every import counts, function-level ones too: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
from functools import lru_cache
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "evolinstruct"
LAYERS = {
    "cli": 3,
    "evolve": 2, "optimize": 2, "quality": 2, "evaluate": 2, "train": 2, "report": 2, "scale": 2,
    "calls": 1, "batches": 1, "store": 1, "models": 1, "slots": 1,
    "records": 0, "seeds": 0, "rundir": 0, "kv": 0, "datadir": 0, "redact": 0,
}


@lru_cache(maxsize=1)
def _modules() -> dict[str, Path]:
    out = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def _imports(name: str, path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join(parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return found


def _layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 and parts[0] == PACKAGE else None


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(m for m in _modules() if m != PACKAGE and _layer(m) is None)
    assert not unplaced, f"modules outside the layer table: {unplaced}"


def test_layers_only_import_downward() -> None:
    modules = _modules()
    upward = []
    for name, path in modules.items():
        mine = _layer(name)
        if mine is None:
            continue
        for target in _imports(name, path):
            theirs = _layer(target) if target in modules else None
            if theirs is not None and theirs > mine:
                upward.append(f"{name} -> {target}")
    assert not upward, "imports of a higher layer:\n" + "\n".join(sorted(upward))


def test_rich_only_in_the_cli() -> None:
    stray = sorted(
        name for name, path in _modules().items()
        if any(t.split(".")[0] == "rich" for t in _imports(name, path)) and _layer(name) != LAYERS["cli"]
    )
    assert not stray, f"rich imported outside cli/: {stray}"


def test_no_import_circles() -> None:
    modules = _modules()
    edges = {
        name: {t for t in _imports(name, path) if t in modules and t != name and not t.startswith(name + ".")}
        for name, path in modules.items()
    }
    # A circle exists iff some module reaches itself; the graph is small, so a DFS per module is enough.
    circles = []
    for start in modules:
        seen, stack = set(), list(edges[start])
        while stack:
            node = stack.pop()
            if node == start:
                circles.append(start)
                break
            if node not in seen:
                seen.add(node)
                stack.extend(edges[node])
    assert not circles, f"modules on an import circle: {sorted(circles)}"


def _names(node: ast.AST) -> set[str]:
    """String constants in a comparison operand (a literal, or a tuple/list/set of literals)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.Tuple | ast.List | ast.Set):
        return {e.value for e in node.elts if isinstance(e, ast.Constant) and isinstance(e.value, str)}
    return set()


def test_callers_ask_capabilities_not_backend_names() -> None:
    """Outside models/, no code compares a `.backend` to a backend's name: callers ask what a backend
    can do (models.base.Capabilities), so a new backend needs no change elsewhere."""
    backends = {"local", "openai", "llamacpp", "vllm"}
    offenders = []
    for name, path in _modules().items():
        if name.startswith(f"{PACKAGE}.models"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.Compare):
                continue
            sides = [node.left, *node.comparators]
            on_backend = any(isinstance(x, ast.Attribute) and x.attr == "backend" for x in sides)
            if on_backend and any(_names(x) & backends for x in sides):
                offenders.append(f"{name}:{node.lineno}")
    assert not offenders, f"code that branches on a backend's name: {offenders}"
