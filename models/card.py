"""The model card: README.md with Hugging Face YAML metadata, generated from the model folder's files.

Sources, all optional: config.json, preprocessing.json, training.json (written by `readmit train`),
calibration.json, thresholds.json, manifest.json and metrics.json (written by `readmit evaluate`: per
model, `evaluate_predictions` output with "overall", "thresholds", "capacity", "reliability",
"subgroups"). Sections whose source is absent say so instead of inventing numbers; every number in the
card comes from those files, except the independent-set result, which holds only for the weights it was
measured with (`INDEPENDENT_SET_RESULT`). `readmit train`, `readmit seal` and `readmit evaluate` re-render
the card, so it never disagrees with metrics.json.

The sections follow TRIPOD+AI (Collins et al., BMJ 2024;385:e078378) for a released model, then list the
ONC HTI-1 source attributes of a predictive decision support intervention (45 CFR 170.315(b)(11)):
`TRIPOD_SECTIONS` and `HTI1_SECTIONS` name the headings.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
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
TRIPOD_AI = "TRIPOD+AI (Collins GS et al., BMJ 2024;385:e078378)"
HTI1 = "ONC HTI-1 final rule, 45 CFR 170.315(b)(11)"
TRIPOD_SECTIONS = ("Intended use and users", "Target population", "Data sources and dates", "Eligibility",
                   "Outcome and horizon", "Predictors", "Missing data", "Class imbalance", "Performance overall",
                   "Performance by race, sex and age band", "Calibration", "Thresholds and their rationale",
                   "Fairness", "Limitations", "Updating")
HTI1_SECTIONS = ("Details and output of the intervention", "Purpose of the intervention", "Cautioned out-of-scope use",
                 "Intervention development details and input features",
                 "Process used to ensure fairness in development", "External validation process",
                 "Quantitative measures of performance", "Ongoing maintenance of intervention implementation and use",
                 "Update and continued validation or fairness assessment schedule")
EXCLUDED_DISPOSITIONS = "11, 13, 14, 19, 20, 21"
# Inputs HTI-1 asks a developer to disclose (race, ethnicity, language, sex, age, social determinants).
DISCLOSED_INPUTS = {"race": "race", "sex": "sex", "age_band": "age band", "age_years_est": "estimated age in years",
                    "payer": "payer (insurance type)"}
# `benchmarks/model_quality.py` part 2 (../shared/EVALUATION.md's protocol on our own test patients' raw rows),
# as docs/evaluation.md records it. It was measured on one set of weights: the card shows it only for them.
INDEPENDENT_SET_RESULT = {"weights_sha256_prefix": "1bdda377dd84", "measured": "2026-11-29", "rows_in_file": 12882,
                          "excluded": 115, "evaluated": 12767, "auroc": 0.673, "auroc_ci": (0.657, 0.689),
                          "auprc": 0.214, "brier": 0.098, "ece": 0.009}
THRESHOLD_FOR_FAIRNESS = ("validation_top_10pct", "top 10% of validation risk")
RELIABILITY_COLUMNS = {"bin": "bin", "n": "encounters", "positives": "readmitted", "p_min": "lowest risk",
                       "p_max": "highest risk", "mean_predicted": "mean predicted", "observed_rate": "observed rate",
                       "observed": "observed rate", "lower": "95% interval, low", "upper": "95% interval, high"}

Evaluation = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class Folder:
    """The model folder's files, parsed once; a missing or unreadable file is an empty dict."""
    config: dict[str, Any]
    preprocessing: dict[str, Any]
    training: dict[str, Any]
    calibration: dict[str, Any]
    thresholds: dict[str, Any]
    metrics: dict[str, Any]
    manifest: dict[str, Any]

    @property
    def version(self) -> Optional[str]:
        if not self.manifest.get("version"):
            return None
        return version_label(self.config.get("model_type", "model"), self.manifest["version"])

    @property
    def evaluations(self) -> list[Evaluation]:
        report = self.metrics.get("models") if isinstance(self.metrics.get("models"), dict) else self.metrics
        return list(_evaluations(report))

    @property
    def primary(self) -> Optional[Evaluation]:
        return _primary(self.evaluations)

    @property
    def overall(self) -> dict[str, Any]:
        return self.primary[1]["overall"] if self.primary else {}

    @property
    def splits(self) -> dict[str, Any]:
        return self.training.get("data", {}).get("splits", {})

    @property
    def disclosed_inputs(self) -> list[str]:
        """The inputs among `DISCLOSED_INPUTS` that config.json lists, in words."""
        names = self.config.get("categorical_feature_names", []) + self.config.get("numeric_feature_names", [])
        return [label for name, label in DISCLOSED_INPUTS.items() if name in names]

    @property
    def data_manifest(self) -> dict[str, Any]:
        return self.training.get("data", {}).get("features_manifest") or {}


