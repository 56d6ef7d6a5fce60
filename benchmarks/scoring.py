"""Speed and explanation fidelity of the scoring service, each figure beside its target and its peer.

    .venv/bin/python benchmarks/scoring.py [--model models/champion] [--rows 15000] [--skip-cli]
                                           [--fidelity-rows 500] [--reference-pairs 8] [--skip-fidelity]

(a) `readmit score` end to end (a fresh process: imports, model load, CSV read, validation, features,
    scoring, reasons, CSV write) on ROWS Diabetes 130 rows with reasons: target < 120 s;
(b) batch scoring without explanations: target >= 5,000 rows/s (model only, and whole
    `score_encounters` from canonical rows);
(c) one explanation (`ScoringService.explain_one`): target < 0.5 s;
(d) fidelity of the explanations (`models.explain.two_sided_shapley`, the method every path uses) on
    FIDELITY_ROWS eligible encounters of the test split, against `reference_shapley` (every background
    row, PAIRS antithetic pairs of random orders each): targets top-1 agreement >= 0.9 and top-3 overlap
    >= 0.85. Peers: the reference against itself with another seed (the ceiling any method can reach
    against a sampled reference), and the integrated-gradients method the explanations used before
    (recorded below: it was removed from the code once this method met the targets).
Wall time is what the targets mean; CPU time is printed beside it, because this machine's 2 cores are
shared (the load average is printed too).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from core.encoding import encode  # noqa: E402
from core.sources import diabetes130  # noqa: E402
from etl.transform import _HASH_DIGITS, DEFAULT_RATIOS, DEFAULT_SALT  # noqa: E402
from models.explain import two_sided_shapley  # noqa: E402
from models.explain_reference import reference_shapley  # noqa: E402
from serving.scoring import ScoringService  # noqa: E402

DEV_FILE = REPO.parent / "shared" / "data" / "diabetes130" / "diabetic_data_dev.csv"
# The integrated-gradients method the explanations used before (trapezoid rule on the feature tokens,
# `TokenExplainer` in models/explain.py at commit 5363be1), measured on the same 500 test encounters against
# the same reference (pairs 8, seed 0) on 2026-11-29, load average 8.4 on 2 cores; time is CPU per row.
GRADIENT_PEER = {"top1": 0.352, "top3": 0.553, "max_error": 0.1349, "mean_error": 0.00457, "ms_per_row": 0.12}


def line(name: str, value: str, target: str, ok: bool) -> None:
    print(f"{name:<62} {value:>16}   target {target:<12} {'OK' if ok else 'MISSED'}", flush=True)


def timed(fn):
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def load_average() -> str:
    return f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"


def in_test_split(patient_ids: pd.Series) -> np.ndarray:
    """The ETL's patient split (`etl.transform.patient_fraction`: salted sha256, default ratios): test rows."""
    scale = float(16 ** _HASH_DIGITS)
    fraction = np.array([int(hashlib.sha256((DEFAULT_SALT + str(p)).encode()).hexdigest()[:_HASH_DIGITS], 16)
                         / scale for p in patient_ids])
    return fraction >= DEFAULT_RATIOS[0] + DEFAULT_RATIOS[1]


