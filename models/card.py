"""The model card: README.md with Hugging Face YAML metadata, generated from the model folder's JSON.

Sources, all optional except config.json: training.json (written by `readmit train`), calibration.json,
thresholds.json and metrics.json (written by `readmit evaluate`: per model, `evaluate_predictions` output
with "overall", "capacity", "reliability", "subgroups"). Sections whose source is absent say so instead
of inventing numbers. Re-run `write_card(folder)` after `readmit evaluate` to refresh it. The card shows
the version sealed in manifest.json and warns when metrics.json measured another version.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from models.manifest import MANIFEST_FILE, version_label

CARD_FILE = "README.md"
PRIMARY_NAMES = ("transformer", "readmit-transformer", "model", "champion")
CITATION = ("Strack B, DeShazo JP, Gennings C, Olmo JL, Ventura S, Cios KJ, Clore JN. Impact of HbA1c "
            "Measurement on Hospital Readmission Rates: Analysis of 70,000 Clinical Database Patient Records. "
            "BioMed Research International, vol. 2014, Article ID 781670, 11 pages, 2014. "
            "https://doi.org/10.1155/2014/781670")
DATASET_URL = "https://archive.ics.uci.edu/dataset/296/diabetes+130-us+hospitals+for+years+1999-2008"


def _read(folder: Path, name: str) -> Optional[dict[str, Any]]:
    path = folder / name
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


def _num(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, (int, float)):
        return f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return str(value)


def _interval(ci: Any) -> str:
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci):
        return f" ({ci[0]:.3f}–{ci[1]:.3f})"
    return ""


def _evaluations(metrics: Any, prefix: str = "") -> Iterable[tuple[str, dict[str, Any]]]:
    """Every (name, evaluation) pair in metrics.json: an evaluation is a dict with an "overall" dict."""
    if not isinstance(metrics, dict):
        return
    if isinstance(metrics.get("overall"), dict):
        yield prefix or "transformer", metrics
        return
    for key, value in metrics.items():
        if isinstance(value, dict):
            yield from _evaluations(value, f"{prefix}/{key}" if prefix else str(key))


def _primary(evaluations: list[tuple[str, dict[str, Any]]]) -> Optional[tuple[str, dict[str, Any]]]:
    for name, evaluation in evaluations:
        if any(part in PRIMARY_NAMES for part in name.lower().split("/")):
            return name, evaluation
    return evaluations[0] if evaluations else None


def _metric_table(evaluations: list[tuple[str, dict[str, Any]]]) -> list[str]:
    lines = ["| model / split | n | AUROC (95% CI) | AUPRC | Brier | ECE |", "|---|---|---|---|---|---|"]
    for name, evaluation in evaluations:
        o = evaluation["overall"]
        lines.append(f"| {name} | {_num(o.get('n'))} | {_num(o.get('auroc'))}{_interval(o.get('auroc_ci'))} | "
                     f"{_num(o.get('auprc'))} | {_num(o.get('brier'))} | {_num(o.get('ece'))} |")
    return lines


def _subgroup_lines(evaluation: dict[str, Any]) -> list[str]:
    subgroups = evaluation.get("subgroups") or {}
    if not subgroups:
        return ["No subgroup results in metrics.json."]
    lines = ["| group | level | n | positives | AUROC (95% CI) | ECE | mean predicted | observed rate |",
             "|---|---|---|---|---|---|---|---|"]
    for group, rows in subgroups.items():
        rows = rows if isinstance(rows, list) else [{"level": k, **v} for k, v in rows.items()]
        for row in rows:
            small = " (small)" if row.get("small") else ""
            lines.append(f"| {group} | {row.get('level')}{small} | {_num(row.get('n'))} | {_num(row.get('positives'))} | "
                         f"{_num(row.get('auroc'))}{_interval(row.get('auroc_ci'))} | {_num(row.get('ece'))} | "
                         f"{_num(row.get('mean_predicted'))} | {_num(row.get('prevalence'))} |")
    return lines


def _calibration_lines(evaluation: Optional[dict[str, Any]], calibration: Optional[dict[str, Any]]) -> list[str]:
    lines = []
    if calibration:
        selection = calibration.get("selection", {})
        lines.append(f"Post-hoc calibration: **{calibration.get('method')}**, chosen by "
                     f"{selection.get('criterion', 'measurement on validation')}, then refitted on the whole "
                     "validation split.")
        candidates = selection.get("candidates") or {}
        if candidates:
            lines += ["", "| method | held-out log-loss | held-out ECE |", "|---|---|---|"]
            lines += [f"| {m} | {_num(v.get('held_out_log_loss'), 4)} | {_num(v.get('held_out_ece'), 4)} |"
                      for m, v in candidates.items()]
    if evaluation:
        o = evaluation["overall"]
        lines += ["", f"On the evaluated split: ECE {_num(o.get('ece'), 4)} (10 equal-frequency bins), calibration "
                  f"slope {_num(o.get('slope') or o.get('calibration_slope'))}, intercept "
                  f"{_num(o.get('intercept') or o.get('calibration_intercept'))}."]
        reliability = evaluation.get("reliability") or []
        if reliability and isinstance(reliability, list) and isinstance(reliability[0], dict):
            keys = list(reliability[0].keys())
            lines += ["", "Reliability (10 equal-frequency bins):", "",
                      "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
            lines += ["| " + " | ".join(_num(r.get(k), 4) for k in keys) + " |" for r in reliability]
    return lines or ["No calibration information in the model folder."]


def _model_index(primary: Optional[tuple[str, dict[str, Any]]], training: dict[str, Any]) -> list[dict[str, Any]]:
    if primary:
        source, o = f"metrics.json ({primary[0]})", primary[1]["overall"]
    elif training.get("metrics", {}).get("test"):
        source, o = "training.json (own patient-grouped test split)", training["metrics"]["test"]
    else:
        return []
    results = [{"type": key, "name": name, "value": round(float(o[key]), 4)}
               for key, name in (("auroc", "AUROC"), ("auprc", "AUPRC (average precision)"), ("brier", "Brier score"),
                                 ("ece", "ECE (10 equal-frequency bins)"))
               if isinstance(o.get(key), (int, float))]
    return [{"name": "readmit-transformer", "results": [{
        "task": {"type": "tabular-classification", "name": "30-day readmission risk"},
        "dataset": {"type": "diabetes-130-us-hospitals", "name": "Diabetes 130-US hospitals 1999-2008",
                    "split": "patient-grouped test split"},
        "metrics": results, "source": {"name": source, "url": DATASET_URL}}]}]


def _numeric_token_text(config: dict[str, Any]) -> str:
    names = config.get("numeric_feature_names", [])
    groups = config.get("numeric_token_groups") or {}
    grouped = sum(len(v) for v in groups.values())
    if not groups:
        return f"{len(names)} numeric"
    described = ", ".join(f"{len(v)} {k} flags in one token" for k, v in groups.items())
    return f"{len(names) - grouped + len(groups)} numeric ({described})"


def _version_line(version: Optional[str]) -> str:
    if version is None:
        return ("**Not sealed**: this folder has no valid `manifest.json`, so `readmit` refuses to load it; run "
                "`readmit seal --model DIR` once its files are the ones that were evaluated.")
    return (f"**Model version `{version}`**: `manifest.json` lists the SHA-256 of every file that can change a "
            "score (weights, config, preprocessing, calibration, thresholds, explanation background); `readmit` "
            "refuses to load the folder if any of them differs.")


def _metrics_version_lines(measured: Optional[str], version: Optional[str]) -> list[str]:
    """Metrics are only this model's if they name its version: say so when they do not."""
    if measured is not None and measured == version:
        return [f"Measured on model version `{version}` (`model_version` in `metrics.json`).", ""]
    if measured is None:
        return ["**`metrics.json` does not name the model version it measured**: rerun `readmit evaluate`.", ""]
    return [f"**Stale**: `metrics.json` measured model version `{measured}`, not this folder's "
            f"`{version}`: rerun `readmit evaluate`.", ""]