def _read(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    if not path.exists():
        return {}
    try:
        parsed = json.loads(path.read_text())
    except json.JSONDecodeError:
        return {}
    return parsed if isinstance(parsed, dict) else {}


def read_folder(folder: str | Path) -> Folder:
    folder = Path(folder)
    return Folder(*(_read(folder, name) for name in ("config.json", "preprocessing.json", "training.json",
                                                     "calibration.json", "thresholds.json", "metrics.json",
                                                     MANIFEST_FILE)))


# --- formatting ----------------------------------------------------------------------------------

def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _num(value: Any, digits: int = 3) -> str:
    if _missing(value):
        return "–"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else _num(value)


def _pct(value: Any, digits: int = 1) -> str:
    return "–" if _missing(value) or not isinstance(value, (int, float)) else f"{100 * value:.{digits}f}%"


def _is_interval(ci: Any) -> bool:
    return isinstance(ci, (list, tuple)) and len(ci) == 2 and all(isinstance(v, (int, float)) for v in ci)


def _interval(ci: Any) -> str:
    return f" ({ci[0]:.3f}–{ci[1]:.3f})" if _is_interval(ci) else ""


def _ci_words(ci: Any) -> str:
    return f" (95% CI {ci[0]:.3f}–{ci[1]:.3f})" if _is_interval(ci) else ""


def _names(names: Iterable[str]) -> str:
    return ", ".join(f"`{name}`" for name in names)


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in rows])


# --- metrics.json ---------------------------------------------------------------------------------

def _evaluations(metrics: Any, prefix: str = "") -> Iterable[Evaluation]:
    """Every (name, evaluation) pair in metrics.json: an evaluation is a dict with an "overall" dict."""
    if not isinstance(metrics, dict):
        return
    if isinstance(metrics.get("overall"), dict):
        yield prefix or "transformer", metrics
        return
    for key, value in metrics.items():
        if isinstance(value, dict):
            yield from _evaluations(value, f"{prefix}/{key}" if prefix else str(key))


def _primary(evaluations: list[Evaluation]) -> Optional[Evaluation]:
    for name, evaluation in evaluations:
        if any(part in PRIMARY_NAMES for part in name.lower().split("/")):
            return name, evaluation
    return evaluations[0] if evaluations else None


def _subgroup_rows(evaluation: dict[str, Any]) -> Iterable[tuple[str, dict[str, Any]]]:
    for group, rows in (evaluation.get("subgroups") or {}).items():
        rows = rows if isinstance(rows, list) else [{"level": k, **v} for k, v in rows.items()]
        for row in rows:
            yield group, row


def _split_name(f: Folder) -> str:
    return str(f.metrics.get("split", "?"))


# --- sections ------------------------------------------------------------------------------------

def _metadata(f: Folder) -> list[str]:
    metadata = {"license": "cc-by-4.0", "library_name": "transformers", "pipeline_tag": "tabular-classification",
                "tags": ["tabular-classification", "healthcare", "hospital-readmission", "readmit-transformer",
                         "ft-transformer", "pytorch", "safetensors"],
                "datasets": ["uci/diabetes-130-us-hospitals"],
                "metrics": ["roc_auc", "average_precision", "brier_score", "ece"],
                "model-index": _model_index(f.primary, f.training)}
    return ["---", yaml.safe_dump(metadata, sort_keys=False).strip(), "---", ""]


def _model_index(primary: Optional[Evaluation], training: dict[str, Any]) -> list[dict[str, Any]]:
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


def _version_line(version: Optional[str], sealed: Iterable[str]) -> str:
    if version is None:
        return ("**Not sealed**: this folder has no valid `manifest.json`, so `readmit` refuses to load it; run "
                "`readmit seal --model DIR` once its files are the ones that were evaluated.")
    return (f"**Model version `{version}`**: `manifest.json` lists the SHA-256 of every file that can change a "
            f"score ({_names(sorted(sealed))}); `readmit` refuses to load the folder if any of them differs.")


def _headline(f: Folder) -> str:
    """One line with the transformer's numbers as metrics.json has them (tests compare the two)."""
    o = f.overall
    if not o:
        return ("**Headline**: no `metrics.json` in this folder yet; run `readmit evaluate`, which writes it and "
                "re-renders this card.")
    return (f"**Headline**: {f.primary[0]} on the held-out `{_split_name(f)}` split ({_count(o.get('n'))} "
            f"encounters, `metrics.json`): AUROC {_num(o.get('auroc'))}{_ci_words(o.get('auroc_ci'))}, "
            f"AUPRC {_num(o.get('auprc'))}, Brier score {_num(o.get('brier'))}, ECE {_num(o.get('ece'))}.")


def _stale_line(f: Folder) -> list[str]:
    measured = f.metrics.get("model_version")
    if not f.evaluations or measured == f.version:
        return []
    return [f"**Stale**: these metrics measured model version `{measured}`, not this folder's `{f.version}`; "
            "rerun `readmit evaluate`.", ""]


def _intro(f: Folder) -> list[str]:
    return ["# readmit-transformer: 30-day hospital readmission risk", "",
            "A small tabular transformer (every feature is a token; diagnosis codes carry their ICD category and "
            "chapter; a [CLS] token pools them) that estimates the probability that a hospital stay of a patient "
            "with diabetes is followed by an unplanned readmission within 30 days. Load it with "
            "`import models; AutoModelForSequenceClassification.from_pretrained(folder)` or, with calibration, "
            "tiers and percentiles, `models.inference.ReadmitPredictor.load(folder)`.", "",
            _version_line(f.version, f.manifest.get("files", {})), "", _headline(f), "", *_stale_line(f),
            f"The sections follow {TRIPOD_AI} for a released model; the last part lists the source attributes of "
            f"a predictive decision support intervention in the {HTI1}. The card is rendered from this folder's "
            "files by `models/card.py`; `readmit evaluate` re-renders it after writing `metrics.json`.", ""]


