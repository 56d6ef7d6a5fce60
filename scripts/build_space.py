"""Assemble a Hugging Face Space (Docker SDK) folder: `python scripts/build_space.py --out DIR`.

The folder holds the Space README (front matter `sdk: docker`, `app_port: 8501`), the project's
Dockerfile (plus one COPY line for the demo data), the app code, the shipped model and a synthetic
demo warehouse. Push it with `huggingface-cli upload SPACE_ID DIR . --repo-type space` (or git).

The model shipped (as models/champion, which the Space's `readmit app` serves) is the one that scored the
shipped warehouse, named by its `predictions` manifest: `readmit demo` scores its warehouse with its go-live
model (DIR-model beside the warehouse, a recalibrated copy of the champion), so the Space serves the same
model, and shows the same risks, as `make run`. `--model` is shipped only when no warehouse is, or when the
warehouse's scores name no model folder that exists here.

`--database` ships the demo's operational SQLite database (its prediction log and matured outcomes), so
the Space's Monitoring page shows what `make run`'s does; `make space` builds the demo against a
throwaway database for that, never the developer's own.

Only synthetic data may go to a public Space: the script refuses a warehouse whose `encounters`
table holds any row whose `source` is not "synthetic", and never copies .env files or caches.
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import pyarrow.dataset as ds

from core.warehouse import Warehouse, read_pointer, table_version_path

REPO = Path(__file__).resolve().parent.parent
CODE_DIRS = ("core", "etl", "serving", "api", "cli", "ui", "pages", ".streamlit")
CODE_FILES = ("app.py", "requirements.txt", "constraints.txt")
MODEL_CODE = "models"  # the package's .py files; model folders are chosen explicitly
SPACE_TEMPLATE = REPO / "deploy" / "space"
IGNORE = shutil.ignore_patterns("__pycache__", "*.pyc", ".env", ".env.*", "*.egg-info", ".pytest_cache")
DATA_COPY = "COPY --chown=readmit:readmit data ./data\n"
DATA_ENV = "ENV READMIT_WAREHOUSE=/home/readmit/app/data/warehouse\n"
DATABASE_NAME = "operational.sqlite3"
DATABASE_ENV = f"ENV READMIT_DATABASE_URL=sqlite:////home/readmit/app/data/{DATABASE_NAME}\n"
SPACE_DOCKERIGNORE = """.git
**/__pycache__
**/*.pyc
.env
.env.*
"""


class SpaceError(Exception):
    pass


def check_synthetic(warehouse: Path) -> int:
    """Rows in the warehouse's encounters table; SpaceError unless every one is synthetic."""

    pointer = read_pointer(warehouse)
    version = pointer.get("tables", {}).get("encounters")
    if not version:
        raise SpaceError(f"{warehouse}: no encounters table in CURRENT.json")
    table = ds.dataset(table_version_path(warehouse, "encounters", version), format="parquet").to_table(
        columns=["source"])
    sources = set(table.column("source").to_pylist())
    if sources != {"synthetic"}:
        raise SpaceError(f"{warehouse}: encounters come from {sorted(map(str, sources))}; only synthetic data "
                         "may go to a public Space (build one with `readmit synth` + `readmit etl`)")
    return table.num_rows


def scoring_model(warehouse: Path) -> Path | None:
    """The model folder that scored the warehouse's current predictions, when its manifest names one that
    exists (`readmit score` records `model_dir`)."""
    root = Warehouse(str(warehouse))
    if not root.has_table("predictions"):
        return None
    folder = root.manifest("predictions").get("model_dir")
    return Path(folder) if folder and (Path(folder) / "config.json").exists() else None


def _copy_tree(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest, ignore=IGNORE, dirs_exist_ok=False)


def build_space(out: Path, model: Path, warehouse: Path | None, database: Path | None = None) -> dict:
    requested = model
    if database is not None and warehouse is None:
        raise SpaceError("--database needs --warehouse: the log describes that warehouse's predictions")
    if database is not None and not database.is_file():
        raise SpaceError(f"{database}: no such SQLite database")
    if warehouse is not None:
        model = scoring_model(warehouse) or model  # the Space serves the model its worklist was scored with
    if not (model / "config.json").exists():
        raise SpaceError(f"{model}: not a model folder (config.json missing); train or publish the champion first")
    if out.exists() and any(out.iterdir()):
        raise SpaceError(f"{out} exists and is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    for name in CODE_DIRS:
        _copy_tree(REPO / name, out / name)
    for name in CODE_FILES:
        shutil.copy2(REPO / name, out / name)
    (out / MODEL_CODE).mkdir()
    for path in (REPO / MODEL_CODE).glob("*.py"):
        shutil.copy2(path, out / MODEL_CODE / path.name)
    _copy_tree(model, out / MODEL_CODE / "champion")
    shutil.copy2(SPACE_TEMPLATE / "README.md", out / "README.md")
    dockerfile = (REPO / "Dockerfile").read_text()
    rows = None
    if warehouse is not None:
        rows = check_synthetic(warehouse)
        _copy_tree(warehouse, out / "data" / "warehouse")
        anchor = "COPY --chown=readmit:readmit pages ./pages\n"
        if anchor not in dockerfile:
            raise SpaceError("Dockerfile: cannot find where to add the demo data COPY")
        if database is not None:
            shutil.copy2(database, out / "data" / DATABASE_NAME)
        dockerfile = dockerfile.replace(anchor, anchor + DATA_COPY + DATA_ENV + (DATABASE_ENV if database else ""))
    (out / "Dockerfile").write_text(dockerfile)
    (out / ".dockerignore").write_text(SPACE_DOCKERIGNORE)
    summary = {"out": str(out), "model": str(model), "model_from": "warehouse predictions" if model != requested
               else "--model", "warehouse_rows": rows,
               "files": sum(1 for p in out.rglob("*") if p.is_file()),
               "megabytes": round(sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / 1e6, 1)}
    return summary


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="new, empty folder for the Space")
    parser.add_argument("--model", type=Path, default=REPO / "models" / "champion",
                        help="model folder to ship when the warehouse's scores name none (see above)")
    parser.add_argument("--warehouse", type=Path, default=None,
                        help="synthetic demo warehouse to ship (refused if any row is not synthetic)")
    parser.add_argument("--database", type=Path, default=None,
                        help="the demo's operational SQLite database (prediction log, outcomes) to ship with it")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    try:
        summary = build_space(args.out, args.model, args.warehouse, args.database)
    except SpaceError as error:
        print(f"build_space: error: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