def render_card(folder: str | Path) -> str:
    folder = Path(folder)
    config = _read(folder, "config.json") or {}
    training = _read(folder, "training.json") or {}
    calibration = _read(folder, "calibration.json")
    thresholds = _read(folder, "thresholds.json") or {}
    metrics = _read(folder, "metrics.json")
    manifest = _read(folder, MANIFEST_FILE) or {}
    version = version_label(config.get("model_type", "model"), manifest["version"]) if manifest.get("version") else None
    if metrics and isinstance(metrics.get("models"), dict):  # `readmit evaluate` report: {"split", "models": {...}}
        evaluations = list(_evaluations(metrics["models"]))
    else:
        evaluations = list(_evaluations(metrics)) if metrics else []
    primary = _primary(evaluations)
    metadata = {"license": "cc-by-4.0", "library_name": "transformers", "pipeline_tag": "tabular-classification",
                "tags": ["tabular-classification", "healthcare", "hospital-readmission", "readmit-transformer",
                         "ft-transformer", "pytorch", "safetensors"],
                "datasets": ["uci/diabetes-130-us-hospitals"], "metrics": ["roc_auc", "average_precision", "brier_score", "ece"],
                "model-index": _model_index(primary, training)}
    hp = training.get("hyperparameters", {})
    data = training.get("data", {})
    splits = data.get("splits", {})
    timing = training.get("timing", {})
    lines = ["---", yaml.safe_dump(metadata, sort_keys=False).strip(), "---", "",
             "# readmit-transformer: 30-day hospital readmission risk", "",
             "A small tabular transformer (every feature is a token; diagnosis codes carry their ICD category and "
             "chapter; a [CLS] token pools them) that estimates the probability that a hospital stay of a patient "
             "with diabetes is followed by an unplanned readmission within 30 days. Load it with "
             "`import models; AutoModelForSequenceClassification.from_pretrained(folder)` or, with calibration, "
             "tiers and percentiles, `models.inference.ReadmitPredictor.load(folder)`.", "",
             _version_line(version), "",
             "## Intended use and users", "",
             "- **Users**: discharge planners, transitional-care nurses and quality teams who decide who gets extra "
             "follow-up (a call, an early clinic visit, medication reconciliation) within a fixed capacity.",
             "- **Use**: rank discharged encounters by calibrated risk and flag the top 5-30% (cut-offs in "
             "`thresholds.json`), with reasons from the scoring service. A decision aid, not a diagnosis: a "
             "clinician reviews every flag.",
             "- **Not for**: denying or rationing care, payment or insurance decisions, individual prognosis "
             "communicated to patients, or populations unlike the training data (see limitations).", "",
             "## Data and licence", "",
             "Diabetes 130-US hospitals for years 1999-2008 (UCI Machine Learning Repository, "
             f"{DATASET_URL}), licensed **CC BY 4.0**; this model and card are released under the same licence. "
             "Trained on the project's development file, split by patient (all encounters of a patient fall in one "
             "split).", ""]
    if splits:
        lines += ["| split | encounters | patients | positives | prevalence |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {s.get('rows')} | {s.get('patients')} | {s.get('positives')} | {_num(s.get('prevalence'))} |"
                  for name, s in splits.items()]
        lines.append("")
    lines += [f"Citation: {CITATION}", "",
              "## Label definition and exclusions", "",
              "- Positive: the encounter's `readmitted` value is `<30` (readmitted within 30 days). `>30` and `NO` "
              "are negative.",
              "- Excluded from training and evaluation: encounters ending in death or hospice "
              "(`discharge_disposition_id` 11, 13, 14, 19, 20, 21), for which readmission is not a meaningful "
              "outcome; the scorer returns an empty risk for them.",
              "- Patient history features use only earlier encounters of the same patient (ordered by encounter id "
              "in this dataset); nothing from later encounters is used.", "",
              "## Metrics", ""]
    if evaluations:
        split = metrics.get("split", "?") if isinstance(metrics, dict) else "?"
        lines += _metrics_version_lines(metrics.get("model_version") if isinstance(metrics, dict) else None, version)
        lines += [f"From `metrics.json` (written by `readmit evaluate` on the `{split}` split, the same rows for every "
                  "model; AUROC interval: patient-cluster bootstrap, 95%):", ""] + _metric_table(evaluations)
    else:
        lines.append("`metrics.json` is not in this folder yet: run `readmit evaluate` for the full comparison "
                     "with LACE and the peer models.")
    reported = training.get("metrics", {})
    if reported:
        lines += ["", "Measured by `readmit train` (calibrated risk; choices used validation only, test only reported):",
                  "", "| split | AUROC | AUPRC | Brier | ECE |", "|---|---|---|---|---|"]
        lines += [f"| {name} | {_num(m.get('auroc'))} | {_num(m.get('auprc'))} | {_num(m.get('brier'), 4)} | "
                  f"{_num(m.get('ece'), 4)} |" for name, m in reported.items() if isinstance(m, dict)]
    lines += ["", "Reference (../shared/EVALUATION.md, independent patients): LACE 0.577, logistic regression 0.670, "
              "tuned LightGBM 0.681 AUROC; published honest results on this dataset lie at 0.64-0.68.", ""]
    lines += ["## Subgroups", ""] + (_subgroup_lines(primary[1]) if primary else
                                     ["Run `readmit evaluate` to add results by race, sex and age band."]) + [""]
    lines += ["## Calibration", ""] + _calibration_lines(primary[1] if primary else None, calibration) + [""]
    if thresholds:
        lines += ["## Thresholds and risk tiers", "", "Cut-offs on calibrated risk, set on the validation split:", "",
                  "| rule | risk cut-off | share flagged (validation) | PPV | sensitivity |", "|---|---|---|---|---|"]
        lines += [f"| top {c['top_percent']}% | {_num(c['risk_cutoff'], 4)} | {_num(c['share_flagged'])} | "
                  f"{_num(c.get('ppv'))} | {_num(c.get('sensitivity'))} |" for c in thresholds.get("capacity", [])]
        f1 = thresholds.get("best_f1")
        if f1:
            lines.append(f"| best F1 ({_num(f1['f1'])}) | {_num(f1['risk_cutoff'], 4)} | {_num(f1['share_flagged'])} | "
                         f"{_num(f1['precision'])} | {_num(f1['recall'])} |")
        lines += ["", "| tier | risk at least | meaning | observed rate (validation) |", "|---|---|---|---|"]
        lines += [f"| {t['name']} | {_num(t['min_risk'], 4)} | {t['description']} | {_num(t.get('validation_observed_rate'))} |"
                  for t in thresholds.get("tiers", [])]
        lines.append("")
    lines += ["## Model", "",
              f"- hidden size {config.get('hidden_size')}, {config.get('num_hidden_layers')} pre-LN encoder layers, "
              f"{config.get('num_attention_heads')} heads, feed-forward {config.get('intermediate_size')}, "
              f"{training.get('parameters', '?')} parameters; tokens: [CLS] + {_numeric_token_text(config)} + "
              f"{len(config.get('categorical_feature_names', []))} categorical + "
              f"{config.get('n_code_positions')} diagnosis codes (code + ICD category + chapter embeddings).",
              f"- Loss: cross-entropy with positive-class weight {_num(config.get('pos_weight'))} (sqrt of the "
              "training negative/positive ratio); no resampling.",
              f"- Chosen hyperparameters: {json.dumps({k: v for k, v in hp.items()}, default=str)}.",
              f"- Search: {len(training.get('search', {}).get('trials', []))} trials, chosen by validation AUROC; "
              f"training time {_num(timing.get('total_seconds'), 0)} s on {timing.get('torch_threads', 1)} CPU thread(s).", "",
              "## Limitations", "",
              "- Data from 130 US hospitals in 1999-2008, patients with diabetes only: practice, coding (ICD-9) and "
              "populations have changed; recalibrate and re-validate before any use elsewhere.",
              "- Readmissions to other hospitals are not observed; the label undercounts.",
              "- No 6-month emergency-visit count, no labs beyond HbA1c/glucose flags, no social factors: "
              "discrimination is modest (AUROC around 0.68), as for every honest model on this dataset.",
              "- Subgroups with few encounters (marked small) have unstable metrics; check calibration by group "
              "before relying on a cut-off in a specific population.",
              "- Patient history comes only from encounters present in the data given to the scorer.",
              "- Not done: fine-tuning a pretrained text encoder on serialized encounters (too slow on CPU here).", "",
              "## How to reproduce", "", "```bash",
              "readmit etl --source diabetes130 --input diabetic_data_dev.csv --warehouse data/warehouse",
              f"readmit train --warehouse data/warehouse --out models/champion --seed {training.get('seed', 42)} "
              f"--time-budget-minutes {_num(timing.get('time_budget_minutes'), 0)} "
              f"--max-epochs {training.get('options', {}).get('max_epochs', 6)} "
              f"--trials {training.get('options', {}).get('n_trials', 4)}",
              "readmit evaluate --model models/champion   # writes metrics.json",
              "```", "",
              "Data versions used are in `training.json` (`data.pointer`, `data.features_manifest`). Training uses one "
              "CPU thread and a fixed seed; a rerun reproduces the metrics within noise (a time budget that cuts "
              "the search at a different trial can change the chosen trial).", ""]
    return "\n".join(lines)


def write_card(folder: str | Path) -> Path:
    path = Path(folder) / CARD_FILE
    path.write_text(render_card(folder))
    return path
