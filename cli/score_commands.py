"""`readmit score`: score a CSV file, or the whole warehouse into its `predictions` table.

    readmit score --input FILE.csv --output OUT.csv [--model DIR] [--format diabetes130|discharges]
                  [--no-explain] [--warehouse W] [--no-log]
    readmit score --warehouse W [--model DIR] [--no-explain] [--master M] [--driver-memory 2g]
    readmit score --build-background --warehouse W [--model DIR]

Invalid rows are listed on stderr as "row N, column C: problem" and written to OUT.errors.csv; they
appear in OUT.csv with an empty risk and the problem, as do ineligible encounters (died, hospice)
with their reason. A problem names the rule a value breaks, never the value: nothing about a
patient is logged or printed. Both files are formula-safe (`core.spreadsheet`): a text cell that a
spreadsheet would run as a formula (=, +, -, @, tab, CR) starts with a quote.

The scores of a file go to the prediction log (channel "cli", docs/monitoring.md) unless `--no-log`
(evaluations and benchmarks). A warehouse run is logged by `readmit log-predictions` / `readmit monitor
--warehouse` (channel "warehouse", from its go-live date), not here. The model: --model, else
READMIT_MODEL_DIR, else the promoted model (`readmit promote`), else models/champion.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from core.errors import UserError
from core.spreadsheet import safe_csv

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = ("encounter_id", "patient_id", "risk", "risk_tier", "risk_percentile", "reason_1", "reason_2",
                  "reason_3", "model_version", "eligible", "ineligible_reason", "problem")
MAX_ERRORS_SHOWN = 20


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "score", help="score a CSV of encounters, or the warehouse's encounters into its predictions table",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", help="CSV to score (Diabetes 130 or the discharges template)")
    parser.add_argument("--output", help="CSV to write (with --input)")
    parser.add_argument("--model", help="model folder (default: READMIT_MODEL_DIR, else the promoted model, "
                                         "else models/champion)")
    parser.add_argument("--format", choices=("diabetes130", "discharges"),
                        help="input format (default: detected from the header)")
    parser.add_argument("--no-explain", action="store_true", help="skip reasons and attributions (faster)")
    parser.add_argument("--warehouse", help="warehouse root: patient history for --input, or what to score "
                                            "without --input")
    parser.add_argument("--master", help="score the warehouse as a Spark job on this master (e.g. local[2], "
                                         "spark://host:7077); without it, Spark (local[*]) scores warehouses of "
                                         "more than 200,000 encounters and one process the smaller ones")
    parser.add_argument("--driver-memory", default="2g", help="Spark driver memory of the Spark path")
    parser.add_argument("--no-log", action="store_true",
                        help="with --input: do not add these scores to the prediction log (evaluations, benchmarks)")
    parser.add_argument("--build-background", action="store_true",
                        help="summarize the warehouse's training features into the model folder's "
                             "explain_background.safetensors and exit")
    parser.add_argument("--background-size", type=int, default=32, help=argparse.SUPPRESS)
    parser.set_defaults(handler=run)


def _model_dir(args) -> str:
    """--model, else READMIT_MODEL_DIR, else the promoted model, else the shipped champion."""
    from serving.monitoring import serving_model_dir
    return serving_model_dir(args.model)


def _atomic_csv(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(safe_csv(frame))
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def errors_path(output: Path) -> Path:
    return output.with_name(f"{output.stem}.errors.csv")


def run(args) -> int:
    if args.build_background:
        return _build_background(args)
    if args.input:
        if not args.output:
            raise UserError("--output OUT.csv is required with --input")
        return _score_file(args)
    if args.warehouse:
        return _score_warehouse(args)
    raise UserError("give --input FILE.csv --output OUT.csv, or --warehouse W to score the warehouse")


def _score_file(args) -> int:
    from core.intake import errors_frame
    from serving.scoring import ScoringService
    started = time.perf_counter()
    output = Path(args.output)
    if Path(args.input).resolve() == output.resolve():
        raise UserError("--output must differ from --input")
    if not Path(args.input).is_file():  # before the model loads: fail in a moment, not seconds
        raise UserError(f"{args.input}: no such file")
    service = ScoringService.load(_model_dir(args), explain=not args.no_explain)
    predictions, errors = service.score_file(args.input, fmt=args.format, explain=not args.no_explain,
                                             warehouse=args.warehouse, include_invalid=True)
    _atomic_csv(predictions[list(OUTPUT_COLUMNS)], output)
    logged = 0 if args.no_log else _log_file_scores(args, service, predictions)
    error_file = errors_path(output)
    if errors:
        _atomic_csv(errors_frame(errors), error_file)
        for error in errors[:MAX_ERRORS_SHOWN]:
            print(error.as_text(), file=sys.stderr)
        if len(errors) > MAX_ERRORS_SHOWN:
            print(f"... and {len(errors) - MAX_ERRORS_SHOWN} more problems, all in {error_file}", file=sys.stderr)
    elif error_file.exists():
        error_file.unlink()  # a stale list from an earlier run would mislead
    scored = int(predictions["risk"].notna().sum())
    ineligible = int((predictions["eligible"] == False).sum())  # noqa: E712 (nullable boolean)
    invalid = int(predictions["problem"].notna().sum())
    print(f"readmit score: {len(predictions)} encounters, {scored} scored, {ineligible} ineligible, "
          f"{invalid} not scored for invalid values -> {output} "
          f"({time.perf_counter() - started:.1f} s, model {service.model_version}; "
          f"{'not logged' if args.no_log else f'{logged} logged'})", file=sys.stderr)
    return 0


def _log_file_scores(args, service, predictions: pd.DataFrame) -> int:
    """The file's scores into the prediction log (channel "cli"), with the feature rows the model saw."""
    from core.intake import read_input_file, to_canonical_rows
    from serving.database import get_engine
    from serving.prediction_log import log_predictions, with_context
    raw, fmt = read_input_file(args.input, args.format)
    canonical, _ = to_canonical_rows(raw, fmt)
    features = with_context(service.features_for(canonical, args.warehouse), canonical) if len(canonical) else None
    return log_predictions(get_engine(), "cli", predictions, features, service.model_version)


