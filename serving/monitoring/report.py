"""The report: period summaries, drift, realised and estimated performance, fairness and service health,
from the prediction log and the outcomes (`monitoring_report`), or from rows already loaded
(`build_report`, pure).
"""
from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np
import pandas as pd
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine

from core import metrics as core_metrics
from core import monitoring as mon
from core.config import get_settings
from core.metric_report import auroc_interval

if TYPE_CHECKING:
    pass

from serving.monitoring.alerting import _seconds, _share, alerts
from serving.monitoring.constants import FAIRNESS_PERIODS, MATURITY_DAYS, MIN_CELL, MIN_PERIOD_ROWS, N_BOOT, _clean
from serving.monitoring.drift import _drift
from serving.monitoring.reference import Reference, resolve_reference
from serving.monitoring.rows import (
    _period_bounds,
    _scored,
    assign_periods,
    flagged_encounters,
    load_call_lists,
    load_monitoring_rows,
    period_id,
    period_label,
)

# --- the report ---------------------------------------------------------------------------------------

def monitoring_report(engine: Engine, *, as_of: Optional[dt.date] = None, reference: str = "model",
                      period: str = "month", model_dir: Optional[str | Path] = None,
                      model_version: Optional[str] = None, calls_per_day: Optional[int] = None,
                      metrics_text: Optional[str] = None, n_boot: int = N_BOOT) -> dict[str, Any]:
    """The whole report from the operational database (see the module docstring)."""
    as_of = as_of or dt.datetime.now(dt.timezone.utc).date()
    settings = get_settings()
    rows = load_monitoring_rows(engine, as_of, model_version)
    chosen = resolve_reference(reference, rows, model_dir or settings.model_dir)
    return build_report(rows, chosen, as_of=as_of, period=period, call_lists=load_call_lists(engine),
                        calls_per_day=calls_per_day or settings.calls_per_day,
                        follow_up_days=settings.follow_up_days, metrics_text=metrics_text, n_boot=n_boot)


def build_report(rows: pd.DataFrame, reference: Reference, *, as_of: dt.date, period: str = "month",
                 call_lists: Optional[pd.DataFrame] = None, calls_per_day: int = 10, follow_up_days: int = 30,
                 metrics_text: Optional[str] = None, n_boot: int = N_BOOT) -> dict[str, Any]:
    """The report of monitoring rows (`load_monitoring_rows`) against a reference: pure, no database."""
    codes, periods = assign_periods(rows["discharge"].to_numpy(), period)
    scored = _scored(rows)
    flagged, stored = flagged_encounters(rows, call_lists if call_lists is not None else pd.DataFrame(
        columns=["source", "encounter_id", "list_date"]), calls_per_day, follow_up_days)
    flagged &= scored
    first = pd.Timestamp(rows["discharge"].min()).date() if len(rows) else as_of
    summaries = _period_summaries(rows, codes, periods, scored, stored, as_of, first, reference)
    drift = _drift(rows, codes, periods, scored, reference, summaries)
    patients = pd.factorize(rows["patient_id"])[0]     # integer codes: the bootstraps draw patients
    performance = _performance(rows, codes, scored, flagged, patients, summaries, n_boot)
    fairness = _fairness(rows, codes, scored, flagged, patients, summaries, n_boot)
    service = service_health(rows, codes, periods, metrics_text)
    report = {
        "as_of": as_of.isoformat(), "period": period, "generated_at": dt.datetime.now(dt.timezone.utc).isoformat(
            timespec="seconds"),
        "reference": {"kind": reference.kind, "description": reference.description, "rows": reference.profile.get("rows"),
                      "window": [d.isoformat() for d in reference.window] if reference.window else None,
                      "mean_risk": reference.profile["risk"].get("mean"),
                      "expected_auroc": reference.profile["risk"].get("expected_auroc"),
                      "performance": reference.profile.get("performance", {})},
        "calls_per_day": int(calls_per_day),
        "model_versions": sorted({str(v) for v in rows["model_version"].dropna().unique()}),
        "counts": _counts(rows, scored),
        "periods": summaries, "drift": drift, "performance": performance, "fairness": fairness, "service": service,
    }
    report["alerts"] = [alert.as_dict() for alert in alerts(report)]
    return _clean(report)