def _intended_use() -> list[str]:
    return ["## Intended use and users", "",
            "- **Users**: discharge planners, transitional-care nurses and quality teams who decide who gets extra "
            "follow-up (a call, an early clinic visit, medication reconciliation) within a fixed capacity.",
            "- **Use**: rank discharged encounters by calibrated risk and call as many as the team can each day "
            "(the dashboard turns calls per day into a risk cut-off); the cut-offs in `thresholds.json` are "
            "starting points. Each score comes with reasons from the scoring service. A prioritisation aid, not "
            "a diagnosis: a clinician reviews every flag.",
            "- **Not for**: denying or rationing care, payment or insurance decisions, individual prognosis "
            "communicated to patients, or populations unlike the training data (see limitations).", ""]


def _target_population(f: Folder) -> list[str]:
    lines = ["## Target population", "",
             "Inpatient stays of patients with diabetes in US hospitals (the Diabetes 130-US hospitals data), "
             "discharged alive and not to hospice, scored at discharge."]
    ages = [row for group, row in _subgroup_rows(f.primary[1]) if group == "age_band"] if f.primary else []
    if ages:
        lines += ["", f"Age bands in the `{_split_name(f)}` split (encounters): "
                  + ", ".join(f"{row.get('level')} ({_count(row.get('n'))})" for row in ages) + "."]
    return lines + [""]


def _data_sources(f: Folder) -> list[str]:
    manifest = f.data_manifest
    lines = ["## Data and licence", "",
             f"Diabetes 130-US hospitals for years 1999-2008 (UCI Machine Learning Repository, {DATASET_URL}), "
             "licensed **CC BY 4.0**; this model and card are released under the same licence.", "",
             f"Citation: {CITATION}", "",
             "### Data sources and dates", "",
             "- Source: inpatient encounters of 130 US hospitals, collected 1999-2008. The file has no admission "
             "or discharge dates, so no split by time was possible: encounters are split by patient (all "
             "encounters of a patient fall in one split)."]
    if manifest:
        split = manifest.get("split") or {}
        lines += [f"- Development file: `{manifest.get('input')}` (SHA-256 {str(manifest.get('input_sha256'))[:12]}…), "
                  f"read by the ETL on {str(manifest.get('created_at'))[:10]} into warehouse version "
                  f"`{manifest.get('version')}` (feature spec {manifest.get('feature_spec_version')}).",
                  f"- Split by {split.get('by', 'patient')} with ratios {split.get('ratios')} (salted hash "
                  f"`{split.get('salt')}`)."]
    started = f.training.get("timing", {}).get("started_utc")
    if started:
        lines.append(f"- Model trained on {started[:10]} (`training.json`).")
    if f.splits:
        lines += ["", *_table(["split", "encounters", "patients", "readmitted within 30 days", "prevalence"],
                              ([name, _count(s.get("rows")), _count(s.get("patients")), _count(s.get("positives")),
                                _pct(s.get("prevalence"))] for name, s in f.splits.items()))]
    return lines + [""]


def _eligibility(f: Folder) -> list[str]:
    lines = ["### Eligibility", "",
             f"Every encounter of the file, except stays that ended in death or hospice (`discharge_disposition_id` "
             f"{EXCLUDED_DISPOSITIONS}): their readmission label is unknown, not \"not readmitted\", and the "
             "scorer returns an empty risk for them. Missing predictors do not exclude an encounter."]
    steps = [step for step in f.data_manifest.get("steps", []) if isinstance(step, dict)]
    if steps:
        dropped = [f"{_count(n)} {reason.replace('ineligible: ', '')}" for step in steps
                   for reason, n in (step.get("dropped") or {}).items()]
        lines += ["", f"In the development file (`training.json`, ETL steps): {_count(steps[0].get('rows_out'))} "
                  f"encounters read; dropped: {', '.join(dropped) or 'nothing'}; {_count(steps[-1].get('rows_out'))} "
                  "eligible."]
    return lines + [""]


def _outcome() -> list[str]:
    return ["## Label definition and exclusions", "",
            "- Positive: the encounter's `readmitted` value is `<30` (readmitted within 30 days). `>30` and `NO` "
            "are negative.",
            f"- Excluded from training and evaluation: encounters ending in death or hospice (`discharge_disposition_id` "
            f"{EXCLUDED_DISPOSITIONS}), for which readmission is not a meaningful outcome.",
            "- Readmissions to another hospital are not observed in this data, so the label undercounts.", "",
            "### Outcome and horizon", "",
            "Outcome: an unplanned readmission to hospital within 30 days of discharge (day 30 counts, day 31 does "
            "not). Horizon: 30 days from discharge. The risk is computed at discharge, from the completed record of "
            "the stay.", ""]


def _input_count(config: dict[str, Any]) -> int:
    return (len(config.get("numeric_feature_names", [])) + len(config.get("categorical_feature_names", []))
            + (config.get("n_code_positions") or 0))


def _predictors(f: Folder) -> list[str]:
    c = f.config
    if not c:
        return ["## Predictors", "", "No `config.json` in this folder, so the inputs cannot be listed.", ""]
    grouped = {name for names in (c.get("numeric_token_groups") or {}).values() for name in names}
    numeric = [n for n in c.get("numeric_feature_names", []) if n not in grouped]
    lines = ["## Predictors", "",
             f"{_input_count(c)} inputs, all from the encounter's record at discharge and the same patient's earlier encounters "
             "in the data given to the scorer (never later ones):", "",
             f"- Numeric ({len(numeric)}): {_names(numeric)}."]
    for token, names in (c.get("numeric_token_groups") or {}).items():
        lines.append(f"- `{token}` ({len(names)} Charlson condition flags from the diagnosis codes, one token): "
                     f"{_names(names)}.")
    lines += [f"- Categorical ({len(c.get('categorical_feature_names', []))}): "
              f"{_names(c.get('categorical_feature_names', []))}.",
              f"- Diagnosis codes: the first {c.get('n_code_positions')} ICD-9 codes, each as code + ICD category + "
              "chapter.", ""]
    return lines


