"""`make space` ships the model that scored the shipped warehouse (the demo's go-live model), so the Space
serves what `make run` serves; `--model` only when the warehouse's scores name no model folder."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from core.warehouse import read_pointer, table_version_path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "app"))

import build_space  # noqa: E402
from make_warehouse import build  # noqa: E402


def fake_model(folder: Path, marker: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "which.txt").write_text(marker)
    return folder


def scored_by(warehouse: Path, model_dir: Path | None) -> None:
    version = read_pointer(warehouse)["tables"]["predictions"]
    manifest_path = Path(table_version_path(warehouse, "predictions", version)) / "_manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["model_dir"] = str(model_dir) if model_dir else None
    manifest_path.write_text(json.dumps(manifest))


def test_the_space_ships_the_model_that_scored_its_warehouse(tmp_path):
    warehouse = build(tmp_path / "warehouse", patients=40, seed=3, source="synthetic")
    champion = fake_model(tmp_path / "champion", "champion")
    demo = fake_model(tmp_path / "warehouse-model", "demo go-live model")
    scored_by(warehouse, demo)
    summary = build_space.build_space(tmp_path / "space", champion, warehouse)
    assert summary["model"] == str(demo) and summary["model_from"] == "warehouse predictions"
    assert (tmp_path / "space" / "models" / "champion" / "which.txt").read_text() == "demo go-live model"


def test_without_a_scoring_model_the_given_model_is_shipped(tmp_path):
    warehouse = build(tmp_path / "warehouse", patients=40, seed=3, source="synthetic")
    champion = fake_model(tmp_path / "champion", "champion")
    scored_by(warehouse, tmp_path / "gone")  # named, but not here
    summary = build_space.build_space(tmp_path / "space", champion, warehouse)
    assert summary["model_from"] == "--model"
    assert (tmp_path / "space" / "models" / "champion" / "which.txt").read_text() == "champion"


def test_the_demo_database_ships_with_the_space_and_is_configured(tmp_path):
    warehouse = build(tmp_path / "warehouse", patients=40, seed=3, source="synthetic")
    database = tmp_path / "demo.sqlite3"
    database.write_bytes(b"SQLite format 3\x00")
    build_space.build_space(tmp_path / "space", fake_model(tmp_path / "champion", "champion"), warehouse, database)
    assert (tmp_path / "space" / "data" / build_space.DATABASE_NAME).read_bytes() == database.read_bytes()
    assert build_space.DATABASE_ENV in (tmp_path / "space" / "Dockerfile").read_text()


def test_a_database_without_its_warehouse_is_refused(tmp_path):
    database = tmp_path / "demo.sqlite3"
    database.write_bytes(b"SQLite format 3\x00")
    with pytest.raises(build_space.SpaceError, match="needs --warehouse"):
        build_space.build_space(tmp_path / "space", fake_model(tmp_path / "champion", "c"), None, database)
