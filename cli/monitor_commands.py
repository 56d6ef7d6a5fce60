"""Monitoring subcommands of `readmit`: monitor, outcomes, log-predictions, monitor-reference, recalibrate,
promote (docs/monitoring.md).

    readmit monitor --warehouse W [--as-of DATE] [--reference model|START:END] [--period week|month]
                    [--format json|html|text] [--output F]          # exit code 3 when an act-level alert stands
    readmit outcomes --input outcomes.csv | --warehouse W
    readmit log-predictions --warehouse W [--since DATE]
    readmit monitor-reference --model DIR --warehouse W [--split validation]
    readmit recalibrate --warehouse W --model DIR --since DATE --out NEW_DIR --reason TEXT
    readmit promote NEW_DIR

The operational database is the configured one (READMIT_DATABASE_URL, else data/operational.sqlite3).
Nothing printed here names a patient or an encounter.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from pathlib import Path

from core.config import get_settings
from core.errors import UserError

ACT_EXIT_CODE = 3
MAX_ERRORS_SHOWN = 20


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date (YYYY-MM-DD): {text!r}") from None


def register(subparsers) -> None:
    settings = get_settings()
    monitor = subparsers.add_parser("monitor", help="monitoring report from the prediction log (exit 3 on an act alert)",
                                    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    monitor.add_argument("--warehouse", help="first load its outcomes and log its latest scoring run")
    monitor.add_argument("--as-of", type=_date, help="the report's day (default today): outcomes mature 30 days "
                                                     "after discharge")
    monitor.add_argument("--reference", default="model", help="model (its monitoring_reference.json) or START:END, "
                                                              "a window of the log's discharges")
    monitor.add_argument("--period", choices=("week", "month"), default="month")
    monitor.add_argument("--format", choices=("json", "html", "text"), default="json")
    monitor.add_argument("--output", help="file to write (default: stdout)")
    monitor.add_argument("--model", default=None, help=f"model folder of the reference (default {settings.model_dir})")
    monitor.add_argument("--model-version", help="monitor this model version only")
    monitor.add_argument("--calls-per-day", type=int, default=None,
                         help=f"capacity of the replayed call list (default READMIT_CALLS_PER_DAY, {settings.calls_per_day})")
    monitor.add_argument("--metrics", help="a scrape of the API's /metrics (Prometheus text) for service health")
    monitor.set_defaults(handler=monitor_command)

    outcomes = subparsers.add_parser("outcomes", help="load outcomes (a CSV, or the warehouse's dated labels)")
    source = outcomes.add_mutually_exclusive_group(required=True)
    source.add_argument("--input", help="CSV: encounter_id, optional source, readmitted_30d (yes/no) or "
                                        "readmission_date (YYYY-MM-DD)")
    source.add_argument("--warehouse", help="copy the known labels of the warehouse's dated encounters")
    outcomes.set_defaults(handler=outcomes_command)

    log = subparsers.add_parser("log-predictions", help="log the warehouse's latest scoring run (channel warehouse)")
    log.add_argument("--warehouse", default=settings.warehouse)
    log.add_argument("--since", type=_date, help="only discharges from this day (the go-live date)")
    log.set_defaults(handler=log_command)

    reference = subparsers.add_parser("monitor-reference",
                                      help="write the model folder's monitoring_reference.json from a warehouse split")
    reference.add_argument("--model", required=True)
    reference.add_argument("--warehouse", required=True, help="the warehouse the model was trained from")
    reference.add_argument("--split", default="validation")
    reference.set_defaults(handler=reference_command)

    recalibrate = subparsers.add_parser("recalibrate", help="refit only the calibration on recent matured outcomes, "
                                                            "into a new model folder")
    recalibrate.add_argument("--warehouse", required=True)
    recalibrate.add_argument("--model", required=True)
    recalibrate.add_argument("--since", type=_date, required=True, help="first discharge day of the refit data")
    recalibrate.add_argument("--until", type=_date, help="day after the last discharge of the refit data "
                                                         "(default: as of)")
    recalibrate.add_argument("--as-of", type=_date, help="outcomes matured by this day (default today)")
    recalibrate.add_argument("--out", required=True, help="new model folder (must not exist)")
    recalibrate.add_argument("--method", choices=("platt", "temperature", "isotonic"),
                             help="default: the model's own calibration method")
    recalibrate.add_argument("--reason", required=True, help="why, for the change record (e.g. the monitoring alert)")
    recalibrate.add_argument("--by", help="who (default: the login name)")
    recalibrate.add_argument("--rebase-reference", action="store_true",
                             help="make the refit data the new monitoring reference (local go-live)")
    recalibrate.set_defaults(handler=recalibrate_command)

    promote = subparsers.add_parser("promote", help="make a model folder the one serving uses (after a restart)")
    promote.add_argument("model")
    promote.add_argument("--by", help="who (default: the login name)")
    promote.set_defaults(handler=promote_command)


def _write(text: str, output: str | None) -> None:
    if output:
        path = Path(output)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)


def monitor_command(args) -> int:
    from serving import monitoring
    from serving.database import get_engine
    from serving.outcomes import outcomes_from_warehouse
    from serving.prediction_log import log_warehouse_predictions

    engine = get_engine()
    if args.warehouse:
        logged = log_warehouse_predictions(engine, args.warehouse)
        loaded = outcomes_from_warehouse(engine, args.warehouse)
        print(f"readmit monitor: {logged} predictions logged, {loaded} outcomes loaded from {args.warehouse}",
              file=sys.stderr)
    metrics_text = None
    if args.metrics:
        try:
            metrics_text = Path(args.metrics).read_text(encoding="utf-8")
        except OSError as error:
            raise UserError(f"{args.metrics}: cannot be read ({error.strerror})") from None
    report = monitoring.monitoring_report(engine, as_of=args.as_of, reference=args.reference, period=args.period,
                                          model_dir=args.model, model_version=args.model_version,
                                          calls_per_day=args.calls_per_day, metrics_text=metrics_text)
    if args.format == "json":
        text = json.dumps(report, indent=1, sort_keys=True) + "\n"
    else:
        text = monitoring.render_html(report) if args.format == "html" else monitoring.render_text(report)
    _write(text, args.output)
    acts = sum(alert["severity"] == "act" for alert in report["alerts"])
    print(f"readmit monitor: {len(report['periods'])} periods, {len(report['alerts'])} alerts ({acts} act)"
          + (f" -> {args.output}" if args.output else ""), file=sys.stderr)
    return ACT_EXIT_CODE if acts else 0


def outcomes_command(args) -> int:
    from core import spreadsheet
    from core.intake import errors_frame
    from serving.database import get_engine
    from serving.outcomes import outcomes_from_warehouse, read_outcomes_file, write_outcomes

    engine = get_engine()
    if args.warehouse:
        print(f"readmit outcomes: {outcomes_from_warehouse(engine, args.warehouse)} outcomes loaded from "
              f"{args.warehouse}", file=sys.stderr)
        return 0
    rows, errors = read_outcomes_file(args.input, engine)
    written = write_outcomes(engine, rows.frame, origin="upload")
    error_file = Path(args.input).with_name(f"{Path(args.input).stem}.errors.csv")
    if errors:
        error_file.write_bytes(spreadsheet.safe_csv(errors_frame(errors)))
        for error in errors[:MAX_ERRORS_SHOWN]:
            print(error.as_text(), file=sys.stderr)
        if len(errors) > MAX_ERRORS_SHOWN:
            print(f"... and {len(errors) - MAX_ERRORS_SHOWN} more problems", file=sys.stderr)
    elif error_file.exists():
        error_file.unlink()  # a stale list from an earlier run would mislead
    print(f"readmit outcomes: {rows.rows_read} rows read, {written} outcomes recorded, {len(errors)} problems"
          + (f" (all in {error_file})" if errors else ""), file=sys.stderr)
    return 1 if errors else 0


def log_command(args) -> int:
    from serving.database import get_engine
    from serving.prediction_log import log_warehouse_predictions

    logged = log_warehouse_predictions(get_engine(), args.warehouse, since=args.since)
    print(f"readmit log-predictions: {logged} predictions logged" + ("" if logged else " (this run was logged before)"),
          file=sys.stderr)
    return 0


def reference_command(args) -> int:
    from serving.monitoring import model_reference_from_warehouse, save_model_reference

    reference = model_reference_from_warehouse(args.model, args.warehouse, args.split)
    path = save_model_reference(args.model, reference)
    print(f"readmit monitor-reference: {path} from {reference['rows']:,} {args.split} encounters "
          f"({len(reference['features'])} inputs); the model version is unchanged", file=sys.stderr)
    return 0


def recalibrate_command(args) -> int:
    from serving.database import get_engine
    from serving.monitoring import recalibrate

    record = recalibrate(args.warehouse, args.model, args.since, args.out, until=args.until, as_of=args.as_of,
                         method=args.method, reason=args.reason, by=args.by, engine=get_engine(),
                         rebase_reference=args.rebase_reference)
    before, after, held = record["before"], record["after"], record["after_held_out"]
    print(f"readmit recalibrate: {record['folder']} is {record['to_version']} (from {record['from_version']}), "
          f"{record['data']['encounters']:,} encounters: ECE {before['ece']:.4f} -> {after['ece']:.4f} "
          f"(held-out {held['ece']:.4f}), calibration-in-the-large {before['calibration_in_the_large']:+.3f} -> "
          f"{after['calibration_in_the_large']:+.3f}; serve it with `readmit promote {record['folder']}`",
          file=sys.stderr)
    return 0


def promote_command(args) -> int:
    from serving.monitoring import promote, promotion_file

    record = promote(args.model, by=args.by)
    print(f"readmit promote: {record['model_version']} ({record['model_dir']}) promoted by {record['promoted_by']}; "
          f"recorded in {promotion_file()}. Dashboard and API switch when restarted.", file=sys.stderr)
    return 0