def _missing_data(f: Folder) -> list[str]:
    lines = ["## Missing data", "",
             "Missing values are kept as missing, never read as zero and never imputed: a missing numeric input "
             "has its own learned \"missing\" vector, a missing category is the `__missing__` level, an unseen "
             "category or code goes to an unseen bucket, and an absent diagnosis position is an empty code. In "
             "the Diabetes 130 file `?` and blank cells are missing. No encounter is dropped for missing inputs."]
    numeric = f.preprocessing.get("numeric") or {}
    always = [n for n, s in numeric.items() if s.get("missing_rate") == 1.0]
    always += [n for n, s in (f.preprocessing.get("categorical") or {}).items() if s.get("labels") == ["__missing__"]]
    partly = [f"`{n}` ({_pct(s['missing_rate'])})" for n, s in numeric.items()
              if isinstance(s.get("missing_rate"), (int, float)) and 0 < s["missing_rate"] < 1]
    if always:
        lines += ["", f"Always missing in the training data (the file has no dates), so they carry no information "
                  f"for this model: {_names(always)}."]
    if numeric:
        lines += ["", ("Numeric inputs missing in part of the training data: " + ", ".join(partly) + "." if partly
                       else "No other numeric input had missing values in the training data (`preprocessing.json`).")]
    return lines + [""]


def _class_imbalance(f: Folder) -> list[str]:
    train = f.splits.get("train", {})
    weight = f.config.get("pos_weight")
    lines = ["## Class imbalance", ""]
    if train:
        lines.append(f"Readmitted within 30 days: {_count(train.get('positives'))} of {_count(train.get('rows'))} "
                     f"training encounters ({_pct(train.get('prevalence'))}).")
    lines.append(f"Training uses cross-entropy with positive-class weight {_num(weight)} (the square root of the "
                 "training negative/positive ratio); no resampling, no synthetic cases, and evaluation data are never "
                 "resampled. The weight inflates the raw probabilities; the calibration fitted on validation maps "
                 "them back (see Calibration). Metrics that reflect the imbalance are reported: AUPRC, and PPV and "
                 "sensitivity at each cut-off.")
    return lines + [""]


def _metric_table(evaluations: list[Evaluation]) -> list[str]:
    return _table(["model / split", "n", "AUROC (95% CI)", "AUPRC", "Brier", "ECE"],
                  ([name, _count(o.get("n")), f"{_num(o.get('auroc'))}{_interval(o.get('auroc_ci'))}",
                    _num(o.get("auprc")), _num(o.get("brier")), _num(o.get("ece"))]
                   for name, o in ((name, e["overall"]) for name, e in evaluations)))


def _metrics_version_lines(measured: Optional[str], version: Optional[str]) -> list[str]:
    """Metrics are only this model's if they name its version: say so when they do not."""
    if measured is not None and measured == version:
        return [f"Measured on model version `{version}` (`model_version` in `metrics.json`).", ""]
    if measured is None:
        return ["**`metrics.json` does not name the model version it measured**: rerun `readmit evaluate`.", ""]
    return [f"**Stale**: `metrics.json` measured model version `{measured}`, not this folder's "
            f"`{version}`: rerun `readmit evaluate`.", ""]


def _performance(f: Folder) -> list[str]:
    lines = ["## Metrics", "",
             "Discrimination (AUROC, AUPRC), overall accuracy of the probabilities (Brier score) and calibration "
             "(ECE, 10 equal-frequency bins) of the calibrated risk.", "",
             "### Performance overall", ""]
    if f.evaluations:
        protocol = f.metrics.get("protocol") or {}
        rows = f.metrics.get("rows") or {}
        lines += _metrics_version_lines(f.metrics.get("model_version"), f.version)
        lines += [f"From `metrics.json` (written by `readmit evaluate` on the `{_split_name(f)}` split"
                  + (f": {_count(rows.get('evaluated'))} encounters of {_count(rows.get('patients'))} patients never "
                     f"used in training or tuning, {_count(rows.get('positives'))} readmitted" if rows else "")
                  + "; the same rows for every model; AUROC interval: "
                  + (f"{protocol.get('auroc_interval')}, {protocol.get('n_boot')} replicates" if protocol
                     else "patient-cluster bootstrap, 95%") + "):", ""]
        lines += _metric_table(f.evaluations)
    else:
        lines.append("`metrics.json` is not in this folder yet: run `readmit evaluate` for the full comparison "
                     "with LACE and the peer models.")
    reported = {name: m for name, m in f.training.get("metrics", {}).items() if isinstance(m, dict)}
    if reported:
        lines += ["", "Measured by `readmit train` (calibrated risk; choices used validation only, test only reported):",
                  "", *_table(["split", "AUROC", "AUPRC", "Brier", "ECE"],
                              ([name, _num(m.get("auroc")), _num(m.get("auprc")), _num(m.get("brier"), 4),
                                _num(m.get("ece"), 4)] for name, m in reported.items()))]
    return lines + [""] + _independent_set(f)


