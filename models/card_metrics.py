"""The model card's measured sections: metrics overall and on the independent set, subgroups,
calibration, thresholds and fairness, every number from the folder's files (`models.card_folder.Folder`)."""
from __future__ import annotations

from typing import Optional

from models.card_folder import (
    EXCLUDED_DISPOSITIONS,
    Evaluation,
    Folder,
    fmt_count,
    fmt_interval,
    fmt_num,
    fmt_pct,
    md_table,
    split_name,
    subgroup_rows,
)

# `benchmarks/model_quality.py` part 2 (../shared/EVALUATION.md's protocol on our own test patients' raw rows),
# as docs/evaluation.md records it. It was measured on one set of weights: the card shows it only for them.
INDEPENDENT_SET_RESULT = {"weights_sha256_prefix": "1bdda377dd84", "measured": "2026-11-29", "rows_in_file": 12882,
                          "excluded": 115, "evaluated": 12767, "auroc": 0.673, "auroc_ci": (0.657, 0.689),
                          "auprc": 0.214, "brier": 0.098, "ece": 0.009}
THRESHOLD_FOR_FAIRNESS = ("validation_top_10pct", "top 10% of validation risk")
RELIABILITY_COLUMNS = {"bin": "bin", "n": "encounters", "positives": "readmitted", "p_min": "lowest risk",
                       "p_max": "highest risk", "mean_predicted": "mean predicted", "observed_rate": "observed rate",
                       "observed": "observed rate", "lower": "95% interval, low", "upper": "95% interval, high"}


def _metric_table(evaluations: list[Evaluation]) -> list[str]:
    return md_table(["model / split", "n", "AUROC (95% CI)", "AUPRC", "Brier", "ECE"],
                  ([name, fmt_count(o.get("n")), f"{fmt_num(o.get('auroc'))}{fmt_interval(o.get('auroc_ci'))}",
                    fmt_num(o.get("auprc")), fmt_num(o.get("brier")), fmt_num(o.get("ece"))]
                   for name, o in ((name, e["overall"]) for name, e in evaluations)))


def _metrics_version_lines(measured: Optional[str], version: Optional[str]) -> list[str]:
    """Metrics are only this model's if they name its version: say so when they do not."""
    if measured is not None and measured == version:
        return [f"Measured on model version `{version}` (`model_version` in `metrics.json`).", ""]
    if measured is None:
        return ["**`metrics.json` does not name the model version it measured**: rerun `readmit evaluate`.", ""]
    return [f"**Stale**: `metrics.json` measured model version `{measured}`, not this folder's "
            f"`{version}`: rerun `readmit evaluate`.", ""]


def performance_section(f: Folder) -> list[str]:
    lines = ["## Metrics", "",
             "Discrimination (AUROC, AUPRC), overall accuracy of the probabilities (Brier score) and calibration "
             "(ECE, 10 equal-frequency bins) of the calibrated risk.", "",
             "### Performance overall", ""]
    if f.evaluations:
        protocol = f.metrics.get("protocol") or {}
        rows = f.metrics.get("rows") or {}
        lines += _metrics_version_lines(f.metrics.get("model_version"), f.version)
        lines += [f"From `metrics.json` (written by `readmit evaluate` on the `{split_name(f)}` split"
                  + (f": {fmt_count(rows.get('evaluated'))} encounters of {fmt_count(rows.get('patients'))} patients never "
                     f"used in training or tuning, {fmt_count(rows.get('positives'))} readmitted" if rows else "")
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
                  "", *md_table(["split", "AUROC", "AUPRC", "Brier", "ECE"],
                              ([name, fmt_num(m.get("auroc")), fmt_num(m.get("auprc")), fmt_num(m.get("brier"), 4),
                                fmt_num(m.get("ece"), 4)] for name, m in reported.items()))]
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
                     f"{fmt_interval(r['auroc_ci'])}, AUPRC {r['auprc']:.3f}, Brier score {r['brier']:.3f}, "
                     f"ECE {r['ece']:.3f}, the same as the warehouse path.")
    else:
        lines.append("Result: not yet measured for these weights; run `benchmarks/model_quality.py`.")
    lines += ["", "For comparison, other models on the real independent set (`../shared/EVALUATION.md`, not this "
              "model): LACE 0.577, logistic regression 0.670, tuned LightGBM 0.681 AUROC; published honest results "
              "on this dataset lie at 0.64-0.68.", ""]
    return lines


