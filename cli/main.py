"""`readmit`: the one command-line entry point.

Each area registers its subcommands from its own module (`register(subparsers)`), so the data,
model and serving teams never edit the same file. A subcommand returns an exit code; user errors
(`UserError`) print one clear line to stderr and exit 2, never a traceback.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Sequence

from core.errors import UserError

COMMAND_MODULES = (
    "cli.data_commands",      # fetch, etl, synth, template, sql
    "cli.train_commands",     # train, publish
    "cli.evaluate_commands",  # evaluate
    "cli.score_commands",     # score
    "cli.app_commands",       # app, demo
    "cli.api_commands",       # api
    "cli.worklist_commands",  # worklist, outreach
    "cli.monitor_commands",   # monitor, outcomes, log-predictions, monitor-reference, recalibrate, promote
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="readmit", description="30-day readmission risk toolkit")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as missing:
            if missing.name != name:
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except UserError as error:
        print(f"readmit {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
