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
from pathlib import Path
from typing import Any, Iterable, Optional

import yaml

from models.card_folder import (
    EXCLUDED_DISPOSITIONS,
    Evaluation,
    Folder,
    fmt_ci,
    fmt_count,
    fmt_interval,
    fmt_names,
    fmt_num,
    fmt_pct,
    md_table,
    read_folder,
    split_name,
    subgroup_rows,
)
from models.card_metrics import (
    INDEPENDENT_SET_RESULT,
    calibration_section,
    fairness_section,
    performance_section,
    subgroups_section,
    thresholds_section,
)

__all__ = ["CARD_FILE", "CHANGES_FILE", "HTI1_SECTIONS", "INDEPENDENT_SET_RESULT", "TRIPOD_SECTIONS",
           "recalibration_section", "render_card", "write_card"]

CARD_FILE = "README.md"
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
            f"score ({fmt_names(sorted(sealed))}); `readmit` refuses to load the folder if any of them differs.")


def _headline(f: Folder) -> str:
    """One line with the transformer's numbers as metrics.json has them (tests compare the two)."""
    o = f.overall
    if not o:
        return ("**Headline**: no `metrics.json` in this folder yet; run `readmit evaluate`, which writes it and "
                "re-renders this card.")
    return (f"**Headline**: {f.primary[0]} on the held-out `{split_name(f)}` split ({fmt_count(o.get('n'))} "
            f"encounters, `metrics.json`): AUROC {fmt_num(o.get('auroc'))}{fmt_ci(o.get('auroc_ci'))}, "
            f"AUPRC {fmt_num(o.get('auprc'))}, Brier score {fmt_num(o.get('brier'))}, ECE {fmt_num(o.get('ece'))}.")


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
    ages = [row for group, row in subgroup_rows(f.primary[1]) if group == "age_band"] if f.primary else []
    if ages:
        lines += ["", f"Age bands in the `{split_name(f)}` split (encounters): "
                  + ", ".join(f"{row.get('level')} ({fmt_count(row.get('n'))})" for row in ages) + "."]
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
        lines += ["", *md_table(["split", "encounters", "patients", "readmitted within 30 days", "prevalence"],
                              ([name, fmt_count(s.get("rows")), fmt_count(s.get("patients")), fmt_count(s.get("positives")),
                                fmt_pct(s.get("prevalence"))] for name, s in f.splits.items()))]
    return lines + [""]