def _counts(rows: pd.DataFrame, scored: np.ndarray) -> dict[str, int]:
    status = rows["status"].to_numpy()
    return {"logged": int(len(rows)), "scored": int(scored.sum()), "invalid": int(rows["invalid"].sum()),
            "ineligible": int((~rows["eligible"]).sum()), "with_outcome": int((scored & (status == "known")).sum()),
            "unmatured": int((scored & (status == "unmatured")).sum()),
            "unknown": int((scored & (status == "unknown")).sum())}


def _in_window(p: pd.Period, reference: Reference) -> bool:
    if reference.window is None:
        return False
    start, end = _period_bounds(p)
    return start >= reference.window[0] and end <= reference.window[1]


def _period_summaries(rows, codes, periods, scored, stored, as_of, first: dt.date, reference) -> list[dict[str, Any]]:
    """Each period's counts and score summary, from per-period sums over the rows (no frame is sliced). A period
    is `complete` when the log covers all of it: it starts on or after the first logged discharge and ends
    on or before `as_of`."""
    k = len(periods)
    status = rows["status"].to_numpy()

    def per_period(mask) -> np.ndarray:
        return np.bincount(codes, weights=np.asarray(mask, dtype=np.float64), minlength=k)

    totals = {"rows": per_period(np.ones(len(rows))), "scored": per_period(scored),
              "invalid": per_period(rows["invalid"].to_numpy(dtype=bool)),
              "ineligible": per_period(~rows["eligible"].to_numpy(dtype=bool)),
              "with_outcome": per_period(scored & (status == "known")),
              "unmatured": per_period(scored & (status == "unmatured")),
              "unknown": per_period(scored & (status == "unknown")),
              "api_rows": per_period(rows["channel"].to_numpy() == "api"), "stored": per_period(scored & stored)}
    risk = rows["risk"].to_numpy()[scored]
    order = np.lexsort((risk, codes[scored]))
    sorted_risk, bounds = risk[order], np.searchsorted(codes[scored][order], np.arange(k + 1))
    out = []
    for i, p in enumerate(periods):
        start, end = _period_bounds(p)
        part = sorted_risk[bounds[i]:bounds[i + 1]]
        scored_i, stored_i = int(totals["scored"][i]), int(totals["stored"][i])
        out.append({"period": period_id(p), "label": period_label(p), "start": start.isoformat(), "end": end.isoformat(),
                    "complete": first <= start and end <= as_of,
                    "matured": end + dt.timedelta(days=MATURITY_DAYS) <= as_of, "in_reference": _in_window(p, reference),
                    **{name: int(values[i]) for name, values in totals.items() if name != "stored"},
                    "invalid_share": float(totals["invalid"][i] / totals["rows"][i]) if totals["rows"][i] else 0.0,
                    "risk_mean": float(part.mean()) if part.size else None,
                    **{f"risk_p{q}": float(np.quantile(part, q / 100)) if part.size else None for q in (10, 50, 90)},
                    "call_list": "stored" if scored_i and stored_i == scored_i else "mixed" if stored_i else "replay"})
    return out


def _performance(rows, codes, scored, flagged, patients, summaries, n_boot) -> list[dict[str, Any]]:
    out = []
    risk, label = rows["risk"].to_numpy(), rows["label"].to_numpy()
    for k, summary in enumerate(summaries):
        in_period = (codes == k) & scored
        if in_period.sum() >= MIN_PERIOD_ROWS:
            estimate = mon.estimated_performance(risk[in_period], flagged[in_period])
            out.append({"period": summary["period"], "kind": "estimated", **estimate,
                        "risk_sd": float(np.std(risk[in_period], ddof=1)) if in_period.sum() > 1 else None})
        known = in_period & np.isfinite(label)
        y = label[known]
        if not summary["matured"] or known.sum() < MIN_PERIOD_ROWS or y.min() == y.max():
            continue
        realised = mon.realised_performance(y, risk[known], flagged[known])
        low, high = auroc_interval(y, risk[known], patients[known], n_boot=n_boot, seed=k)
        low_obs, high_obs = core_metrics.wilson_interval(float(y.sum()), int(y.size))
        out.append({"period": summary["period"], "kind": "realised", **realised, "auroc_low": low, "auroc_high": high,
                    "observed_low": low_obs, "observed_high": high_obs})
    return out


