"""Speed (and explanation fidelity) of the scoring service, each figure printed beside its target.

    .venv/bin/python benchmarks/scoring.py [--model models/champion] [--rows 15000] [--skip-cli]

(a) `readmit score` end to end (a fresh process: imports, model load, CSV read, validation, features,
    scoring, reasons, CSV write) on ROWS Diabetes 130 rows with reasons: target < 30 s;
(b) batch scoring without explanations, rows/s: target >= 5,000/s (model only, and whole
    `score_encounters` from canonical rows);
(c) one explanation (`ScoringService.explain_one`, sampled Shapley): target < 0.5 s;
(d) fidelity of the fast batch explanations (gradient) against sampled Shapley with many samples.
Wall time is what the targets mean; CPU time of this process is printed beside it, because this
machine's 2 cores are shared (the load average is printed too).
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from core.encoding import encode
from core.sources import diabetes130
from models.explain import sampled_shapley
from serving.scoring import ScoringService

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

DEV_FILE = REPO.parent / "shared" / "data" / "diabetes130" / "diabetic_data_dev.csv"


def line(name: str, value: str, target: str, ok: bool) -> None:
    print(f"{name:<58} {value:>16}   target {target:<12} {'OK' if ok else 'MISSED'}", flush=True)


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "champion"))
    parser.add_argument("--rows", type=int, default=15000)
    parser.add_argument("--skip-cli", action="store_true")
    parser.add_argument("--fidelity-rows", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = Path(args.model)
    if not (model / "config.json").exists():
        print(f"no model in {model}: train one or pass --model", file=sys.stderr)
        return 1
    print(f"model {model}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; torch threads 1")
    raw_all = pd.read_csv(DEV_FILE, dtype=str, keep_default_na=False)
    raw = raw_all.tail(args.rows).reset_index(drop=True)  # the file's last rows: a stand-in for a new batch
    with tempfile.TemporaryDirectory() as tmp:
        source = Path(tmp) / "batch.csv"
        raw.to_csv(source, index=False)

        # (a) the command, end to end, in a fresh process
        if not args.skip_cli:
            output = Path(tmp) / "out.csv"
            command = [str(REPO / ".venv" / "bin" / "readmit"), "score", "--input", str(source), "--output",
                       str(output), "--model", str(model)]
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            started = time.perf_counter()
            completed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
            elapsed = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            child_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            print(completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "(no output)")
            result = pd.read_csv(output) if completed.returncode == 0 else None
            line(f"(a) readmit score, {len(raw):,} rows with reasons (wall)", f"{elapsed:.1f} s", "< 30 s",
                 completed.returncode == 0 and elapsed < 30)
            print(f"    ... CPU time of that process: {child_cpu:.1f} s (what an idle 1-core run would take, about)")
            if result is not None:
                print(f"    rows out {len(result):,}; with reasons {int(result['reason_1'].notna().sum()):,}")

        # in-process breakdown
        service, wall, cpu = timed(lambda: ScoringService.load(model))
        print(f"    load model + explainer: {wall:.2f} s wall, {cpu:.2f} s CPU (background: {service.background_source})")
        (predictions, errors), wall, cpu = timed(lambda: service.score_file(source))
        line("    score_file with reasons, in process (wall)", f"{wall:.1f} s", "< 30 s", wall < 30)
        print(f"    ... CPU {cpu:.1f} s; {len(raw) / wall:,.0f} rows/s")
        canonical = diabetes130.to_canonical(raw)
        features, wall, _ = timed(lambda: service.features_for(canonical))
        print(f"    of which canonical mapping + features: {wall:.2f} s")
        eligible = features[features["eligible"]]
        batch, wall, _ = timed(lambda: encode(eligible, service.preprocessing))
        print(f"    of which encoding: {wall:.2f} s")
        _, wall, cpu = timed(lambda: service.explainer.explain(batch))
        print(f"    of which gradient explanations (incl. the scoring forward): {wall:.2f} s wall, {cpu:.2f} s CPU")

        # (b) batch scoring without explanations
        _, wall, cpu = timed(lambda: service.risk(batch))
        line(f"(b) model scoring, {len(batch):,} encoded rows, no reasons", f"{len(batch) / wall:,.0f} rows/s",
             ">= 5,000/s", len(batch) / wall >= 5000)
        print(f"    ... CPU {len(batch) / cpu:,.0f} rows per CPU-second")
        _, wall, cpu = timed(lambda: service.score_encounters(canonical, explain=False))
        line("(b') score_encounters from canonical rows, no reasons", f"{len(canonical) / wall:,.0f} rows/s",
             ">= 5,000/s", len(canonical) / wall >= 5000)

    # (c) one explanation
    one = canonical.iloc[[10]]
    service.explain_one(one)
    times = []
    for _ in range(7):
        _, wall, _ = timed(lambda: service.explain_one(one))
        times.append(wall)
    median = statistics.median(times)
    line(f"(c) one explanation, sampled Shapley x{service.single_samples} (median of 7)", f"{median:.3f} s",
         "< 0.5 s", median < 0.5)
    times = []
    for _ in range(7):
        _, wall, _ = timed(lambda: service.score_encounters(one, explain=True))
        times.append(wall)
    print(f"    one row with gradient reasons (median of 7): {statistics.median(times):.3f} s")

    # (d) fidelity of the fast batch explanations
    rows = batch.take(np.linspace(0, len(batch) - 1, args.fidelity_rows).astype(int))
    (reference, _), wall, _ = timed(lambda: sampled_shapley(service.risk, rows, service.background, n_samples=128))
    fast, _ = service.explainer.explain(rows)
    cheap, _ = sampled_shapley(service.risk, rows, service.background, n_samples=service.single_samples, seed=1)
    for name, values in (("gradient (batch default)", fast), (f"sampled Shapley x{service.single_samples}", cheap)):
        top1 = np.mean([np.argmax(np.abs(a)) == np.argmax(np.abs(b)) for a, b in zip(values, reference)])
        top3 = np.mean([len(set(np.argsort(-np.abs(a))[:3]) & set(np.argsort(-np.abs(b))[:3])) / 3
                        for a, b in zip(values, reference)])
        visible = np.abs(reference) > 0.01
        sign = np.mean(np.sign(values[visible]) == np.sign(reference[visible])) if visible.any() else float("nan")
        print(f"(d) {name:<28} vs Shapley x128 on {len(rows)} rows: top-1 {top1:.2f}, top-3 overlap {top3:.2f}, "
              f"sign (|ref| > 1 point) {sign:.2f}, max error {np.abs(values - reference).max():.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
