"""The pages and app.py are scripts, not packages, so import-linter cannot see them: check their
imports here. A page reads widgets, calls `serving`, and draws; it never reaches the model or Spark."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = sorted([ROOT / "app.py", *(ROOT / "pages").glob("*.py")])
FORBIDDEN = {"models", "etl", "api", "cli", "torch", "transformers", "pyspark", "sqlalchemy", "duckdb"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_the_scripts_exist():
    assert len(SCRIPTS) >= 6


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_pages_import_serving_not_the_model_or_spark(script):
    assert not imported_roots(script) & FORBIDDEN


def test_the_check_can_fail(tmp_path):
    page = tmp_path / "9_Bad.py"
    page.write_text("from models.inference import ReadmitPredictor\nimport streamlit as st\n")
    assert imported_roots(page) & FORBIDDEN == {"models"}
