"""Schemathesis over every operation of a real `readmit api`, for longer than the test suite affords.

    python benchmarks/fuzz_api.py [--seconds 150] [--seed 0] [--model DIR] [--data diabetic_data_dev.csv]

Starts the API on a free 127.0.0.1 port with a tiny untrained model built from the head of the
Diabetes 130 file (as tests/test_api_integration.py does), or with --model, then runs the suite's
schemathesis command (`schemathesis_run`: every check but positive_data_acceptance) with the
stateful phase added, randomised from --seed instead of deterministic, for --seconds. Prints the
summary and the server log's error lines; exits 0 when schemathesis found no failure. `make fuzz`.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests")]

from test_api_integration import (  # noqa: E402 (the test helpers live in tests/, on the path set above)
    build_tiny_model_dir,
    free_port,
    schemathesis_run,
    start_api,
    stop,
    wait_ready,
)

DEFAULT_DATA = REPO.parent / "shared" / "data" / "diabetes130" / "diabetic_data_dev.csv"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--model", type=Path, help="model folder (default: a tiny untrained one)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Diabetes 130 CSV for the tiny model")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="readmit-fuzz-") as folder:
        work = Path(folder)
        model = args.model or build_tiny_model_dir(work / "model", args.data)
        port = free_port()
        process = start_api(model, port, log_path=work / "server.log")
        try:
            wait_ready(f"http://127.0.0.1:{port}", process)
            result = schemathesis_run(f"http://127.0.0.1:{port}", work, args.seconds, "--seed", str(args.seed),
                                      phases="examples,coverage,fuzzing,stateful")
        finally:
            stop(process)
        print(result.stdout[-8000:], result.stderr[-2000:])
        errors = [line for line in (work / "server.log").read_text(errors="replace").splitlines()
                  if "ERROR" in line or "Traceback" in line]
        print(f"server log: {len(errors)} error lines", *errors[:20], sep="\n")
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