def agreement(estimate: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    """Top-1 agreement, mean top-3 overlap (ranked by magnitude) and errors in risk points."""
    top1 = np.mean([np.argmax(np.abs(a)) == np.argmax(np.abs(b)) for a, b in zip(estimate, reference)])
    top3 = np.mean([len(set(np.argsort(-np.abs(a))[:3]) & set(np.argsort(-np.abs(b))[:3])) / 3
                    for a, b in zip(estimate, reference)])
    error = np.abs(estimate - reference)
    return {"top1": float(top1), "top3": float(top3), "max_error": float(error.max()),
            "mean_error": float(error.mean())}


def describe(name: str, figures: dict[str, float]) -> str:
    return (f"{name:<44} top-1 {figures['top1']:.3f}  top-3 {figures['top3']:.3f}  max error "
            f"{100 * figures['max_error']:.2f} points  mean error {100 * figures['mean_error']:.3f} points"
            + (f"  {figures['ms_per_row']:.2f} ms CPU/row" if "ms_per_row" in figures else ""))


def fidelity(service: ScoringService, rows: int, pairs: int) -> None:
    """(d): the explanations against the reference, on test-split encounters (history from the whole file)."""
    raw = pd.read_csv(DEV_FILE, dtype=str, keep_default_na=False)
    features = service.features_for(diabetes130.to_canonical(raw))
    test = features[features["eligible"].astype(bool).to_numpy() & in_test_split(features["patient_id"])]
    chosen = test.iloc[np.linspace(0, len(test) - 1, rows).astype(int)]
    batch = encode(chosen, service.preprocessing)
    risk = service.risk(batch)
    (ours, base), wall, cpu = timed(lambda: two_sided_shapley(service.risk, batch, risk, service.background,
                                                              service.background_risk))
    ours_speed = 1000 * cpu / len(batch)
    print(f"    {len(batch)} test encounters; two-sided Shapley {wall:.1f} s wall, {cpu:.1f} s CPU; {load_average()}")
    (reference, reference_base), wall, cpu = timed(lambda: reference_shapley(
        service.risk, batch, service.background, pairs=pairs, seed=0))
    reference_speed = 1000 * cpu / len(batch)
    print(f"    reference (pairs {pairs}): {wall:.1f} s wall, {cpu:.1f} s CPU; {load_average()}")
    assert abs(base - reference_base) < 1e-12
    print(f"    additivity: max |base + sum - risk| = {np.abs(base + ours.sum(1) - risk).max():.1e}")
    ceiling_rows = batch.take(np.arange(min(100, len(batch))))
    again, _ = reference_shapley(service.risk, ceiling_rows, service.background, pairs=pairs, seed=1)
    ceiling = agreement(again, reference[:len(ceiling_rows)])
    new = {**agreement(ours, reference), "ms_per_row": ours_speed}
    print(describe(f"(d) reference vs itself, seed 1 ({len(ceiling_rows)} rows)", ceiling))
    print(describe("(d) peer: integrated gradients (recorded)", GRADIENT_PEER))
    print(f"(d) {'reference_shapley (the peer for speed)':<44} {reference_speed:.1f} ms CPU/row")
    print(describe("(d) two-sided Shapley (every path)", new))
    line(f"(d) top-1 agreement with the reference, {len(batch)} rows", f"{new['top1']:.3f}", ">= 0.9",
         new["top1"] >= 0.9)
    line(f"(d) top-3 overlap with the reference, {len(batch)} rows", f"{new['top3']:.3f}", ">= 0.85",
         new["top3"] >= 0.85)
    print(f"    ratios to the gradient peer: top-1 x{new['top1'] / GRADIENT_PEER['top1']:.2f}, "
          f"top-3 x{new['top3'] / GRADIENT_PEER['top3']:.2f}, CPU time per row "
          f"x{new['ms_per_row'] / GRADIENT_PEER['ms_per_row']:.0f}")
    print(f"    ratio to the reference: x{reference_speed / new['ms_per_row']:.0f} less CPU time per row")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "champion"))
    parser.add_argument("--rows", type=int, default=15000)
    parser.add_argument("--skip-cli", action="store_true")
    parser.add_argument("--skip-fidelity", action="store_true")
    parser.add_argument("--fidelity-rows", type=int, default=500)
    parser.add_argument("--reference-pairs", type=int, default=8)
    args = parser.parse_args()
    torch.set_num_threads(1)

    model = Path(args.model)
    if not (model / "config.json").exists():
        print(f"no model in {model}: train one or pass --model", file=sys.stderr)
        return 1
    print(f"model {model}; {load_average()}; torch threads 1")
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
            completed = subprocess.run(command, capture_output=True, text=True,
                                       env={**os.environ, "OMP_NUM_THREADS": "1"})
            elapsed = time.perf_counter() - started
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            child_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
            print(completed.stderr.strip().splitlines()[-1] if completed.stderr.strip() else "(no output)")
            result = pd.read_csv(output) if completed.returncode == 0 else None
            line(f"(a) readmit score, {len(raw):,} rows with reasons (wall)", f"{elapsed:.1f} s", "< 120 s",
                 completed.returncode == 0 and elapsed < 120)
            print(f"    ... CPU time of that process: {child_cpu:.1f} s (about what an idle 1-core run takes); "
                  f"{load_average()}")
            if result is not None:
                print(f"    rows out {len(result):,}; with reasons {int(result['reason_1'].notna().sum()):,}")

        # in-process breakdown
        service, wall, cpu = timed(lambda: ScoringService.load(model))
        print(f"    load model: {wall:.2f} s wall, {cpu:.2f} s CPU (background: {service.background_source})")
        (predictions, errors), wall, cpu = timed(lambda: service.score_file(source))
        print(f"    score_file with reasons, in process: {wall:.1f} s wall, {cpu:.1f} s CPU; {load_average()}")
        canonical = diabetes130.to_canonical(raw)
        features, wall, _ = timed(lambda: service.features_for(canonical))
        print(f"    of which canonical mapping + features: {wall:.2f} s")
        eligible = features[features["eligible"]]
        batch, wall, _ = timed(lambda: encode(eligible, service.preprocessing))
        print(f"    of which encoding: {wall:.2f} s")
        risk = service.risk(batch)
        _, wall, cpu = timed(lambda: two_sided_shapley(service.risk, batch, risk, service.background,
                                                       service.background_risk))
        print(f"    of which explanations: {wall:.1f} s wall, {cpu:.1f} s CPU "
              f"({1000 * cpu / len(batch):.2f} ms CPU per encounter)")

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
    line("(c) one explanation, explain_one (median of 7)", f"{median:.3f} s", "< 0.5 s", median < 0.5)

    # (d) fidelity
    if not args.skip_fidelity:
        fidelity(service, args.fidelity_rows, args.reference_pairs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
