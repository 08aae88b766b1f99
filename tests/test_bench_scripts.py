"""The bench's own scripts import what they use from evolinstruct: a module that moves must not leave a peer
that fails at start (the sequential peer did, unnoticed until `make bench`)."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted([*ROOT.glob("bench/*.py"), *ROOT.glob("bench/peers/*.py"), *ROOT.glob("scripts/*.py")])


def _evolinstruct_imports(path: Path) -> list[tuple[str, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return [(node.module, alias.name) for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("evolinstruct")
            for alias in node.names]


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_evolinstruct_name_a_bench_script_imports_exists(path: Path) -> None:
    for module, name in _evolinstruct_imports(path):
        assert hasattr(importlib.import_module(module), name), f"{path.name}: from {module} import {name}"


def test_the_sequential_peer_loads_the_repo_s_five_prompts() -> None:
    import sys

    sys.path.insert(0, str(ROOT / "bench" / "peers"))
    try:
        import sequential
    finally:
        sys.path.pop(0)
    prompts = sequential.load_prompts()
    assert len(prompts) == 5 and all("Prompt Rewriter" in p or "Prompt Creator" in p for p in prompts)