def _independent_set(f: Folder) -> list[str]:
    r = INDEPENDENT_SET_RESULT
    lines = ["### Independent-set evaluation protocol", "",
             "How the shipped model is judged on patients it has never seen (`../shared/EVALUATION.md`): a file of "
             "encounters in the Diabetes 130 format is given whole to `readmit score --input FILE.csv --output "
             "OUT.csv`, which derives patient history only from earlier encounters in the file; label "
             f"`readmitted == \"<30\"`; dispositions {EXCLUDED_DISPOSITIONS} (died, hospice) are not evaluated; "
             "AUROC with a patient-cluster bootstrap 95% interval, AUPRC, Brier score and ECE (10 equal-frequency "
             "bins). `benchmarks/model_quality.py` (part 2) runs this protocol on the raw rows of our own "
             "test-split patients and checks that the scorer's risks equal the warehouse path's.", ""]
    weights = str(f.manifest.get("files", {}).get("model.safetensors", {}).get("sha256", ""))
    if weights.startswith(r["weights_sha256_prefix"]):
        lines.append(f"Result on our own test patients (measured {r['measured']} on these weights, `model.safetensors` "
                     f"SHA-256 {r['weights_sha256_prefix']}…; docs/evaluation.md): {r['rows_in_file']:,} rows scored, "
                     f"{r['excluded']} excluded (died or hospice), {r['evaluated']:,} evaluated: AUROC {r['auroc']:.3f}"
                     f"{_interval(r['auroc_ci'])}, AUPRC {r['auprc']:.3f}, Brier score {r['brier']:.3f}, "
                     f"ECE {r['ece']:.3f}, the same as the warehouse path.")
    else:
        lines.append("Result: not yet measured for these weights; run `benchmarks/model_quality.py`.")
    lines += ["", "For comparison, other models on the real independent set (`../shared/EVALUATION.md`, not this "
              "model): LACE 0.577, logistic regression 0.670, tuned LightGBM 0.681 AUROC; published honest results "
              "on this dataset lie at 0.64-0.68.", ""]
    return lines


def _subgroups(f: Folder) -> list[str]:
    lines = ["## Subgroups", "",
             "Every metric within each level of race, sex and age band, with the same model and cut-offs for "
             "everyone. Levels with fewer than 100 encounters or 10 readmissions are marked *(small)*: too few "
             "to judge.", "",
             "### Performance by race, sex and age band", ""]
    rows = list(_subgroup_rows(f.primary[1])) if f.primary else []
    if not rows:
        return lines + ["No subgroup results in `metrics.json` yet: run `readmit evaluate`.", ""]
    lines += _table(["group", "level", "n", "readmitted", "AUROC (95% CI)", "ECE", "mean predicted", "observed rate"],
                    ([group.replace("_", " "), f"{row.get('level')}{' (small)' if row.get('small') else ''}",
                      _count(row.get("n")), _count(row.get("positives")),
                      f"{_num(row.get('auroc'))}{_interval(row.get('auroc_ci'))}", _num(row.get("ece")),
                      _num(row.get("mean_predicted")), _num(row.get("prevalence"))] for group, row in rows))
    return lines + [""]


def _calibration(f: Folder) -> list[str]:
    lines = ["## Calibration", ""]
    c = f.calibration
    if c:
        selection = c.get("selection", {})
        lines.append(f"Post-hoc calibration: **{c.get('method')}**, chosen by "
                     f"{selection.get('criterion', 'measurement on validation')}, then refitted on the whole "
                     "validation split.")
        candidates = selection.get("candidates") or {}
        if candidates:
            lines += ["", *_table(["method", "held-out log-loss", "held-out ECE"],
                                  ([m, _num(v.get("held_out_log_loss"), 4), _num(v.get("held_out_ece"), 4)]
                                   for m, v in candidates.items()))]
    if f.primary:
        o = f.overall
        lines += ["", f"On the evaluated split: ECE {_num(o.get('ece'), 4)} (10 equal-frequency bins), calibration "
                  f"slope {_num(o.get('slope') or o.get('calibration_slope'))}, intercept "
                  f"{_num(o.get('intercept') or o.get('calibration_intercept'))} (ideal: slope 1, intercept 0)."]
        reliability = [r for r in f.primary[1].get("reliability") or [] if isinstance(r, dict)]
        if reliability:
            keys = list(reliability[0])
            lines += ["", "Reliability (10 equal-frequency bins of predicted risk):", "",
                      *_table([RELIABILITY_COLUMNS.get(k, k.replace("_", " ")) for k in keys],
                              ([_count(r.get(k)) if k in ("bin", "n", "positives") else _num(r.get(k), 4)
                                for k in keys] for r in reliability))]
    return (lines if len(lines) > 2 else lines + ["No calibration information in the model folder."]) + [""]


