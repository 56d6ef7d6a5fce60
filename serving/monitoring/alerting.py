"""Alerts: each check's severity (watch / act) and a sentence a quality manager understands.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pandas as pd
from scipy import stats

from core import monitoring as mon

if TYPE_CHECKING:
    pass

from serving.monitoring.constants import (
    AUROC_DROP,
    DATASET_DRIFT,
    ERROR_RATE,
    ESTIMATED_AUROC,
    ESTIMATED_RATE,
    INVALID_SHARE,
    MIN_CELL,
    MIN_PERIOD_ROWS,
    P95_SECONDS,
    UNKNOWN_SHARE,
    VOLUME_RATIO,
)

# --- alerts -------------------------------------------------------------------------------------------

def _share(value: Optional[float], digits: int = 1) -> str:
    return "n/a" if value is None or not np.isfinite(value) else f"{100 * value:.{digits}f}%"


def _seconds(value: Optional[float]) -> str:
    return "n/a" if value is None else f"{value:.2f} s" if value >= 0.1 else f"{1000 * value:.0f} ms"


def _band(value: float, bands: tuple[float, float]) -> Optional[str]:
    """'act' from the second band, 'watch' from the first, else None (NaN: None)."""
    if value is None or not np.isfinite(value):
        return None
    return "act" if value >= bands[1] else "watch" if value >= bands[0] else None


def alerts(report: dict[str, Any]) -> list[mon.Alert]:
    """Every check that fails, act first; each says in one sentence what a quality manager should know."""
    found = []
    summaries = {s["period"]: s for s in report["periods"]}
    judged = [s for s in report["periods"] if not s["in_reference"] and s["scored"] >= MIN_PERIOD_ROWS]
    for cell in report["drift"]["cells"]:
        summary = summaries[cell["period"]]
        if cell["severity"] and not summary["in_reference"]:
            found.append(mon.Alert("feature_drift", cell["feature"], cell["severity"],
                                   f"Data drift: {cell['label']} ({cell['feature']}) in {summary['label']} differs from "
                                   f"the reference (PSI {cell['psi']:.2f}; {cell['severity']}).", cell["period"]))
    for s in judged:
        found += _period_alerts(s, report)
    found += _volume_alerts(report["periods"])
    found += _fairness_alerts(report["fairness"])
    found += _service_alerts(report["service"])
    rank = {"act": 0, "watch": 1}
    return sorted(found, key=lambda a: (rank[a.severity], -(pd.Timestamp(summaries[a.period]["start"]).value
                                                            if a.period in summaries else 0), a.check, a.subject))


def _period_alerts(s: dict[str, Any], report: dict[str, Any]) -> list[mon.Alert]:
    out, label, period = [], s["label"], s["period"]
    monitored = len(report["drift"]["features"])
    severity = _band(s.get("drift_share"), DATASET_DRIFT)
    if severity:
        out.append(mon.Alert("dataset_drift", "inputs", severity,
                             f"Data drift: {len(s['drifted'])} of {monitored} model inputs changed in {label} "
                             f"({_share(s['drift_share'], 0)}; {severity}).", period))
    score_severity = mon.drift_severity(s.get("score_psi") or float("nan"), s.get("score_p_value") or float("nan")) \
        if s["complete"] else None
    if score_severity:
        out.append(mon.Alert("score_drift", "risk", score_severity,
                             f"Risk scores: the spread of risks in {label} moved away from the reference "
                             f"(PSI {s['score_psi']:.2f}; {score_severity}).", period))
    severity = _band(s["invalid_share"], INVALID_SHARE)
    if severity:
        out.append(mon.Alert("invalid_rows", "input", severity,
                             f"Data quality: {_share(s['invalid_share'])} of {label}'s discharges could not be "
                             f"scored for invalid values ({severity}).", period))
    matured_total = s["with_outcome"] + s["unknown"]
    if s["matured"] and matured_total:
        share = s["unknown"] / matured_total
        severity = _band(share, UNKNOWN_SHARE)
        if severity:
            out.append(mon.Alert("outcomes", "readmitted_30d", severity,
                                 f"Outcomes: {_share(share, 0)} of {label}'s discharges have no known outcome 30 days "
                                 f"on: load them with `readmit outcomes` ({severity}).", period))
    out += _performance_alerts(s, report)
    return out


def _performance_alerts(s: dict[str, Any], report: dict[str, Any]) -> list[mon.Alert]:
    out, label, period = [], s["label"], s["period"]
    rows = {r["kind"]: r for r in report["performance"] if r["period"] == period}
    reference = report["reference"]
    realised, estimated = rows.get("realised"), rows.get("estimated")
    if realised:
        severity = mon.calibration_severity(realised["observed_rate"], realised["predicted_rate"], realised["n"])
        if severity:
            out.append(mon.Alert("calibration", "calibration_in_the_large", severity,
                                 f"Calibration: observed readmissions in {label} were {_share(realised['observed_rate'])} "
                                 f"against {_share(realised['predicted_rate'])} predicted ({severity}).", period))
        base = (reference.get("performance") or {}).get("auroc")
        high = realised.get("auroc_high")
        if base is not None and high is not None:
            severity = "act" if high < base - AUROC_DROP[1] else "watch" if high < base - AUROC_DROP[0] else None
            if severity:
                out.append(mon.Alert("discrimination", "auroc", severity,
                                     f"Discrimination: AUROC in {label} was {realised['auroc']:.2f} (95% interval "
                                     f"{realised['auroc_low']:.2f}-{high:.2f}) against {base:.2f} in the reference "
                                     f"({severity}).", period))
    elif estimated and not s["matured"]:
        out += _estimated_alerts(estimated, reference, label, period)
    return out


def _estimated_alerts(estimated, reference, label, period) -> list[mon.Alert]:
    """The expected readmission rate (mean risk) or expected AUROC of an unmatured period apart from the
    reference's; the rate's change must also be beyond chance (a z-test on the mean risk at 5%)."""
    out = []
    base_rate, base_auroc = reference.get("mean_risk"), reference.get("expected_auroc")
    rate_change = abs(estimated["predicted_rate"] / base_rate - 1) if base_rate else float("nan")
    if estimated.get("risk_sd"):
        z = (estimated["predicted_rate"] - base_rate) / (estimated["risk_sd"] / np.sqrt(estimated["n"]))
        rate_change = rate_change if 2 * stats.norm.sf(abs(z)) < mon.SIGNIFICANCE else float("nan")
    auroc_change = abs(estimated["auroc"] - base_auroc) if base_auroc is not None else float("nan")
    severity = max((_band(rate_change, ESTIMATED_RATE), _band(auroc_change, ESTIMATED_AUROC)),
                   key=lambda v: {"act": 2, "watch": 1, None: 0}[v])
    if severity:
        out.append(mon.Alert("estimated_performance", "expected_readmission_rate", severity,
                             f"Estimated performance: outcomes of {label} are not known yet; from its risks the model "
                             f"expects {_share(estimated['predicted_rate'])} readmitted (reference "
                             f"{_share(base_rate)}) and an AUROC of {estimated['auroc']:.2f} (reference "
                             f"{base_auroc:.2f}) ({severity}).", period))
    return out


def _volume_alerts(summaries: list[dict[str, Any]]) -> list[mon.Alert]:
    complete = [s for s in summaries if s["complete"] and not s["in_reference"]]
    out = []
    for s in complete:
        others = [o["scored"] for o in complete if o is not s]
        if len(others) < 3 or not np.median(others):
            continue
        usual = float(np.median(others))
        ratio = s["scored"] / usual
        severity = ("act" if not VOLUME_RATIO[1][0] < ratio < VOLUME_RATIO[1][1] else
                    "watch" if not VOLUME_RATIO[0][0] < ratio < VOLUME_RATIO[0][1] else None)
        if severity:
            out.append(mon.Alert("volume", "scored", severity,
                                 f"Volume: {s['scored']:,} discharges scored in {s['label']}, {ratio:.0%} of the usual "
                                 f"{usual:,.0f} ({severity}).", s["period"]))
    return out


# Alerts follow equal opportunity (the call list reaches each group's readmitted patients alike) and
# calibration within groups; selection rate and PPV are shown, not alerted on: with base rates that differ
# by age, a well-calibrated list *should* select groups at different rates.
FAIRNESS_ALERTS = {"sensitivity": "reaches a different share of readmitted {group} patients",
                   "observed_to_expected": "is calibrated differently for {group} patients"}


def _fairness_alerts(fairness: dict[str, Any]) -> list[mon.Alert]:
    """Flagged ratios of the alerted metrics, for groups with at least `MIN_CELL` readmissions (with fewer,
    a ratio of 0 or a degenerate interval says nothing)."""
    readmissions = {(r["attribute"], r["group"]): r["cell"] for r in fairness["rows"] if r["metric"] == "sensitivity"}
    out = []
    for row in fairness["rows"]:
        if (not row["flagged"] or row["metric"] not in FAIRNESS_ALERTS
                or readmissions.get((row["attribute"], row["group"]), 0) < MIN_CELL):
            continue
        ratio = row["ratio"]
        outside = row["ratio_high"] < mon.FAIRNESS_BOUNDS[0] or row["ratio_low"] > mon.FAIRNESS_BOUNDS[1]
        severity = "act" if outside else "watch"
        words = FAIRNESS_ALERTS[row["metric"]].format(group=row["group"])
        out.append(mon.Alert("fairness", f"{row['attribute']}={row['group']}", severity,
                             f"Fairness: over {', '.join(fairness['periods'])} the model {words} than for "
                             f"{row['reference']} patients ({row['metric']} ratio {ratio:.2f}, 95% interval "
                             f"{row['ratio_low']:.2f}-{row['ratio_high']:.2f}; {severity}).", None))
    return out


def _service_alerts(service: dict[str, Any]) -> list[mon.Alert]:
    metrics, out = service.get("metrics") or {}, []
    severity = _band(metrics.get("error_rate"), ERROR_RATE)
    if severity:
        out.append(mon.Alert("service", "error_rate", severity,
                             f"Service: {_share(metrics['error_rate'])} of API requests failed with a server error "
                             f"({severity}).", None))
    severity = _band(metrics.get("p95_seconds"), P95_SECONDS)
    if severity:
        out.append(mon.Alert("service", "latency", severity,
                             f"Service: 5% of API requests took longer than {_seconds(metrics['p95_seconds'])} "
                             f"({severity}).", None))
    return out


def any_act(report: dict[str, Any]) -> bool:
    return any(alert["severity"] == "act" for alert in report["alerts"])