def _score_warehouse(args) -> int:
    from core.intake import from_warehouse_frame
    from core.predictions import write_predictions
    from core.warehouse import Warehouse, WarehouseError
    from etl.score import spark_scoring
    from models.batch_scoring import EXPLANATION_METHOD
    from serving.scoring import ScoringService
    started = time.perf_counter()
    warehouse = Warehouse(args.warehouse).pinned()  # one reading of the pointer for the whole run
    rows = int(warehouse.manifest("encounters").get("rows") or 0) if warehouse.has_table("encounters") else 0
    if spark_scoring(rows, args.master):
        return _score_warehouse_spark(args, started)
    try:
        encounters = from_warehouse_frame(warehouse.query("SELECT * FROM encounters ORDER BY encounter_id"))
    except WarehouseError as error:
        raise UserError(str(error)) from error
    if encounters.empty:
        raise UserError(f"warehouse {args.warehouse} has no encounters to score")
    service = ScoringService.load(_model_dir(args), explain=not args.no_explain)
    predictions = service.score_encounters(encounters, explain=not args.no_explain)
    try:
        version = write_predictions(args.warehouse, predictions, manifest={
            "model_version": service.model_version, "model_dir": str(service.model_dir),
            "explained": not args.no_explain, "explanation_background": service.background_source,
            "explanation_method": EXPLANATION_METHOD if not args.no_explain else None},
            encounters_version=warehouse.current_tables()["encounters"])
    except WarehouseError as error:  # an ETL published new encounters meanwhile: these scores are stale
        raise UserError(str(error)) from error
    print(f"readmit score: {len(predictions)} predictions written to {args.warehouse} "
          f"(predictions version {version}, {time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return 0


def _score_warehouse_spark(args, started: float) -> int:
    """The Spark path (`etl.score`): same numbers and reasons, the model loaded once per Python worker."""
    from etl.score import score_warehouse
    from etl.spark import get_spark
    spark = get_spark(args.master or "local[*]", args.driver_memory, app_name="readmit-score")
    try:
        record = score_warehouse(spark, args.warehouse, _model_dir(args), explain=not args.no_explain)
    finally:
        spark.stop()
    print(f"readmit score: {record['rows']} predictions written to {args.warehouse} on Spark "
          f"{record['spark']['master']} (predictions version {record['version']}, "
          f"{time.perf_counter() - started:.1f} s)", file=sys.stderr)
    return 0


def _build_background(args) -> int:
    from models.explain_background import background_from_warehouse, save_background
    from models.inference import ReadmitPredictor
    if not args.warehouse:
        raise UserError("--build-background needs --warehouse W (its training features are summarized)")
    model_dir = _model_dir(args)
    predictor = ReadmitPredictor.load(model_dir)
    background = background_from_warehouse(args.warehouse, predictor.preprocessing, k=args.background_size)
    path = save_background(model_dir, background)
    print(f"readmit score: explanation background of {len(background)} rows written to {path}", file=sys.stderr)
    return 0
