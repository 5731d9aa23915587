# tests/unit/test_architecture.py -- the rooms of the house and the arrows between them.
#
# Strategy: read every module's imports with ``ast`` (also those inside
# functions) and check the rules docs/ARCHITECTURE.md states: the framing
# touches no socket, the core never reaches into the backend, the balancer
# builds on the core only, shipped code never imports the test tree, and
# the tooling never imports the tests.  The thread model's process must not
# load gevent at all, which is checked by importing it in a fresh process.
# Size rules (modules and functions) keep the rooms livable.
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

PACKAGES = ("gservers", "lb", "loadtests")
SOCKET_MODULES = ("socket", "_socket", "select", "selectors", "ssl", "asyncio", "gevent",
                  "greenlet")
#: (importer prefix, forbidden prefixes, why)
RULES = [
    ("gservers.http", SOCKET_MODULES + ("gservers.net", "gservers.backend", "lb"),
     "the framing is sans-IO and the shared bottom layer"),
    ("gservers.net", ("gservers.backend", "lb"), "the core never reaches into the backend"),
    ("gservers.settings", ("gservers.backend", "gservers.net", "lb"), "settings are shared"),
    ("lb", ("gservers.backend",), "the balancer builds on the shared core only"),
    ("gservers", ("lb", "loadtests", "tests"), "product code never imports tooling or tests"),
    ("lb", ("loadtests", "tests"), "product code never imports tooling or tests"),
    ("loadtests", ("tests",), "the tooling never imports the tests"),
]
MAX_MODULE_LINES = 420
MAX_FUNCTION_LINES = 70


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def imports(path: Path, name: str) -> set[str]:
    """Every module ``path`` imports, resolved to absolute names."""
    found: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(parent + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def test_the_import_rules_hold() -> None:
    broken = []
    for name, path in modules().items():
        for importer, forbidden, why in RULES:
            if not under(name, importer):
                continue
            for imported in sorted(imports(path, name)):
                if any(under(imported, bad) for bad in forbidden):
                    broken.append(f"{name} imports {imported}: {why}")
    assert not broken, "\n".join(broken)


def test_no_test_module_imports_another() -> None:
    """Shared test helpers live in tests/*.py, not in a test_*.py of another room."""
    broken = []
    for path in sorted((ROOT / "tests").rglob("test_*.py")):
        name = module_name(path)
        for imported in sorted(imports(path, name)):
            if imported != name and imported.rpartition(".")[2].startswith("test_"):
                broken.append(f"{name} imports {imported}")
    assert not broken, "\n".join(broken)


def test_the_rules_see_a_forbidden_import(tmp_path: Path) -> None:
    """The checker itself: a framing module importing a socket is caught."""
    bad = tmp_path / "parser.py"
    bad.write_text("def f():\n    import socket\n    from gservers.backend import app\n")
    found = imports(bad, "gservers.http.parser")
    assert "socket" in found and "gservers.backend.app" in found


def test_the_thread_model_never_loads_gevent() -> None:
    code = ("import sys, gservers.backend.__main__, gservers.backend.thread_model; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('gevent', 'greenlet')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("package", PACKAGES)
def test_modules_and_functions_stay_small(package: str) -> None:
    too_big = []
    for name, path in modules().items():
        if not under(name, package):
            continue
        text = path.read_text()
        lines = text.count("\n")
        if lines > MAX_MODULE_LINES:
            too_big.append(f"{name}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_big.append(f"{name}.{node.name}: {length} lines")
    assert not too_big, "\n".join(too_big)
