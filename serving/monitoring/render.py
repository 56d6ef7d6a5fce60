"""Reading the report: one line per chart, the text and HTML reports, and the alert summary the page shows.
"""
from __future__ import annotations

import html
from typing import TYPE_CHECKING, Any, Optional

from sqlalchemy import Engine, func, select

from serving.db_tables import CallList, Outcome, PredictionLog

if TYPE_CHECKING:
    pass

from serving.monitoring.alerting import _share

# --- reading the report: one line per chart, text and HTML ---------------------------------------------

def _latest(report: dict[str, Any], kind: str) -> Optional[dict[str, Any]]:
    rows = [r for r in report["performance"] if r["kind"] == kind]
    return rows[-1] if rows else None


def _label_of(report: dict[str, Any], period: str) -> str:
    return next((p["label"] for p in report["periods"] if p["period"] == period), period)


def readings(report: dict[str, Any]) -> dict[str, str]:
    """One plain sentence per chart of the Monitoring page and the HTML report."""
    realised, estimated = _latest(report, "realised"), _latest(report, "estimated")
    base = (report["reference"].get("performance") or {}).get("auroc")
    if realised:
        performance = (f"{_label_of(report, realised['period'])}, the latest period with matured outcomes: AUROC "
                       f"{realised['auroc']:.2f} ({realised['auroc_low']:.2f}-{realised['auroc_high']:.2f})"
                       + (f" against {base:.2f} in the reference" if base is not None else "")
                       + (f"; the call list's PPV was {_share(realised.get('ppv'))}." if realised.get("ppv") is not None
                          else "."))
    elif estimated:
        performance = (f"No period has matured outcomes yet; from the risks alone, {_label_of(report, estimated['period'])} "
                       f"should reach an AUROC of {estimated['auroc']:.2f}.")
    else:
        performance = "Nothing scored in the prediction log yet."
    if realised:
        calibration = (f"In {_label_of(report, realised['period'])}, {_share(realised['observed_rate'])} were readmitted "
                       f"against {_share(realised['predicted_rate'])} predicted.")
    else:
        calibration = "Observed rates appear once a period's outcomes have matured (30 days after it ends)."
    flagged = [c for c in report["drift"]["cells"] if c["severity"]]
    if flagged:
        worst = max(flagged, key=lambda c: c["psi"])
        drift = (f"{len(flagged)} input-periods drift ({sum(c['severity'] == 'act' for c in flagged)} act); the largest: "
                 f"{worst['label']} in {_label_of(report, worst['period'])} (PSI {worst['psi']:.2f}).")
    else:
        drift = "No model input drifts against the reference."
    fair = report["fairness"]
    if not fair["rows"]:
        fairness = "Fairness needs matured outcomes: none yet in the monitored periods."
    else:
        shown = [r for r in fair["rows"] if r["flagged"]]
        alerted = sum(a["check"] == "fairness" for a in report["alerts"])
        fairness = (f"Over {', '.join(fair['periods'])}: " + (
            f"{len(shown)} group ratios are outside 0.8-1.25 with an interval that excludes 1; {alerted} of them, "
            "on sensitivity or observed / expected, raise an alert." if shown else
            "no group ratio is outside 0.8-1.25 with an interval that excludes 1."))
    counts = report["counts"]
    volume = (f"{counts['scored']:,} scored discharges: {counts['with_outcome']:,} with a known outcome, "
              f"{counts['unknown']:,} matured without one, {counts['unmatured']:,} not yet 30 days old.")
    return {"performance": performance, "calibration": calibration, "drift": drift, "fairness": fairness,
            "volume": volume, "service": report["service"]["message"]}


def render_text(report: dict[str, Any]) -> str:
    """The report for a terminal or an e-mail: alerts, then one line per period."""
    lines = [f"Monitoring report as of {report['as_of']} ({report['period']}ly periods)",
             f"Reference: {report['reference']['description']}", ""]
    lines += [f"Alerts ({len(report['alerts'])}):"] + ([f"  [{a['severity']}] {a['message']}" for a in report["alerts"]]
                                                       or ["  none"])
    lines += ["", f"{'period':<10} {'scored':>7} {'outcome':>8} {'mean risk':>10} {'score PSI':>10} {'drift':>6} "
                  f"{'AUROC':>6} {'observed':>9}"]
    realised = {r["period"]: r for r in report["performance"] if r["kind"] == "realised"}
    for p in report["periods"]:
        r = realised.get(p["period"], {})
        lines.append(f"{p['period']:<10} {p['scored']:>7,} {p['with_outcome']:>8,} {_share(p['risk_mean']):>10} "
                     f"{_num(p.get('score_psi')):>10} {_share(p.get('drift_share'), 0):>6} {_num(r.get('auroc')):>6} "
                     f"{_share(r.get('observed_rate')) if r else '':>9}")
    lines += [""] + [f"{name}: {text}" for name, text in readings(report).items()]
    return "\n".join(lines) + "\n"