def _thresholds(f: Folder) -> list[str]:
    t = f.thresholds
    lines = ["## Thresholds and their rationale", "",
             "A care team can make a fixed number of calls a day, so the cut-off follows capacity: the dashboard "
             "turns calls per day into the share of discharges called and the risk cut-off that selects them. The "
             "cut-offs below were set on the validation split (never on test) as starting points for a fixed "
             "share; best F1 is given for reference only, as it weighs a missed readmission and an unneeded call "
             "equally. The same cut-off applies to every patient group (see Fairness)."]
    if not t:
        return lines + ["", "No `thresholds.json` in this folder.", ""]
    lines += ["", f"Set on calibrated validation risk ({_count(t.get('n_validation'))} encounters, prevalence "
              f"{_pct(t.get('validation_prevalence'))}):", ""]
    rows = [[f"top {c.get('top_percent')}%", _num(c.get("risk_cutoff"), 4), _pct(c.get("share_flagged")),
             _num(c.get("ppv")), _num(c.get("sensitivity"))] for c in t.get("capacity", [])]
    f1 = t.get("best_f1")
    if f1:
        rows.append([f"best F1 ({_num(f1.get('f1'))})", _num(f1.get("risk_cutoff"), 4), _pct(f1.get("share_flagged")),
                     _num(f1.get("precision")), _num(f1.get("recall"))])
    lines += _table(["rule", "risk cut-off", "share flagged (validation)", "PPV", "sensitivity"], rows)
    on_test = (f.primary[1].get("thresholds") or {}) if f.primary else {}
    tested = [(f"top {c.get('top_percent')}%", on_test.get(f"validation_top_{c.get('top_percent')}pct"))
              for c in t.get("capacity", [])] + [("best F1", on_test.get("best_f1"))]
    tested = [(rule, m) for rule, m in tested if isinstance(m, dict)]
    if tested:
        lines += ["", f"The same cut-offs on the `{_split_name(f)}` split (`metrics.json`):", "",
                  *_table(["rule", "share flagged", "PPV", "sensitivity", "flagged and readmitted", "flagged, not readmitted"],
                          ([rule, _pct(m.get("flagged_fraction")), _num(m.get("precision")), _num(m.get("recall")),
                            _count(m.get("tp")), _count(m.get("fp"))] for rule, m in tested))]
    lines += ["", *_table(["tier", "risk at least", "meaning", "observed rate (validation)"],
                          ([tier.get("name"), _num(tier.get("min_risk"), 4), tier.get("description"),
                            _num(tier.get("validation_observed_rate"))] for tier in t.get("tiers", [])))]
    return lines + [""]


def _fairness_rows(f: Folder) -> list[list[str]]:
    key = THRESHOLD_FOR_FAIRNESS[0]
    overall = (f.primary[1].get("thresholds") or {}).get(key, {}) if f.primary else {}
    rows = []
    for group, row in (_subgroup_rows(f.primary[1]) if f.primary else []):
        at = (row.get("thresholds") or {}).get(key) or {}
        gap = (at.get("recall") - overall["recall"]) if isinstance(at.get("recall"), (int, float)) \
            and isinstance(overall.get("recall"), (int, float)) else None
        note = "too few to judge" if row.get("small") else ("sensitivity gap over 5 points"
                                                             if gap is not None and abs(gap) > 0.05 else "")
        rows.append([group.replace("_", " "), str(row.get("level")), _count(row.get("n")), _num(row.get("auroc")),
                     _pct(at.get("flagged_fraction")), _num(at.get("recall")),
                     "none flagged" if at.get("flagged_fraction") == 0 else _num(at.get("precision")),
                     "–" if gap is None else f"{100 * gap:+.1f}", note])
    return rows


def _auroc_range(f: Folder) -> str:
    judged = [(row["auroc"], f"{row.get('level')}, n={_count(row.get('n'))}") for _, row in _subgroup_rows(f.primary[1])
              if not row.get("small") and isinstance(row.get("auroc"), (int, float))]
    if not judged:
        return ""
    (low, low_at), (high, high_at) = min(judged), max(judged)
    return (f"Among levels large enough to judge, AUROC ranges from {low:.3f} ({low_at}) to {high:.3f} ({high_at}); "
            f"overall {_num(f.overall.get('auroc'))}. ")


def _fairness(f: Folder) -> list[str]:
    disclosed = f.disclosed_inputs
    lines = ["## Fairness", "",
             "Process: patients are split so none is in both training and evaluation; every metric is reported by "
             "race, sex and age band with patient-cluster bootstrap intervals; small groups are marked rather than "
             "ranked; one cut-off for everyone, with the share flagged, sensitivity and PPV of each group at that "
             "cut-off. No bias mitigation was applied in training (no reweighting by group, no fairness "
             "constraint): the approach is measurement and disclosure, and the dashboard's Model quality page "
             "repeats the subgroup check on local labelled discharges."]
    if disclosed:
        lines += ["", f"Inputs that describe the patient rather than the stay: {', '.join(disclosed)}. They are used "
                  "as predictors, so two otherwise identical patients of different race or sex can get different "
                  "scores; the results below show how the model does for each group."]
    rows = _fairness_rows(f)
    if not rows:
        return lines + ["", "No subgroup results in `metrics.json` yet: run `readmit evaluate`.", ""]
    lines += ["", _auroc_range(f) + f"At the {THRESHOLD_FOR_FAIRNESS[1]} cut-off (gap: group sensitivity minus "
              "overall, in percentage points):", "",
              *_table(["group", "level", "n", "AUROC", "share flagged", "sensitivity", "PPV", "gap (points)", "note"],
                      rows)]
    return lines + [""]


