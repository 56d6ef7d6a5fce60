"""Benchmark: `readmit monitor` over a prediction log of a million scored discharges with their outcomes.

    .venv/bin/python benchmarks/monitoring.py [--rows 1000000] [--base 100000] [--keep DIR]

Set-up (not timed): `--base` synthetic encounters are scored by the shipped model and their feature rows
logged as the scoring service logs them, copied with new identifiers and discharge days spread over two
years until the log holds `--rows` rows, each with an outcome, in a SQLite database. Timed: the whole
`readmit monitor` command (a fresh process: start-up, reading and parsing the log, every check, the JSON
report), and, as a peer, the same drift computation done naively with pandas (per input and month: bin
with `pd.cut` / `value_counts`, PSI in Python, `scipy.stats.ks_2samp` / chi-squared) on the rows already
in memory. Prints seconds (wall and CPU, with the load average: on a shared machine the wall time
follows the load), rows per second and the ratio.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from core import synthetic  # noqa: E402
from core.features import NUMERIC_NAMES  # noqa: E402
from serving import monitoring  # noqa: E402
from serving.database import engine_for, migrate  # noqa: E402
from serving.monitoring import drift as monitoring_drift  # noqa: E402
from serving.prediction_log import feature_payloads  # noqa: E402
from serving.scoring import ScoringService  # noqa: E402

AS_OF = dt.date(2026, 11, 27)
DAYS = 730
INSERT = ("INSERT INTO prediction_log (logged_at, channel, model_version, source, encounter_id, patient_id, risk, "
          "risk_tier, features) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)")
OUTCOME = ("INSERT INTO outcome (source, encounter_id, readmitted_30d, readmission_date, recorded_at, origin) "
           "VALUES (?, ?, ?, NULL, ?, 'etl')")


def base_rows(n: int) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """Predictions and feature rows of `n` synthetic encounters, scored by the shipped model."""
    service = ScoringService.load(ROOT / "models" / "champion", explain=False)
    encounters = synthetic.generate_chunk(0, n, seed=3, end=AS_OF)
    predictions = service.score_encounters(encounters, explain=False)
    features = service.features_for(encounters).assign(
        readmitted=encounters["readmitted_30d"].map({True: 1, False: 0}).to_numpy())
    return predictions, features, service.model_version


def fill_log(db: Path, rows: int, base: int) -> None:
    predictions, features, version = base_rows(base)
    engine = engine_for(f"sqlite:///{db}")
    migrate(engine)
    rng = np.random.default_rng(0)
    first = np.datetime64(AS_OF - dt.timedelta(days=DAYS), "D")
    done, copy = 0, 0
    with engine.begin() as connection:
        while done < rows:
            take = min(base, rows - done)
            part = features.iloc[:take].copy()
            part["discharge_time"] = first + rng.integers(0, DAYS, take).astype("timedelta64[D]") + np.timedelta64(14, "h")
            payloads = feature_payloads(predictions.iloc[:take].reset_index(drop=True), part)
            ids = [f"B{copy:02d}{i:08d}" for i in range(take)]
            patients = [f"Q{copy:02d}{p}" for p in predictions["patient_id"].iloc[:take]]
            risk = predictions["risk"].iloc[:take].to_numpy()
            tier = predictions["risk_tier"].iloc[:take].to_numpy()
            connection.exec_driver_sql(INSERT, [
                ("2026-11-27 06:00:00.000000", "warehouse", version, "synthetic", ids[i], patients[i],
                 None if np.isnan(risk[i]) else float(risk[i]), tier[i], payloads[i]) for i in range(take)])
            label = part["readmitted"].to_numpy()
            connection.exec_driver_sql(OUTCOME, [("synthetic", ids[i], int(label[i]), "2026-11-27 06:00:00.000000")
                                                 for i in range(take) if label[i] == label[i]])
            done += take
            copy += 1
            print(f"  set-up: {done:,} rows logged", flush=True)


def naive_drift(rows: pd.DataFrame, reference: pd.DataFrame, names: list[str]) -> int:
    """Per input and month: bin, count, PSI in a Python loop, and a test, the straightforward pandas way."""
    months = rows["discharge"].dt.to_period("M")
    cells = 0
    for name in names:
        ref = reference[name].astype(object if name not in NUMERIC_NAMES else np.float64)
        for _, values in rows[name].astype(ref.dtype).groupby(months):
            if name in NUMERIC_NAMES:
                edges = np.unique(np.nanquantile(ref.astype(float), np.linspace(0, 1, 11)))
                bins = [-np.inf, *edges[1:-1], np.inf]
                r = pd.cut(ref, bins).value_counts(normalize=True, sort=False)
                c = pd.cut(values, bins).value_counts(normalize=True, sort=False)
                stats.ks_2samp(ref.dropna(), values.dropna())
            else:
                r = ref.fillna("(missing)").value_counts(normalize=True)
                c = values.fillna("(missing)").value_counts(normalize=True)
                table = pd.concat([r, c], axis=1).fillna(0).T.to_numpy() * [[len(ref)], [len(values)]]
                table = table[:, table.sum(axis=0) > 0]
                if table.shape[1] > 1:
                    stats.chi2_contingency(table)
            r, c = r.align(c, fill_value=0)
            sum((b - a) * np.log(max(b, 1e-4) / max(a, 1e-4)) for a, b in zip(r, c))
            cells += 1
    return cells


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--base", type=int, default=100_000, help="distinct scored encounters, copied to --rows")
    parser.add_argument("--keep", help="folder for the database (kept, reused when it exists)")
    args = parser.parse_args()
    folder = Path(args.keep or tempfile.mkdtemp(prefix="readmit-monitor-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "ops.sqlite3"
    started = time.perf_counter()
    if not db.exists():
        fill_log(db, args.rows, args.base)
        print(f"set-up: {time.perf_counter() - started:.0f} s ({db.stat().st_size / 1e9:.2f} GB)", flush=True)
    reference = f"{AS_OF - dt.timedelta(days=DAYS)}:{AS_OF - dt.timedelta(days=DAYS // 2)}"
    env = dict(os.environ, READMIT_DATABASE_URL=f"sqlite:///{db}", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "cli.main", "monitor", "--as-of", AS_OF.isoformat(), "--reference", reference,
               "--output", str(folder / "report.json")]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    took = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode not in (0, 3):
        print(done.stderr)
        return 1
    print(f"readmit monitor over {args.rows:,} logged predictions with outcomes: {took:.1f} s, "
          f"{args.rows / took:,.0f} rows/s; {cpu:.1f} s of CPU; load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores (exit code {done.returncode}; {done.stderr.strip().splitlines()[-1]})")

    engine = engine_for(f"sqlite:///{db}")
    started = time.perf_counter()
    rows = monitoring.load_monitoring_rows(engine, AS_OF)
    loaded = time.perf_counter() - started
    start, end = monitoring.parse_window(reference)
    inside = rows[(rows["discharge"] >= np.datetime64(start)) & (rows["discharge"] <= np.datetime64(end))]
    chosen = monitoring.Reference("window", monitoring.build_reference(inside, inside["risk"], description="bench",
                                                                       min_cell=1), (start, end))
    codes, periods = monitoring.assign_periods(rows["discharge"].to_numpy(), "month")
    summaries = [{"period": monitoring.period_id(p), "complete": True} for p in periods]
    names = [n for n in monitoring.MONITORED if n in chosen.profile["features"]]
    started = time.perf_counter()
    monitoring_drift._drift(rows, codes, periods, np.ones(len(rows), dtype=bool), chosen, summaries)
    ours = time.perf_counter() - started
    started = time.perf_counter()
    cells = naive_drift(rows, inside, names)
    naive = time.perf_counter() - started
    print(f"  reading and parsing the log in-process: {loaded:.1f} s")
    print(f"  drift of {len(names)} inputs x {len(periods)} months ({cells} cells): serving.monitoring {ours:.1f} s, "
          f"naive pandas per input {naive:.1f} s: {naive / ours:.1f}x")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