def _num(value: Optional[float], digits: int = 2) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def render_html(report: dict[str, Any]) -> str:
    """A self-contained HTML report: the alerts, then each chart with its reading (plotly.js inlined once,
    nothing fetched from the network)."""
    read = readings(report)
    from serving import figures  # noqa: PLC0415 (plotly only when a chart is drawn)
    charts = [("performance", figures.monitoring_performance_figure(report)),
              ("calibration", figures.monitoring_calibration_figure(report)),
              ("drift", figures.monitoring_drift_figure(report)),
              ("fairness", figures.monitoring_fairness_figure(report)),
              ("volume", figures.monitoring_volume_figure(report)),
              ("service", figures.monitoring_service_figure(report))]
    rows = "".join(f"<tr class='{a['severity']}'><td>{a['severity']}</td><td>{html.escape(a['check'])}</td>"
                   f"<td>{html.escape(a['message'])}</td></tr>" for a in report["alerts"])
    body = [f"<h1>Readmission model monitoring, as of {report['as_of']}</h1>",
            f"<p>Reference: {html.escape(report['reference']['description'])}. Periods: {report['period']}s of "
            f"discharge dates. Model versions: {html.escape(', '.join(report['model_versions']) or 'none')}.</p>",
            f"<h2>Alerts ({len(report['alerts'])})</h2>",
            f"<table><tr><th>severity</th><th>check</th><th>finding</th></tr>{rows}</table>" if rows else
            "<p>No alert.</p>"]
    for i, (name, fig) in enumerate(charts):
        body.append(f"<p class='reading'>{html.escape(read[name])}</p>")
        body.append(fig.to_html(full_html=False, include_plotlyjs=i == 0, config={"displaylogo": False}))
    style = ("body{font-family:sans-serif;max-width:1200px;margin:auto;padding:1em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}tr.act td:first-child{background:#F8C9B0}"
             "tr.watch td:first-child{background:#FBE3C8}.reading{font-weight:bold;margin-top:2em}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>Monitoring {report['as_of']}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def log_state(engine: Engine) -> str:
    """Changes whenever a prediction, an outcome or a call list is recorded: part of the page's cache key."""
    log, outcome, lists = PredictionLog.__table__, Outcome.__table__, CallList.__table__
    with engine.connect() as connection:
        logged = connection.execute(select(func.max(log.c.id), func.count())).one()
        known = connection.execute(select(func.count(), func.max(outcome.c.recorded_at))).one()
        built = connection.execute(select(func.max(lists.c.id))).scalar()
    return f"{logged[0]}:{logged[1]}:{known[0]}:{known[1]}:{built}"


CHECK_ORDER = ("calibration", "discrimination", "estimated_performance", "outcomes", "dataset_drift", "feature_drift",
               "score_drift", "invalid_rows", "volume", "fairness", "service")


def alert_summary(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One line per check, act first: its most severe and most recent alert (for data drift, every input
    drifting at that severity in that period), and how many more alerts the check raised."""
    out = []
    for check in CHECK_ORDER:
        found = [a for a in report["alerts"] if a["check"] == check]   # act first, newest first
        if not found:
            continue
        top, message = found[0], found[0]["message"]
        shown = 1
        if check == "feature_drift":
            same = [c for c in report["drift"]["cells"] if c["period"] == top["period"] and c["severity"] == top["severity"]]
            same.sort(key=lambda c: -c["psi"])
            message = (f"Data drift in {_label_of(report, top['period'])}: "
                       + ", ".join(f"{c['label']} ({c['feature']}, PSI {c['psi']:.2f})" for c in same)
                       + f" differ from the reference ({top['severity']}).")
            shown = len(same)
        out.append({"check": check, "severity": top["severity"], "message": message, "more": len(found) - shown})
    return sorted(out, key=lambda item: item["severity"] != "act")
