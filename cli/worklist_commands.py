"""`readmit worklist` prints or writes today's call list; `readmit outreach` records a call.

    readmit worklist [--warehouse W] [--as-of YYYY-MM-DD] [--capacity N] [--window DAYS] [--output F.csv]
                     [--by USER]
    readmit outreach --encounter E --status STATUS [--note TEXT] [--by USER] [--source S] [--warehouse W]

Both use the dashboard's operational database (READMIT_DATABASE_URL) and the same rules: the call list
is the N highest-risk open patients as of the date (READMIT_CALLS_PER_DAY, READMIT_FOLLOW_UP_DAYS,
READMIT_TIME_ZONE; for synthetic demo data "today" is the newest discharge date), and it is stored
(call_list, call_list_entry) each time it is built. The CSV starts with the columns rank, patient_id,
encounter_id, discharge_date, days_since_discharge, risk, risk_tier, reason_1, reason_2, reason_3, status
and is formula-safe: a text cell a spreadsheet would run as a formula starts with a quote.
"""
from __future__ import annotations

import argparse
import datetime as dt
import getpass
import sys
from pathlib import Path

from core.errors import UserError


def register(subparsers) -> None:
    worklist = subparsers.add_parser("worklist", help="print or write today's call list (CSV) and store it",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    worklist.add_argument("--warehouse", help="warehouse root (default READMIT_WAREHOUSE)")
    worklist.add_argument("--as-of", type=_date, help="the list's date, YYYY-MM-DD (default: today in "
                                                      "READMIT_TIME_ZONE; demo data: the newest discharge date)")
    worklist.add_argument("--capacity", type=_positive, help="calls per day (default READMIT_CALLS_PER_DAY)")
    worklist.add_argument("--window", type=_positive, help="follow-up window in days after discharge "
                                                           "(default READMIT_FOLLOW_UP_DAYS)")
    worklist.add_argument("--output", help="CSV file to write (default: print to standard output)")
    worklist.add_argument("--by", help="who builds the list (default: the login name)")
    worklist.set_defaults(handler=run_worklist)

    outreach = subparsers.add_parser("outreach", help="record a call (or another outreach result) for an encounter",
                                     description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    outreach.add_argument("--encounter", required=True, help="encounter id")
    outreach.add_argument("--status", required=True,
                          help="the result, e.g. reached, no_answer, follow_up_booked (an unknown one is refused "
                               "with the list)")
    outreach.add_argument("--note", help="short note (at most 1,000 characters)")
    outreach.add_argument("--by", help="who recorded it (default: the login name)")
    outreach.add_argument("--source", help="the encounter's source, needed only when the id exists in several")
    outreach.add_argument("--warehouse", help="warehouse root (default READMIT_WAREHOUSE)")
    outreach.set_defaults(handler=run_outreach)


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date in the form YYYY-MM-DD: {text[:40]!r}") from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text[:40]!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be 1 or more")
    return value


def _user(by) -> str:
    return by or getpass.getuser()


def run_worklist(args) -> int:
    from core.config import get_settings
    from core.warehouse import Warehouse
    from serving import home, outreach, upload, worklist
    from serving.database import get_engine

    settings = get_settings()
    root = args.warehouse or settings.warehouse
    status = home.data_status(root)
    if not status.usable:
        raise UserError(status.problem)
    index = worklist.WorklistIndex(Warehouse(root))
    as_of = args.as_of or worklist.default_as_of(index.latest_discharge, status.synthetic, settings.time_zone)
    window = args.window or settings.follow_up_days
    capacity = args.capacity or settings.calls_per_day
    engine = get_engine()
    rows = worklist.window_rows(index, as_of, window, upload.uploaded_rows(engine))
    day = worklist.build_day_list(rows, outreach.histories(engine, worklist.encounter_keys(rows)), as_of, window,
                                  capacity)
    stored = worklist.store_call_list(engine, day, by=_user(args.by), model_version=index.model_version,
                                      time_zone=settings.time_zone)
    csv = worklist.call_list_csv(day)
    if args.output:
        Path(args.output).write_bytes(csv)
    else:
        sys.stdout.write(csv.decode("utf-8"))
    print(f"readmit worklist: call list for {as_of:%Y-%m-%d}: {len(day.call_list):,} of "
          f"{worklist.count_words(len(day.open), 'open patient')} (discharged in the last "
          f"{worklist.count_words(window, 'day')}), {worklist.count_words(len(day.handled), 'patient')} handled; "
          f"{'stored as' if stored.created else 'same as stored'} call list {stored.id}"
          + (f"; written to {args.output}" if args.output else ""), file=sys.stderr)
    return 0


def run_outreach(args) -> int:
    from core.config import get_settings
    from core.warehouse import Warehouse
    from serving import outreach, upload, worklist
    from serving.database import get_engine

    root = args.warehouse or get_settings().warehouse
    engine = get_engine()
    index = worklist.WorklistIndex(Warehouse(root))
    found = index.query("SELECT DISTINCT source, patient_id FROM all_rows WHERE encounter_id = ? "
                        "AND (? IS NULL OR source = ?) ORDER BY source",
                        [args.encounter, args.source, args.source], uploads=upload.uploaded_rows(engine))
    if found.empty:
        where = f" in source {args.source}" if args.source else ""
        raise UserError(f"no encounter {args.encounter}{where} in the warehouse {root} or the uploaded discharges")
    if len(found) > 1:
        raise UserError(f"encounter {args.encounter} exists in several sources ({', '.join(found['source'])}): "
                        "say which with --source")
    source, patient_id = str(found["source"].iloc[0]), str(found["patient_id"].iloc[0])
    event = outreach.record_event(engine, source, args.encounter, patient_id, args.status, args.note,
                                  by=_user(args.by))
    effect = "the case is closed" if event.closing else "the patient stays on the open list"
    print(f"readmit outreach: recorded {event.label} for encounter {args.encounter} (patient {patient_id}, "
          f"source {source}) by {event.recorded_by}; {effect}.")
    return 0
