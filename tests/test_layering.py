"""The direction of imports: studio -> pipelines, storage; never the other way round."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {
    "pipelines": {"gradio", "sqlalchemy", "alembic", "storage", "studio", "fastapi", "starlette"},
    "storage": {"torch", "diffusers", "transformers", "gradio", "pipelines", "studio"},
}


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_the_studio_sees_storage_only_through_its_operations():
    """No table, session or SQL in studio/: storage owns its transactions (storage.Store)."""
    offences = {
        str(path.relative_to(ROOT)): sorted(
            name for name in imported_modules(path)
            if name.startswith(("storage.models", "storage.db", "storage.projects", "storage.takes",
                                "storage.queue", "storage.shares", "sqlalchemy", "alembic")))
        for path in (ROOT / "studio").rglob("*.py")
    }
    assert {k: v for k, v in offences.items() if v} == {}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_nothing_above_it(package):
    offences = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
    }
    assert {k: v for k, v in offences.items() if v} == {}


def test_importing_the_packages_loads_no_model_libraries():
    """Nothing heavy at import time: importing the engine and storage loads no model library."""
    code = ("import sys, pipelines.engine, pipelines.manager, pipelines.cli, storage; "
            "print(sorted(m for m in ('torch', 'diffusers', 'transformers', 'gradio') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
