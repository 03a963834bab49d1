"""Every common/ module's ``__all__`` is true: defined names, no duplicates, nothing missing.

The rule: a module's public surface is its ``__all__``. Every name another module takes from
``common.X`` (``from common.X import Y``, or ``X.Y`` after ``from common import X`` /
``import common.X``) must be in ``common.X.__all__``; the importers are every module under
svc_*/, infra/, tests/ and the rest of common/. The one exception are private names (a leading
``_``): they are never in ``__all__``, and only tests may import them, deliberately, to test a
helper from inside (``common.etcd._range_end``); code in svc_*, infra and common never does.
Submodules (``from common import records``) are modules, not names, and are not checked.
"""

from __future__ import annotations

import ast
import importlib
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[3]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


COMMON = sorted(_module_name(p) for p in (ROOT / "common").rglob("*.py"))


def _sources() -> Iterator[Path]:
    for top in ["common", "infra", "tests", *(p.name for p in ROOT.glob("svc_*"))]:
        yield from (ROOT / top).rglob("*.py")


def _imports() -> dict[str, dict[str, set[str]]]:
    """common module -> name -> the modules that take it from there."""
    found: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for path in _sources():
        importer = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        aliases: dict[str, str] = {}  # local name -> the common module it is bound to
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    if submodule in COMMON:
                        aliases[alias.asname or alias.name] = submodule
                    elif node.module in COMMON and node.module != importer:
                        found[node.module][alias.name].add(importer)
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name in COMMON:
                        aliases[alias.asname or alias.name] = alias.name
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            chain: list[str] = []
            value: ast.expr = node
            while isinstance(value, ast.Attribute):
                chain.insert(0, value.attr)
                value = value.value
            if not isinstance(value, ast.Name):
                continue
            module = aliases.get(value.id, value.id)
            # common.contracts.asyncapi.main: walk down the submodules first
            while chain and f"{module}.{chain[0]}" in COMMON:
                module = f"{module}.{chain.pop(0)}"
            if module in COMMON and chain and module != importer and not chain[0].startswith("__"):
                found[module][chain[0]].add(importer)
    return found


IMPORTS = _imports()


def _all(module: ModuleType) -> list[str]:
    names = getattr(module, "__all__", None)
    assert isinstance(names, list | tuple), f"{module.__name__} has no __all__ list"
    assert all(isinstance(n, str) for n in names), f"{module.__name__}.__all__ holds a non-string"
    return list(names)


@pytest.mark.parametrize("name", COMMON)
def test_all_is_defined_unique_and_public(name: str) -> None:
    module = importlib.import_module(name)
    names = _all(module)
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert not duplicates, f"{name}.__all__ lists {duplicates} twice"
    undefined = [n for n in names if not hasattr(module, n)]
    assert not undefined, f"{name}.__all__ lists {undefined}, which {name} does not define"
    private = [n for n in names if n.startswith("_")]
    assert not private, f"{name}.__all__ lists private names {private}"


@pytest.mark.parametrize("name", COMMON)
def test_what_others_import_is_in_all_or_private_for_tests(name: str) -> None:
    exported = set(_all(importlib.import_module(name)))
    imported = IMPORTS.get(name, {})
    missing = {n: sorted(by) for n, by in imported.items() if n not in exported and not n.startswith("_")}
    assert not missing, f"imported from {name} but not in its __all__: {missing}"
    private_outside_tests = {
        n: outside
        for n, by in imported.items()
        if n.startswith("_") and (outside := sorted(m for m in by if not m.startswith("tests.")))
    }
    assert not private_outside_tests, f"private names of {name} used outside tests: {private_outside_tests}"


def test_the_scan_sees_the_imports() -> None:
    """Guards the scanner itself: known imports of each kind are found."""
    assert "tests.unit.common.test_logging" in IMPORTS["common.logging"]["setup_logging"]  # from-import
    assert "svc_rooms.roomstore" in IMPORTS["common.records"]["StateOp"]  # records.StateOp.DELETE
    assert IMPORTS["common.etcd"]["_range_end"]  # a private name a test uses
    assert len(COMMON) > 20 and "common.contracts._registry" in COMMON
