"""Data subcommands of `readmit`: fetch, etl, synth, template, sql.

Heavy imports (Spark, the ETL) happen inside the handlers, so `readmit --help` and `readmit sql`
start fast.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import sys
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from core.config import REPO_ROOT, get_settings
from core.errors import UserError

DIABETES130_URL = ("https://archive.ics.uci.edu/static/public/296/"
                   "diabetes+130-us+hospitals+for+years+1999-2008.zip")
DIABETES130_SHA256 = "3a17a3b55b6dd4a1926703185c0ad8e2ed30bc8e2f9b927cdd1000b733d1de8e"
DEFAULT_FETCH_DEST = REPO_ROOT / "data" / "raw" / "diabetes130"
ZIP_NAME = "dataset_diabetes.zip"


def register(subparsers: argparse._SubParsersAction) -> None:
    settings = get_settings()

    fetch = subparsers.add_parser("fetch", help="download a public data set (diabetes130)")
    fetch.add_argument("dataset", choices=["diabetes130"])
    fetch.add_argument("--dest", default=str(DEFAULT_FETCH_DEST), help="folder for the archive and CSV")
    fetch.add_argument("--url", default=DIABETES130_URL, help=argparse.SUPPRESS)
    fetch.add_argument("--timeout", type=float, default=60.0, help=argparse.SUPPRESS)
    fetch.set_defaults(handler=fetch_command)

    etl = subparsers.add_parser("etl", help="run the Spark ETL from a source into the warehouse")
    etl.add_argument("--source", required=True,
                     choices=["diabetes130", "mimic3", "mimic4", "discharges", "synthetic", "cms-hrrp"])
    etl.add_argument("--input", help="file or folder of the source (not for synthetic)")
    etl.add_argument("--warehouse", default=settings.warehouse, help="warehouse root (folder, hdfs:// or s3a://)")
    etl.add_argument("--master", default=settings.spark_master, help="Spark master, e.g. local[*] or spark://h:7077")
    etl.add_argument("--driver-memory", default=settings.spark_driver_memory)
    etl.add_argument("--rows", type=int, help="synthetic: number of encounters")
    etl.add_argument("--seed", type=int, default=0, help="synthetic: random seed")
    etl.add_argument("--end", type=_date, default=None,
                     help="synthetic: last day of the generated discharges, YYYY-MM-DD (default today)")
    etl.add_argument("--scenario", choices=("stable", "drift"), default=None,
                     help="synthetic: the generator's scenario (default READMIT_SYNTHETIC_SCENARIO, else stable; "
                          "docs/synthetic.md)")
    etl.add_argument("--split-by", choices=["patient", "time"], default="patient")
    etl.add_argument("--ratios", default="0.7,0.15,0.15", help="train,validation,test shares of patients")
    etl.set_defaults(handler=etl_command)

    synth = subparsers.add_parser("synth", help="write synthetic encounters as a template CSV")
    synth.add_argument("--rows", type=int, required=True)
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument("--output", required=True)
    synth.add_argument("--chunk-rows", type=int, default=100_000)
    synth.add_argument("--end", type=_date, default=None,
                       help="last day of the generated discharges, YYYY-MM-DD (default today)")
    synth.add_argument("--scenario", choices=("stable", "drift"), default="stable",
                       help="stable (default): a steady window; drift: case mix, coding and the true readmission "
                            "rate change six months before the end (docs/synthetic.md)")
    synth.set_defaults(handler=synth_command)

    template = subparsers.add_parser("template", help="write the discharges upload template (CSV)")
    template.add_argument("--output", required=True)
    template.set_defaults(handler=template_command)

    sql = subparsers.add_parser("sql", help="run DuckDB SQL over the warehouse tables and print the result")
    sql.add_argument("query")
    sql.add_argument("--warehouse", default=settings.warehouse)
    sql.add_argument("--format", choices=["table", "csv", "json"], default="table")
    sql.set_defaults(handler=sql_command)


# --- etl -------------------------------------------------------------------------------------------

def etl_command(args: argparse.Namespace) -> int:
    logging.getLogger("py4j").setLevel(logging.WARNING)  # its DEBUG lines drown the job's own logs
    from etl.pipeline import EtlOptions, run_etl
    from etl.transform import parse_ratios

    if args.scenario:
        from core.synthetic import SCENARIO_VARIABLE
        if args.source != "synthetic":
            raise UserError("--scenario applies to --source synthetic only")
        # Spark's Python workers read the scenario from the environment they inherit from this process
        # (local masters); on a cluster, give the executors the same variable (spark.executorEnv).
        os.environ[SCENARIO_VARIABLE] = args.scenario

    options = EtlOptions(source=args.source, input=args.input, warehouse=args.warehouse, master=args.master,
                         driver_memory=args.driver_memory, rows=args.rows, seed=args.seed,
                         synthetic_end=args.end or dt.date.today(),
                         split_by=args.split_by, ratios=parse_ratios(args.ratios))
    summary = run_etl(options)
    print(json.dumps({"version": summary["version"], "source": summary["source"], "tables": summary["tables"],
                      "steps": summary.get("steps"), "split": summary.get("split", {}).get("counts")}, indent=2))
    return 0


# --- sql -------------------------------------------------------------------------------------------

def sql_command(args: argparse.Namespace) -> int:
    import duckdb

    from core.warehouse import Warehouse, WarehouseError

    try:
        result = Warehouse(args.warehouse).query(args.query)
    except (WarehouseError, duckdb.Error) as error:
        raise UserError(str(error).splitlines()[0]) from None
    if args.format == "csv":
        result.to_csv(sys.stdout, index=False)
    elif args.format == "json":
        print(result.to_json(orient="records", date_format="iso"))
    else:
        print(result.to_string(index=False, max_rows=200))
    return 0


# --- template / synth ------------------------------------------------------------------------------

def template_command(args: argparse.Namespace) -> int:
    from core.schema import template_columns
    from serving.upload import template_csv

    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(template_csv())  # the very bytes the Upload page offers (formula-safe)
    print(f"wrote {output} ({len(template_columns())} columns, one example row)")
    return 0


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def synth_command(args: argparse.Namespace) -> int:
    from core.synthetic import write_template_csv

    if args.rows <= 0:
        raise UserError("--rows must be positive")
    write_template_csv(args.output, rows=args.rows, seed=args.seed, chunk_rows=args.chunk_rows,
                       end=args.end or dt.date.today(), scenario=args.scenario)
    print(f"wrote {args.rows} synthetic encounters ({args.scenario}) to {args.output}")
    return 0


# --- fetch -----------------------------------------------------------------------------------------

def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manual_instructions(dest: Path, url: str) -> str:
    return (f"download {url} in a browser, check that its sha256 is {DIABETES130_SHA256}, "
            f"and save it as {dest / ZIP_NAME} (then run this command again to verify and extract it)")


def verify_and_extract(archive: Path, dest: Path) -> Path:
    """Check the archive's sha256 and extract diabetic_data.csv and IDs_mapping.csv into `dest`."""
    actual = sha256_of(archive)
    if actual != DIABETES130_SHA256:
        raise UserError(f"{archive}: sha256 {actual} does not match the published {DIABETES130_SHA256}; "
                        "the file is damaged or not the UCI Diabetes 130 archive")
    extracted = []
    with zipfile.ZipFile(archive) as outer:
        for name in outer.namelist():
            if name.endswith(".zip"):  # the UCI download wraps dataset_diabetes.zip inside another zip
                nested = dest / Path(name).name
                with outer.open(name) as source, open(nested, "wb") as target:
                    shutil.copyfileobj(source, target)
                with zipfile.ZipFile(nested) as inner:
                    extracted += _extract_csvs(inner, dest)
            elif name.endswith(".csv"):
                extracted += _extract_csvs(outer, dest, [name])
    csv_path = dest / "diabetic_data.csv"
    if not csv_path.exists():
        raise UserError(f"{archive}: no diabetic_data.csv inside")
    return csv_path


def _extract_csvs(archive: zipfile.ZipFile, dest: Path, names=None) -> list[Path]:
    out = []
    for name in names or archive.namelist():
        if name.endswith(".csv"):
            target = dest / Path(name).name
            with archive.open(name) as source, open(target, "wb") as handle:
                shutil.copyfileobj(source, handle)
            out.append(target)
    return out


def fetch_command(args: argparse.Namespace) -> int:
    dest = Path(args.dest)
    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / ZIP_NAME
    if not archive.exists():
        partial = archive.with_suffix(".part")
        try:
            with urllib.request.urlopen(args.url, timeout=args.timeout) as response, open(partial, "wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, OSError, ValueError) as error:
            partial.unlink(missing_ok=True)
            reason = getattr(error, "reason", error)
            raise UserError(f"could not download {args.url} ({reason}); offline? "
                            + manual_instructions(dest, args.url)) from None
        partial.replace(archive)
    csv_path = verify_and_extract(archive, dest)
    print(f"verified {archive} (sha256 {DIABETES130_SHA256[:12]}...) and extracted {csv_path}")
    print(f"next: readmit etl --source diabetes130 --input {csv_path}")
    return 0