def subgroups_section(f: Folder) -> list[str]:
    lines = ["## Subgroups", "",
             "Every metric within each level of race, sex and age band, with the same model and cut-offs for "
             "everyone. Levels with fewer than 100 encounters or 10 readmissions are marked *(small)*: too few "
             "to judge.", "",
             "### Performance by race, sex and age band", ""]
    rows = list(subgroup_rows(f.primary[1])) if f.primary else []
    if not rows:
        return lines + ["No subgroup results in `metrics.json` yet: run `readmit evaluate`.", ""]
    lines += md_table(["group", "level", "n", "readmitted", "AUROC (95% CI)", "ECE", "mean predicted", "observed rate"],
                    ([group.replace("_", " "), f"{row.get('level')}{' (small)' if row.get('small') else ''}",
                      fmt_count(row.get("n")), fmt_count(row.get("positives")),
                      f"{fmt_num(row.get('auroc'))}{fmt_interval(row.get('auroc_ci'))}", fmt_num(row.get("ece")),
                      fmt_num(row.get("mean_predicted")), fmt_num(row.get("prevalence"))] for group, row in rows))
    return lines + [""]


def calibration_section(f: Folder) -> list[str]:
    lines = ["## Calibration", ""]
    c = f.calibration
    if c:
        selection = c.get("selection", {})
        lines.append(f"Post-hoc calibration: **{c.get('method')}**, chosen by "
                     f"{selection.get('criterion', 'measurement on validation')}, then refitted on the whole "
                     "validation split.")
        candidates = selection.get("candidates") or {}
        if candidates:
            lines += ["", *md_table(["method", "held-out log-loss", "held-out ECE"],
                                  ([m, fmt_num(v.get("held_out_log_loss"), 4), fmt_num(v.get("held_out_ece"), 4)]
                                   for m, v in candidates.items()))]
    if f.primary:
        o = f.overall
        lines += ["", f"On the evaluated split: ECE {fmt_num(o.get('ece'), 4)} (10 equal-frequency bins), calibration "
                  f"slope {fmt_num(o.get('slope') or o.get('calibration_slope'))}, intercept "
                  f"{fmt_num(o.get('intercept') or o.get('calibration_intercept'))} (ideal: slope 1, intercept 0)."]
        reliability = [r for r in f.primary[1].get("reliability") or [] if isinstance(r, dict)]
        if reliability:
            keys = list(reliability[0])
            lines += ["", "Reliability (10 equal-frequency bins of predicted risk):", "",
                      *md_table([RELIABILITY_COLUMNS.get(k, k.replace("_", " ")) for k in keys],
                              ([fmt_count(r.get(k)) if k in ("bin", "n", "positives") else fmt_num(r.get(k), 4)
                                for k in keys] for r in reliability))]
    return (lines if len(lines) > 2 else lines + ["No calibration information in the model folder."]) + [""]