FAIRNESS_GROUPS = ("race", "sex", "age_band")


def _fairness(rows, codes, scored, flagged, patients, summaries, n_boot) -> dict[str, Any]:
    """Ratios to the largest group over the last `FAIRNESS_PERIODS` matured periods, by race, sex, age band
    and race x sex (cells under 10 suppressed by `core.monitoring.fairness_table`)."""
    matured = [k for k, s in enumerate(summaries) if s["matured"] and not s["in_reference"]][-FAIRNESS_PERIODS:]
    label = rows["label"].to_numpy()
    use = scored & np.isin(codes, matured) & np.isfinite(label)
    if not matured or use.sum() < MIN_CELL:
        return {"periods": [summaries[k]["period"] for k in matured], "rows": [], "n": int(use.sum())}
    subset = rows.loc[use, ["risk", *FAIRNESS_GROUPS]]
    groups = {name: subset[name].astype(object).fillna("unknown").astype(str) for name in FAIRNESS_GROUPS}
    groups["race x sex"] = groups["race"] + " / " + groups["sex"]
    tables = []
    for attribute, values in groups.items():
        table = mon.fairness_table(label[use], subset["risk"], flagged[use], values, patients[use], n_boot=n_boot)
        tables.append(table.assign(attribute=attribute))
    return {"periods": [summaries[k]["period"] for k in matured], "n": int(use.sum()),
            "rows": pd.concat(tables, ignore_index=True).to_dict("records")}


# --- service health -----------------------------------------------------------------------------------

def parse_api_metrics(text: str) -> dict[str, Any]:
    """Requests, the share answered 5xx and latency percentiles (interpolated in the histogram buckets)
    from a scrape of the API's /metrics; the scrape route itself is left out."""
    requests = errors = 0.0
    buckets: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            route = sample.labels.get("route", "")
            if route == "/metrics":
                continue
            if sample.name == "readmit_api_requests_total":
                requests += sample.value
                errors += sample.value if sample.labels.get("status", "").startswith("5") else 0.0
            elif sample.name == "readmit_api_request_seconds_bucket":
                bound = float(sample.labels["le"])
                buckets[bound] = buckets.get(bound, 0.0) + sample.value
    out = {"requests": int(requests), "error_rate": errors / requests if requests else None}
    for q in (50, 95, 99):
        out[f"p{q}_seconds"] = _histogram_quantile(buckets, q / 100)
    return out


def _histogram_quantile(buckets: dict[float, float], q: float) -> Optional[float]:
    if not buckets:
        return None
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    target, previous_bound, previous_count = q * total, 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= target:
            if not np.isfinite(bound):
                return previous_bound
            share = (target - previous_count) / (count - previous_count) if count > previous_count else 1.0
            return previous_bound + share * (bound - previous_bound)
        previous_bound, previous_count = bound, count
    return previous_bound


def service_health(rows, codes, periods, metrics_text: Optional[str]) -> dict[str, Any]:
    api = (rows["channel"] == "api").to_numpy()
    per_period = [{"period": period_id(p), "api_predictions": int((api & (codes == k)).sum())}
                  for k, p in enumerate(periods)]
    metrics = parse_api_metrics(metrics_text) if metrics_text else None
    if metrics and metrics["requests"]:
        message = (f"{metrics['requests']:,} API requests since the API started, "
                   f"{_share(metrics['error_rate'])} answered with a server error; 95% took under "
                   f"{_seconds(metrics['p95_seconds'])}.")
    elif api.any():
        message = (f"{int(api.sum()):,} predictions came through the API; no metrics scrape was given "
                   "(--metrics FILE), so errors and latency are not reported.")
    else:
        message = "No API traffic: no prediction came through the API and no metrics scrape shows requests."
    return {"per_period": per_period, "metrics": metrics, "message": message}


