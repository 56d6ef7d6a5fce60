"""Model quality: the shipped transformer beside a tuned LightGBM, and the independent-set protocol.

    pip install -r requirements-bench.txt          # lightgbm, for this benchmark only
    .venv/bin/python benchmarks/model_quality.py --warehouse data/warehouse --model models/champion

Part 1, same test split: LightGBM is tuned by a time-budgeted random search (each candidate trained
on the train split with early stopping on validation AUROC; the best validation AUROC wins; the test
split is never looked at) on the same warehouse features the transformer sees, including the in-file
patient history columns (encounter_seq, prior stays, prior 30-day readmissions). Both models are
scored on the same test rows; the AUROC difference gets a paired patient-cluster bootstrap interval
(the same patient draws for both models).

Part 2, the independent-set protocol of ../shared/EVALUATION.md, simulated: the raw Diabetes 130
rows of the warehouse's test-split patients are written to a temporary CSV, which is given whole to
`readmit score`; label `readmitted == "<30"`; dispositions 11, 13, 14, 19, 20, 21 excluded; AUROC
(patient-cluster bootstrap 95% interval), AUPRC, Brier and ECE (10 equal-frequency bins). The
scorer's risks are also compared with the warehouse-path transformer risks for the same encounters
(training/serving parity).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import torch

from core import (
    metric_report,
    metrics,
)
from core.features import CATEGORICAL_NAMES, CODE_CHAPTERS, NUMERIC_NAMES
from core.warehouse import Warehouse
from models.data import read_split
from models.evaluate import load_predictor, transformer_risk

REPO_ROOT = Path(__file__).resolve().parent.parent



EXCLUDED_DISPOSITIONS = {"11", "13", "14", "19", "20", "21"}
DEFAULT_CSV = REPO_ROOT.parent / "shared" / "data" / "diabetes130" / "diabetic_data_dev.csv"
LGBM_CATEGORICAL = CATEGORICAL_NAMES + CODE_CHAPTERS


# --- LightGBM peer ----------------------------------------------------------------------------

def lgbm_frame(frame: pd.DataFrame, categories: dict[str, list[str]]) -> pd.DataFrame:
    """Raw numerics (LightGBM handles NaN) and categoricals with the TRAIN split's category sets."""
    out = frame[list(NUMERIC_NAMES)].apply(pd.to_numeric, errors="coerce").astype("float64")
    for name in LGBM_CATEGORICAL:
        out[name] = pd.Categorical(frame[name].where(frame[name].notna(), None), categories=categories[name])
    return out


def sample_params(rng: np.random.Generator) -> dict[str, Any]:
    return {"num_leaves": int(rng.choice([7, 15, 31, 63])),
            "learning_rate": float(np.exp(rng.uniform(np.log(0.01), np.log(0.1)))),
            "min_child_samples": int(rng.choice([20, 50, 100, 200, 400])),
            "colsample_bytree": float(rng.uniform(0.4, 1.0)),
            "subsample": float(rng.uniform(0.6, 1.0)), "subsample_freq": 1,
            "reg_lambda": float(np.exp(rng.uniform(np.log(0.01), np.log(30)))),
            "min_data_per_group": int(rng.choice([20, 50, 100, 200])),
            "cat_smooth": float(rng.choice([1, 10, 30, 100])),
            "cat_l2": float(rng.choice([1, 10, 30])),
            "max_cat_to_onehot": 4}


def tune_lightgbm(splits: dict[str, pd.DataFrame], budget_s: float, seed: int, threads: int) -> dict[str, Any]:

    train, validation = splits["train"], splits["validation"]
    categories = {name: sorted(train[name].dropna().unique().tolist()) for name in LGBM_CATEGORICAL}
    x_train, x_val = lgbm_frame(train, categories), lgbm_frame(validation, categories)
    y_train, y_val = _labels(train), _labels(validation)
    rng = np.random.default_rng(seed)
    deadline = time.time() + budget_s
    trials, best = [], None
    while time.time() < deadline or not trials:
        params = sample_params(rng) if trials else {  # first trial: sensible defaults
            "num_leaves": 15, "learning_rate": 0.03, "min_child_samples": 100, "colsample_bytree": 0.7,
            "subsample": 0.8, "subsample_freq": 1, "reg_lambda": 1.0, "min_data_per_group": 100,
            "cat_smooth": 30.0, "cat_l2": 10.0, "max_cat_to_onehot": 4}
        t0 = time.time()
        model = lgb.LGBMClassifier(n_estimators=3000, objective="binary", metric="auc", random_state=seed,
                                   n_jobs=threads,
                                   verbose=-1, **params)
        model.fit(x_train, y_train, eval_X=(x_val,), eval_y=(y_val,),
                  callbacks=[lgb.early_stopping(100, verbose=False)])
        p_val = model.predict_proba(x_val)[:, 1]
        score = metrics.auroc(y_val, p_val)
        trials.append({"params": params, "validation_auroc": score, "trees": int(model.best_iteration_ or 0),
                       "seconds": round(time.time() - t0, 1)})
        print(f"  lightgbm trial {len(trials):>2}: validation AUROC {score:.4f}, "
              f"{trials[-1]['trees']} trees, {trials[-1]['seconds']}s", flush=True)
        if best is None or score > best[0]:
            best = (score, params, model)
    return {"model": best[2], "params": best[1], "validation_auroc": best[0], "trials": trials,
            "categories": categories}