def thresholds_section(f: Folder) -> list[str]:
    t = f.thresholds
    lines = ["## Thresholds and their rationale", "",
             "A care team can make a fixed number of calls a day, so the cut-off follows capacity: the dashboard "
             "turns calls per day into the share of discharges called and the risk cut-off that selects them. The "
             "cut-offs below were set on the validation split (never on test) as starting points for a fixed "
             "share; best F1 is given for reference only, as it weighs a missed readmission and an unneeded call "
             "equally. The same cut-off applies to every patient group (see Fairness)."]
    if not t:
        return lines + ["", "No `thresholds.json` in this folder.", ""]
    lines += ["", f"Set on calibrated validation risk ({fmt_count(t.get('n_validation'))} encounters, prevalence "
              f"{fmt_pct(t.get('validation_prevalence'))}):", ""]
    rows = [[f"top {c.get('top_percent')}%", fmt_num(c.get("risk_cutoff"), 4), fmt_pct(c.get("share_flagged")),
             fmt_num(c.get("ppv")), fmt_num(c.get("sensitivity"))] for c in t.get("capacity", [])]
    f1 = t.get("best_f1")
    if f1:
        rows.append([f"best F1 ({fmt_num(f1.get('f1'))})", fmt_num(f1.get("risk_cutoff"), 4), fmt_pct(f1.get("share_flagged")),
                     fmt_num(f1.get("precision")), fmt_num(f1.get("recall"))])
    lines += md_table(["rule", "risk cut-off", "share flagged (validation)", "PPV", "sensitivity"], rows)
    on_test = (f.primary[1].get("thresholds") or {}) if f.primary else {}
    tested = [(f"top {c.get('top_percent')}%", on_test.get(f"validation_top_{c.get('top_percent')}pct"))
              for c in t.get("capacity", [])] + [("best F1", on_test.get("best_f1"))]
    tested = [(rule, m) for rule, m in tested if isinstance(m, dict)]
    if tested:
        lines += ["", f"The same cut-offs on the `{split_name(f)}` split (`metrics.json`):", "",
                  *md_table(["rule", "share flagged", "PPV", "sensitivity", "flagged and readmitted", "flagged, not readmitted"],
                          ([rule, fmt_pct(m.get("flagged_fraction")), fmt_num(m.get("precision")), fmt_num(m.get("recall")),
                            fmt_count(m.get("tp")), fmt_count(m.get("fp"))] for rule, m in tested))]
    lines += ["", *md_table(["tier", "risk at least", "meaning", "observed rate (validation)"],
                          ([tier.get("name"), fmt_num(tier.get("min_risk"), 4), tier.get("description"),
                            fmt_num(tier.get("validation_observed_rate"))] for tier in t.get("tiers", [])))]
    return lines + [""]


def _fairness_rows(f: Folder) -> list[list[str]]:
    key = THRESHOLD_FOR_FAIRNESS[0]
    overall = (f.primary[1].get("thresholds") or {}).get(key, {}) if f.primary else {}
    rows = []
    for group, row in (subgroup_rows(f.primary[1]) if f.primary else []):
        at = (row.get("thresholds") or {}).get(key) or {}
        gap = (at.get("recall") - overall["recall"]) if isinstance(at.get("recall"), (int, float)) \
            and isinstance(overall.get("recall"), (int, float)) else None
        note = "too few to judge" if row.get("small") else ("sensitivity gap over 5 points"
                                                             if gap is not None and abs(gap) > 0.05 else "")
        rows.append([group.replace("_", " "), str(row.get("level")), fmt_count(row.get("n")), fmt_num(row.get("auroc")),
                     fmt_pct(at.get("flagged_fraction")), fmt_num(at.get("recall")),
                     "none flagged" if at.get("flagged_fraction") == 0 else fmt_num(at.get("precision")),
                     "–" if gap is None else f"{100 * gap:+.1f}", note])
    return rows


def _auroc_range(f: Folder) -> str:
    judged = [(row["auroc"], f"{row.get('level')}, n={fmt_count(row.get('n'))}") for _, row in subgroup_rows(f.primary[1])
              if not row.get("small") and isinstance(row.get("auroc"), (int, float))]
    if not judged:
        return ""
    (low, low_at), (high, high_at) = min(judged), max(judged)
    return (f"Among levels large enough to judge, AUROC ranges from {low:.3f} ({low_at}) to {high:.3f} ({high_at}); "
            f"overall {fmt_num(f.overall.get('auroc'))}. ")


def fairness_section(f: Folder) -> list[str]:
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
              *md_table(["group", "level", "n", "AUROC", "share flagged", "sensitivity", "PPV", "gap (points)", "note"],
                      rows)]
    return lines + [""]