def _model(f: Folder) -> list[str]:
    c, training = f.config, f.training
    timing = training.get("timing", {})
    return ["## Model", "",
            f"- hidden size {c.get('hidden_size')}, {c.get('num_hidden_layers')} pre-LN encoder layers, "
            f"{c.get('num_attention_heads')} heads, feed-forward {c.get('intermediate_size')}, "
            f"{_count(training.get('parameters', '?'))} parameters; tokens: [CLS] + {_numeric_token_text(c)} + "
            f"{len(c.get('categorical_feature_names', []))} categorical + "
            f"{c.get('n_code_positions')} diagnosis codes (code + ICD category + chapter embeddings).",
            f"- Loss: cross-entropy with positive-class weight {_num(c.get('pos_weight'))} (sqrt of the "
            "training negative/positive ratio); no resampling.",
            f"- Chosen hyperparameters: {json.dumps(training.get('hyperparameters', {}), default=str)}.",
            f"- Search: {len(training.get('search', {}).get('trials', []))} trials, chosen by validation AUROC; "
            f"training time {_num(timing.get('total_seconds'), 0)} s on {timing.get('torch_threads', 1)} CPU thread(s).",
            ""]


def _numeric_token_text(config: dict[str, Any]) -> str:
    names = config.get("numeric_feature_names", [])
    groups = config.get("numeric_token_groups") or {}
    grouped = sum(len(v) for v in groups.values())
    if not groups:
        return f"{len(names)} numeric"
    described = ", ".join(f"{len(v)} {k} flags in one token" for k, v in groups.items())
    return f"{len(names) - grouped + len(groups)} numeric ({described})"


def _limitations(f: Folder) -> list[str]:
    auroc = f.overall.get("auroc") or f.training.get("metrics", {}).get("test", {}).get("auroc")
    modest = f"AUROC {auroc:.2f} on the test split" if isinstance(auroc, (int, float)) else "AUROC below 0.70"
    return ["## Limitations", "",
            "- Data from 130 US hospitals in 1999-2008, patients with diabetes only: practice, coding (ICD-9) and "
            "populations have changed; recalibrate and re-validate before any use elsewhere.",
            "- Not externally validated: every result here is on held-out patients of the same file.",
            "- Readmissions to other hospitals are not observed; the label undercounts.",
            "- No 6-month emergency-visit count, no labs beyond HbA1c/glucose flags, no social-needs data: "
            f"discrimination is modest ({modest}), as for every honest model on this dataset. It ranks patients "
            "usefully but misses many readmissions.",
            "- Subgroups with few encounters (marked small) have unstable metrics; check calibration by group "
            "before relying on a cut-off in a specific population.",
            "- Patient history comes only from encounters present in the data given to the scorer.",
            "- Not done: fine-tuning a pretrained text encoder on serialized encounters (too slow on CPU here).", ""]


def _updating(f: Folder) -> list[str]:
    return ["## Updating", "",
            f"The model does not learn in use: version `{f.version or 'unsealed'}` is fixed, and `readmit` refuses a "
            "folder whose scoring files differ from `manifest.json`. To update it: retrain on newer or local data "
            "(`readmit train`, which also recalibrates and sets new cut-offs on validation), or refit only the "
            "calibration on local validation data; then `readmit seal --model DIR` and `readmit evaluate`, which "
            "re-renders this card. Metrics measured on another version are marked stale here.", ""]


def _hti1(f: Folder) -> list[str]:
    o, capacity = f.overall, ((f.primary[1].get("capacity") or {}) if f.primary else {})
    top10 = capacity.get("top_10pct") or {}
    disclosed = f.disclosed_inputs
    performance = (f"On the held-out `{_split_name(f)}` split: AUROC {_num(o.get('auroc'))}{_interval(o.get('auroc_ci'))}, "
                   f"AUPRC {_num(o.get('auprc'))}, Brier score {_num(o.get('brier'))}, ECE {_num(o.get('ece'))}, "
                   f"calibration slope {_num(o.get('calibration_slope'))}"
                   + (f"; calling the top 10% finds {_pct(top10.get('sensitivity'))} of readmissions with a PPV of "
                      f"{_num(top10.get('ppv'))}" if top10 else "") + ". Details: Metrics, Calibration, Thresholds "
                   "and their rationale.") if o else "No `metrics.json` yet: run `readmit evaluate`."
    return ["## ONC HTI-1 source attributes", "",
            f"The source attributes of a predictive decision support intervention in the {HTI1}, with pointers "
            "to the sections above that hold the details.", "",
            "### Details and output of the intervention", "",
            f"readmit-transformer, version `{f.version or 'unsealed'}`, developed by the readmit project (this "
            "repository). Output for one eligible discharge: a calibrated probability of unplanned readmission "
            "within 30 days (shown as a percent), a risk tier (Very high, High, Medium, Low; `thresholds.json`), a "
            "percentile among validation encounters, and, from the scoring service, the main reasons in words. It "
            "is a prediction, not a treatment recommendation.", "",
            "### Purpose of the intervention", "",
            "To help a transitional-care team decide whom to call or see first after discharge when it cannot "
            "reach everyone. Users, patients and decision role: see Intended use and users and Target population; "
            "the score informs a clinician's decision and never replaces it.", "",
            "### Cautioned out-of-scope use", "",
            "Not for denying or rationing care, payment or insurance decisions, prognosis told to patients, "
            "encounters ending in death or hospice, or populations unlike the training data (other countries, "
            "years after 2008, ICD-10 coding, patients without diabetes, MIMIC data) without local re-validation. "
            "It misses many readmissions (see Limitations).", "",
            "### Intervention development details and input features", "",
            f"Trained on Diabetes 130-US hospitals 1999-2008 (see Data sources and dates, Eligibility, Outcome and "
            f"horizon); {_input_count(f.config)} inputs (see Predictors)"
            + (f", including {', '.join(disclosed)}" if disclosed else "") + "; no language, sexual orientation, "
            "gender identity or social-needs data. Demographic make-up of the evaluated patients: see Performance "
            "by race, sex and age band (counts per level). Relevance to a deployment site must be checked on "
            "local data (see Limitations).", "",
            "### Process used to ensure fairness in development", "",
            "Subgroup measurement and disclosure, without bias mitigation in training: see Fairness.", "",
            "### External validation process", "",
            "No external validation so far: no data from another hospital system, period or source has been scored. The "
            "independent set of `../shared/EVALUATION.md` holds other patients of the same file and is scored "
            "outside this project; its result for this model is not in this folder. What was done instead: see "
            "Independent-set evaluation protocol.", "",
            "### Quantitative measures of performance", "",
            performance + " No study of the model's effect on patient outcomes has been done.", "",
            "### Ongoing maintenance of intervention implementation and use", "",
            "The folder is sealed (`manifest.json`): `readmit` refuses a scoring file that differs, and "
            "`metrics.json` names the version it measured (this card flags a mismatch). Validity and "
            "fairness on local data: the dashboard's Model quality page measures discrimination, the capacity "
            "trade-off and subgroup sensitivity on labelled local discharges; `readmit evaluate` on a local "
            "warehouse gives the full report. Check both before use and whenever coding, population or practice "
            "changes.", "",
            "### Update and continued validation or fairness assessment schedule", "",
            "No schedule is built in and the model does not change in use; the deploying organisation sets one. "
            "Every change of a scoring file needs `readmit seal` and `readmit evaluate` (see Updating), and this "
            "card marks metrics of another version as stale.", ""]