def _eligibility(f: Folder) -> list[str]:
    lines = ["### Eligibility", "",
             f"Every encounter of the file, except stays that ended in death or hospice (`discharge_disposition_id` "
             f"{EXCLUDED_DISPOSITIONS}): their readmission label is unknown, not \"not readmitted\", and the "
             "scorer returns an empty risk for them. Missing predictors do not exclude an encounter."]
    steps = [step for step in f.data_manifest.get("steps", []) if isinstance(step, dict)]
    if steps:
        dropped = [f"{fmt_count(n)} {reason.replace('ineligible: ', '')}" for step in steps
                   for reason, n in (step.get("dropped") or {}).items()]
        lines += ["", f"In the development file (`training.json`, ETL steps): {fmt_count(steps[0].get('rows_out'))} "
                  f"encounters read; dropped: {', '.join(dropped) or 'nothing'}; {fmt_count(steps[-1].get('rows_out'))} "
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
             f"- Numeric ({len(numeric)}): {fmt_names(numeric)}."]
    for token, names in (c.get("numeric_token_groups") or {}).items():
        lines.append(f"- `{token}` ({len(names)} Charlson condition flags from the diagnosis codes, one token): "
                     f"{fmt_names(names)}.")
    lines += [f"- Categorical ({len(c.get('categorical_feature_names', []))}): "
              f"{fmt_names(c.get('categorical_feature_names', []))}.",
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
    partly = [f"`{n}` ({fmt_pct(s['missing_rate'])})" for n, s in numeric.items()
              if isinstance(s.get("missing_rate"), (int, float)) and 0 < s["missing_rate"] < 1]
    if always:
        lines += ["", f"Always missing in the training data (the file has no dates), so they carry no information "
                  f"for this model: {fmt_names(always)}."]
    if numeric:
        lines += ["", ("Numeric inputs missing in part of the training data: " + ", ".join(partly) + "." if partly
                       else "No other numeric input had missing values in the training data (`preprocessing.json`).")]
    return lines + [""]


def _class_imbalance(f: Folder) -> list[str]:
    train = f.splits.get("train", {})
    weight = f.config.get("pos_weight")
    lines = ["## Class imbalance", ""]
    if train:
        lines.append(f"Readmitted within 30 days: {fmt_count(train.get('positives'))} of {fmt_count(train.get('rows'))} "
                     f"training encounters ({fmt_pct(train.get('prevalence'))}).")
    lines.append(f"Training uses cross-entropy with positive-class weight {fmt_num(weight)} (the square root of the "
                 "training negative/positive ratio); no resampling, no synthetic cases, and evaluation data are never "
                 "resampled. The weight inflates the raw probabilities; the calibration fitted on validation maps "
                 "them back (see Calibration). Metrics that reflect the imbalance are reported: AUPRC, and PPV and "
                 "sensitivity at each cut-off.")
    return lines + [""]


def _model(f: Folder) -> list[str]:
    c, training = f.config, f.training
    timing = training.get("timing", {})
    return ["## Model", "",
            f"- hidden size {c.get('hidden_size')}, {c.get('num_hidden_layers')} pre-LN encoder layers, "
            f"{c.get('num_attention_heads')} heads, feed-forward {c.get('intermediate_size')}, "
            f"{fmt_count(training.get('parameters', '?'))} parameters; tokens: [CLS] + {_numeric_token_text(c)} + "
            f"{len(c.get('categorical_feature_names', []))} categorical + "
            f"{c.get('n_code_positions')} diagnosis codes (code + ICD category + chapter embeddings).",
            f"- Loss: cross-entropy with positive-class weight {fmt_num(c.get('pos_weight'))} (sqrt of the "
            "training negative/positive ratio); no resampling.",
            f"- Chosen hyperparameters: {json.dumps(training.get('hyperparameters', {}), default=str)}.",
            f"- Search: {len(training.get('search', {}).get('trials', []))} trials, chosen by validation AUROC; "
            f"training time {fmt_num(timing.get('total_seconds'), 0)} s on {timing.get('torch_threads', 1)} CPU thread(s).",
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
    performance = (f"On the held-out `{split_name(f)}` split: AUROC {fmt_num(o.get('auroc'))}{fmt_interval(o.get('auroc_ci'))}, "
                   f"AUPRC {fmt_num(o.get('auprc'))}, Brier score {fmt_num(o.get('brier'))}, ECE {fmt_num(o.get('ece'))}, "
                   f"calibration slope {fmt_num(o.get('calibration_slope'))}"
                   + (f"; calling the top 10% finds {fmt_pct(top10.get('sensitivity'))} of readmissions with a PPV of "
                      f"{fmt_num(top10.get('ppv'))}" if top10 else "") + ". Details: Metrics, Calibration, Thresholds "
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
            f"--time-budget-minutes {fmt_num(timing.get('time_budget_minutes'), 0)} "
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
        rows = [[label, fmt_num(r["before"].get(key), 4), fmt_num(r["after"].get(key), 4),
                 fmt_num(r.get("after_held_out", {}).get(key), 4)]
                for label, key in (("ECE", "ece"), ("calibration-in-the-large", "calibration_in_the_large"),
                                   ("calibration slope", "calibration_slope"), ("observed rate", "observed_rate"),
                                   ("predicted rate", "predicted_rate"))]
        lines += [f"### {str(r.get('at', ''))[:10]}: recalibrated from `{r.get('from_version')}`", "",
                  f"- Why: {r.get('reason')} (by {r.get('by')}).",
                  f"- Data: {fmt_count(data.get('encounters'))} eligible encounters of {fmt_count(data.get('patients'))} "
                  f"patients with matured outcomes ({fmt_count(data.get('readmissions'))} readmissions), discharged from "
                  f"{data.get('since')} to before {data.get('until')}, outcomes as of {data.get('as_of')}.",
                  f"- Method: {r.get('method')}, refitted on the raw model probability. Check: {plan.get('how_checked')}"
                  f" ({'accepted' if r.get('accepted') else 'not accepted'}).",
                  f"- Monitoring reference: {r.get('reference')}.", ""]
        lines += md_table(["on the refit data", "before", "after", "after, held-out halves"], rows) + [""]
    return lines


def render_card(folder: str | Path) -> str:
    f = read_folder(folder)
    lines = (_metadata(f) + _intro(f) + _intended_use() + _target_population(f) + _data_sources(f) + _eligibility(f)
             + _outcome() + _predictors(f) + _missing_data(f) + _class_imbalance(f) + performance_section(f)
             + subgroups_section(f) + calibration_section(f) + thresholds_section(f) + fairness_section(f) + _model(f)
             + _limitations(f) + _updating(f) + recalibration_section(folder) + _hti1(f) + _reproduce(f))
    return "\n".join(lines)


def write_card(folder: str | Path) -> Path:
    path = Path(folder) / CARD_FILE
    path.write_text(render_card(folder))
    return path