# --- shared helpers ---------------------------------------------------------------------------

def _labels(frame: pd.DataFrame) -> np.ndarray:
    return frame["readmitted_30d"].astype(bool).to_numpy().astype(np.int64)


def summary(y, p, patients, n_boot: int, seed: int) -> dict[str, Any]:
    out = metric_report.overall_metrics(y, p)
    out["auroc_ci"] = metric_report.auroc_interval(y, p, patients, n_boot, seed)
    return out


def print_rows(rows: dict[str, dict[str, Any]]) -> None:
    print(f"  {'model':<28} {'AUROC [95% CI]':<24} {'AUPRC':>6} {'Brier':>6} {'ECE':>6} {'slope':>6} {'n':>7}")
    for name, r in rows.items():
        lo, hi = r["auroc_ci"]
        print(f"  {name:<28} {r['auroc']:.3f} [{lo:.3f}, {hi:.3f}]    {r['auprc']:.3f} {r['brier']:.4f} "
              f"{r['ece']:.4f} {r['calibration_slope']:6.2f} {r['n']:>7}")


# --- part 2: the independent-set protocol, simulated ------------------------------------------

def independent_protocol(warehouse: Warehouse, csv_path: Path, model_dir: str, n_boot: int, seed: int,
                         warehouse_risk: pd.Series | None) -> dict[str, Any]:
    test_patients = set(warehouse.query("SELECT DISTINCT patient_id FROM features WHERE split = 'test'")
                        ["patient_id"].astype(str))
    raw = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    held_out = raw[raw["patient_nbr"].str.strip().isin(test_patients)]
    readmit = REPO_ROOT / ".venv" / "bin" / "readmit"
    command = [str(readmit)] if readmit.exists() else [sys.executable, "-m", "cli.main"]
    with tempfile.TemporaryDirectory(prefix="readmit-bench-") as tmp:
        input_csv, output_csv = Path(tmp) / "independent.csv", Path(tmp) / "scored.csv"
        held_out.to_csv(input_csv, index=False)
        t0 = time.time()
        run = subprocess.run(command + ["score", "--input", str(input_csv), "--output", str(output_csv),
                                        "--model", model_dir], cwd=REPO_ROOT, capture_output=True, text=True)
        seconds = time.time() - t0
        if run.returncode != 0:
            return {"error": f"`readmit score` exited {run.returncode}: {(run.stderr or run.stdout)[-2000:]}",
                    "rows": int(len(held_out))}
        scored = pd.read_csv(output_csv, dtype={"encounter_id": str})
    merged = held_out[["encounter_id", "patient_nbr", "readmitted", "discharge_disposition_id"]].assign(
        encounter_id=held_out["encounter_id"].str.strip()).merge(
        scored[["encounter_id", "risk"]], on="encounter_id", how="left")
    evaluated = merged[~merged["discharge_disposition_id"].str.strip().isin(EXCLUDED_DISPOSITIONS)]
    missing = int(evaluated["risk"].isna().sum())
    if missing:
        return {"error": f"the scorer left {missing} evaluable encounters without a risk", "rows": int(len(held_out))}
    y = (evaluated["readmitted"].str.strip() == "<30").to_numpy().astype(int)
    p = evaluated["risk"].to_numpy(dtype=float)
    result = {"rows_in_file": int(len(held_out)), "patients": int(held_out["patient_nbr"].nunique()),
              "evaluated": int(len(evaluated)), "excluded": int(len(merged) - len(evaluated)),
              "output_rows": int(len(scored)), "prevalence": float(y.mean()), "score_seconds": round(seconds, 1),
              "metrics": summary(y, p, evaluated["patient_nbr"].to_numpy(), n_boot, seed)}
    if warehouse_risk is not None:
        both = evaluated.set_index("encounter_id")["risk"].to_frame().join(warehouse_risk.rename("warehouse"),
                                                                            how="inner")
        result["parity"] = {"compared": int(len(both)),
                            "max_abs_difference": float((both["risk"] - both["warehouse"]).abs().max())
                            if len(both) else None}
    return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", default=str(REPO_ROOT / "data" / "warehouse"))
    parser.add_argument("--model", default=str(REPO_ROOT / "models" / "champion"))
    parser.add_argument("--csv", default=str(DEFAULT_CSV), help="the raw Diabetes 130 dev file")
    parser.add_argument("--budget-s", type=float, default=300.0, help="LightGBM random-search time budget")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--n-boot", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-lightgbm", action="store_true")
    parser.add_argument("--skip-independent", action="store_true")
    parser.add_argument("--json-out", help="write all numbers to this JSON file")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)

    warehouse = Warehouse(args.warehouse)
    splits = {name: read_split(warehouse, name) for name in ("train", "validation", "test")}
    test = splits["test"]
    y, patients = _labels(test), test["patient_id"].astype(str).to_numpy()
    print(f"warehouse {args.warehouse}: train {len(splits['train'])}, validation {len(splits['validation'])}, "
          f"test {len(test)} eligible labelled encounters (test prevalence {y.mean():.3f})")
    report: dict[str, Any] = {"warehouse": args.warehouse, "model": args.model, "n_boot": args.n_boot,
                              "seed": args.seed, "test_rows": int(len(test))}

    predictor = load_predictor(args.model)
    t0 = time.time()
    p_transformer = transformer_risk(predictor, test)
    print(f"transformer {predictor.model_version}: scored {len(test)} test rows in {time.time() - t0:.1f}s")
    rows = {"transformer": summary(y, p_transformer, patients, args.n_boot, args.seed)}

    if not args.skip_lightgbm:
        print(f"LightGBM random search on validation, budget {args.budget_s:.0f}s, {args.threads} thread(s):")
        tuned = tune_lightgbm(splits, args.budget_s, args.seed, args.threads)
        p_lgbm = tuned["model"].predict_proba(lgbm_frame(test, tuned["categories"]))[:, 1]
        rows["lightgbm_tuned"] = summary(y, p_lgbm, patients, args.n_boot, args.seed)
        diff = metric_report.auroc_difference(y, p_transformer, p_lgbm, patients, args.n_boot, args.seed)
        report["lightgbm"] = {"params": tuned["params"], "validation_auroc": tuned["validation_auroc"],
                              "trials": len(tuned["trials"]), "trial_log": tuned["trials"]}
        report["difference_transformer_minus_lightgbm"] = diff
    print("\nsame test split, same rows:")
    print_rows(rows)
    if "difference_transformer_minus_lightgbm" in report:
        d = report["difference_transformer_minus_lightgbm"]
        print(f"  AUROC transformer - LightGBM: {d['difference']:+.4f}, paired patient-cluster bootstrap 95% CI "
              f"[{d['ci'][0]:+.4f}, {d['ci'][1]:+.4f}] ({args.n_boot} replicates)")
    report["same_split"] = rows

    if not args.skip_independent:
        print("\nindependent-set protocol (EVALUATION.md), simulated on the test-split patients' raw rows:")
        warehouse_risk = pd.Series(p_transformer, index=test["encounter_id"].astype(str).to_numpy())
        independent = independent_protocol(warehouse, Path(args.csv), args.model, args.n_boot, args.seed,
                                           warehouse_risk)
        report["independent_protocol"] = independent
        if "error" in independent:
            print(f"  not available: {independent['error']}")
        else:
            print(f"  {independent['rows_in_file']} rows ({independent['patients']} patients) scored by "
                  f"`readmit score` in {independent['score_seconds']}s; {independent['excluded']} excluded "
                  f"(died/hospice); {independent['evaluated']} evaluated, prevalence {independent['prevalence']:.3f}")
            print_rows({"transformer (readmit score)": independent["metrics"]})
            if "parity" in independent:
                print(f"  scorer vs warehouse risk on {independent['parity']['compared']} shared encounters: "
                      f"max |difference| {independent['parity']['max_abs_difference']:.2e}")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(metrics.json_safe(report), indent=1))
        print(f"\nwrote {args.json_out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