def _reproduce(f: Folder) -> list[str]:
    training, timing = f.training, f.training.get("timing", {})
    options = training.get("options", {})
    return ["## How to reproduce", "", "```bash",
            "readmit etl --source diabetes130 --input diabetic_data_dev.csv --warehouse data/warehouse",
            f"readmit train --warehouse data/warehouse --out models/champion --seed {training.get('seed', 42)} "
            f"--time-budget-minutes {_num(timing.get('time_budget_minutes'), 0)} "
            f"--max-epochs {options.get('max_epochs', 6)} --trials {options.get('n_trials', 4)}",
            "readmit evaluate --model models/champion   # writes metrics.json and re-renders this card",
            "```", "",
            "Data versions used are in `training.json` (`data.pointer`, `data.features_manifest`). Training uses one "
            "CPU thread and a fixed seed; a rerun reproduces the metrics within noise (a time budget that cuts "
            "the search at a different trial can change the chosen trial).", ""]


CHANGES_FILE = "changes.jsonl"


def recalibration_section(folder: str | Path) -> list[str]:
    """The recalibrations recorded in the folder's changes.jsonl (written by `readmit recalibrate` under the
    change plan): why, on what data, and calibration before and after. Empty when there is none."""
    path = Path(folder) / CHANGES_FILE
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    records = [r for r in records if r.get("change") == "recalibration"]
    if not records:
        return []
    lines = ["## Recalibration", "",
             "Changes made under the predetermined change plan recorded in `changes.jsonl`: only the calibration map "
             "(`calibration.json`) was refitted, so the weights, the ranking and AUROC are those of the version it "
             "came from; metrics measured on that version are marked stale above.", ""]
    for r in records:
        data, plan = r.get("data", {}), r.get("plan", {})
        rows = [[label, _num(r["before"].get(key), 4), _num(r["after"].get(key), 4),
                 _num(r.get("after_held_out", {}).get(key), 4)]
                for label, key in (("ECE", "ece"), ("calibration-in-the-large", "calibration_in_the_large"),
                                   ("calibration slope", "calibration_slope"), ("observed rate", "observed_rate"),
                                   ("predicted rate", "predicted_rate"))]
        lines += [f"### {str(r.get('at', ''))[:10]}: recalibrated from `{r.get('from_version')}`", "",
                  f"- Why: {r.get('reason')} (by {r.get('by')}).",
                  f"- Data: {_count(data.get('encounters'))} eligible encounters of {_count(data.get('patients'))} "
                  f"patients with matured outcomes ({_count(data.get('readmissions'))} readmissions), discharged from "
                  f"{data.get('since')} to before {data.get('until')}, outcomes as of {data.get('as_of')}.",
                  f"- Method: {r.get('method')}, refitted on the raw model probability. Check: {plan.get('how_checked')}"
                  f" ({'accepted' if r.get('accepted') else 'not accepted'}).",
                  f"- Monitoring reference: {r.get('reference')}.", ""]
        lines += _table(["on the refit data", "before", "after", "after, held-out halves"], rows) + [""]
    return lines


def render_card(folder: str | Path) -> str:
    f = read_folder(folder)
    lines = (_metadata(f) + _intro(f) + _intended_use() + _target_population(f) + _data_sources(f) + _eligibility(f)
             + _outcome() + _predictors(f) + _missing_data(f) + _class_imbalance(f) + _performance(f) + _subgroups(f)
             + _calibration(f) + _thresholds(f) + _fairness(f) + _model(f) + _limitations(f) + _updating(f)
             + recalibration_section(folder) + _hti1(f) + _reproduce(f))
    return "\n".join(lines)


def write_card(folder: str | Path) -> Path:
    path = Path(folder) / CARD_FILE
    path.write_text(render_card(folder))
    return path
