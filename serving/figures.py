"""Plotly figure builders, one palette: pure functions from computed results to Figures.

Every builder takes what `core.metric_report.evaluate_predictions` returns (one dict per model, usually as
`{model name: result}`) and returns a `plotly.graph_objects.Figure`; nothing is computed here that
the metrics did not already compute, and nothing is drawn to a screen. `readmit evaluate` saves
them as plotly JSON; the dashboard shows the same figures.
"""
from __future__ import annotations

import textwrap
from typing import Any, Mapping, Optional

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

Results = Mapping[str, Mapping[str, Any]]

# One colour-blind-safe palette (Okabe & Ito) for every chart the product draws.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
RAISES, LOWERS, NEUTRAL = "#D55E00", "#0072B2", "#555555"   # risk raised, lowered, totals
_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=50), legend=dict(x=1.02, y=1))


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _auroc_label(name: str, result: Mapping[str, Any]) -> str:
    overall = result["overall"]
    ci = overall.get("auroc_ci") or [None, None]
    interval = f" [{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci[0] is not None else ""
    return f"{name}: AUROC {_fmt(overall.get('auroc'))}{interval}"


def roc_figure(results: Results, title: str = "ROC curve") -> go.Figure:
    fig = go.Figure()
    for i, (name, result) in enumerate(results.items()):
        roc = result["curves"]["roc"]
        fig.add_trace(go.Scatter(x=roc["fpr"], y=roc["tpr"], mode="lines", name=_auroc_label(name, result),
                                 line=dict(color=_color(i), width=2)))
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", name="chance",
                             line=dict(color="#999", dash="dot", width=1)))
    fig.update_layout(title=title, xaxis_title="false positive rate (1 - specificity)",
                      yaxis_title="true positive rate (sensitivity)", **_LAYOUT)
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1])
    return fig


def pr_figure(results: Results, title: str = "Precision-recall curve") -> go.Figure:
    fig = go.Figure()
    prevalence = None
    for i, (name, result) in enumerate(results.items()):
        pr = result["curves"]["pr"]
        overall = result["overall"]
        prevalence = overall.get("prevalence")
        fig.add_trace(go.Scatter(x=pr["recall"], y=pr["precision"], mode="lines",
                                 name=f"{name}: AUPRC {_fmt(overall.get('auprc'))}",
                                 line=dict(color=_color(i), width=2)))
    if prevalence is not None:
        fig.add_trace(go.Scatter(x=[0, 1], y=[prevalence, prevalence], mode="lines",
                                 name=f"prevalence {prevalence:.3f}", line=dict(color="#999", dash="dot", width=1)))
    fig.update_layout(title=title, xaxis_title="recall (sensitivity)", yaxis_title="precision (PPV)", **_LAYOUT)
    fig.update_xaxes(range=[0, 1])
    fig.update_yaxes(range=[0, 1])
    return fig


def reliability_figure(results: Results, title: str = "Calibration (10 equal-frequency bins)") -> go.Figure:
    fig = go.Figure()
    top = 0.0
    for i, (name, result) in enumerate(results.items()):
        points = result["reliability"]
        overall = result["overall"]
        x = [pt["mean_predicted"] for pt in points]
        y = [pt["observed_rate"] for pt in points]
        top = max([top] + x + [pt["upper"] for pt in points if pt["upper"] is not None])
        fig.add_trace(go.Scatter(
            x=x, y=y, mode="lines+markers", line=dict(color=_color(i)),
            name=f"{name}: ECE {_fmt(overall.get('ece'))}, slope {_fmt(overall.get('calibration_slope'), 2)}",
            error_y=dict(type="data", symmetric=False,
                         array=[(pt["upper"] or 0) - pt["observed_rate"] for pt in points],
                         arrayminus=[pt["observed_rate"] - (pt["lower"] or 0) for pt in points], thickness=1),
            customdata=[[pt["n"], pt["positives"]] for pt in points],
            hovertemplate="predicted %{x:.3f}<br>observed %{y:.3f}<br>n=%{customdata[0]}, "
                          "readmitted=%{customdata[1]}<extra></extra>"))
    limit = min(1.0, top * 1.1 + 0.01)
    fig.add_trace(go.Scatter(x=[0, limit], y=[0, limit], mode="lines", name="perfect calibration",
                             line=dict(color="#999", dash="dot", width=1)))
    fig.update_layout(title=title, xaxis_title="mean predicted risk", yaxis_title="observed readmission rate",
                      **_LAYOUT)
    fig.update_xaxes(range=[0, limit])
    fig.update_yaxes(range=[0, limit])
    return fig


def capacity_figure(results: Results, title: str = "Flagging capacity: PPV and sensitivity",
                    marker: Optional[tuple[float, str]] = None) -> go.Figure:
    """Threshold trade-off by capacity: what flagging the top k% of discharges buys. `marker` draws a
    line at (share of discharges called, label), e.g. the team's current capacity."""
    fig = make_subplots(rows=1, cols=2, subplot_titles=("PPV of flagged patients", "share of readmissions caught"))
    for i, (name, result) in enumerate(results.items()):
        curve = result["curves"]["capacity"]
        x = [100 * pt["fraction"] for pt in curve]
        fig.add_trace(go.Scatter(x=x, y=[pt["ppv"] for pt in curve], mode="lines", name=name,
                                 legendgroup=name, line=dict(color=_color(i))), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=[pt["sensitivity"] for pt in curve], mode="lines", name=name,
                                 legendgroup=name, showlegend=False, line=dict(color=_color(i))), row=1, col=2)
        prevalence = result["overall"].get("prevalence")
    if results:
        fig.add_trace(go.Scatter(x=[1, 50], y=[prevalence, prevalence], mode="lines", name="prevalence",
                                 line=dict(color="#999", dash="dot", width=1)), row=1, col=1)
    if marker is not None:
        fig.add_vline(x=100 * marker[0], line_dash="dot", line_color=NEUTRAL, annotation_text=marker[1])
    fig.update_xaxes(title_text="% of discharges flagged (highest risk first)")
    fig.update_yaxes(range=[0, 1], row=1, col=2)
    fig.update_layout(title=title, **_LAYOUT)
    return fig


def confusion_matrix_figure(counts: Mapping[str, Any], title: str = "Confusion matrix") -> go.Figure:
    """2x2 heatmap from `core.metrics.threshold_metrics` output (tp, fp, tn, fn, threshold)."""
    z = [[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]]
    total = sum(sum(row) for row in z) or 1
    text = [[f"{v}<br>({100 * v / total:.1f}%)" for v in row] for row in z]
    fig = go.Figure(go.Heatmap(z=z, x=["predicted: no", "predicted: readmitted"],
                               y=["actual: no", "actual: readmitted"], text=text, texttemplate="%{text}",
                               colorscale="Blues", showscale=False))
    subtitle = (f"flag at risk >= {counts['threshold']:.3f}: precision {_fmt(counts.get('precision'))}, "
                f"recall {_fmt(counts.get('recall'))}, F1 {_fmt(counts.get('f1'))}")
    fig.update_layout(title=f"{title}<br><sub>{subtitle}</sub>", **_LAYOUT)
    fig.update_yaxes(autorange="reversed")
    return fig


def subgroup_figure(results: Results, group: str, metric: str = "auroc",
                    title: Optional[str] = None) -> go.Figure:
    """Bars of one metric per level of one grouping (race, sex, age band), one bar colour per model.

    AUROC bars carry their patient-cluster bootstrap interval; small groups are marked with '*'.
    """
    fig = go.Figure()
    for i, (name, result) in enumerate(results.items()):
        rows = result["subgroups"].get(group, [])
        x = [f"{row['level']}{' *' if row['small'] else ''}<br>n={row['n']}" for row in rows]
        y = [row.get(metric) for row in rows]
        error = None
        if metric == "auroc":
            upper = [((row.get("auroc_ci") or [None, None])[1] or v or 0) - (v or 0) for row, v in zip(rows, y)]
            lower = [(v or 0) - ((row.get("auroc_ci") or [None, None])[0] or v or 0) for row, v in zip(rows, y)]
            error = dict(type="data", symmetric=False, array=upper, arrayminus=lower, thickness=1)
        fig.add_trace(go.Bar(x=x, y=y, name=name, marker_color=_color(i), error_y=error,
                             customdata=[[row["positives"]] for row in rows],
                             hovertemplate="%{x}<br>" + metric + " %{y:.3f}<br>readmitted=%{customdata[0]}"
                                           "<extra>" + name + "</extra>"))
    if metric == "auroc":
        fig.add_hline(y=0.5, line=dict(color="#999", dash="dot", width=1), annotation_text="chance",
                      annotation_position="bottom right")
    fig.update_layout(barmode="group", title=title or f"{metric} by {group.replace('_', ' ')} (* = small group)",
                      yaxis_title=metric, **_LAYOUT)
    return fig


def all_figures(results: Results, primary: Optional[str] = None,
                threshold: Optional[str] = None) -> dict[str, go.Figure]:
    """Every figure `readmit evaluate` saves, by file stem."""
    figures = {"roc": roc_figure(results), "pr": pr_figure(results), "reliability": reliability_figure(results),
               "capacity": capacity_figure(results)}
    primary = primary or next(iter(results), None)
    if primary is not None:
        thresholds = results[primary].get("thresholds", {})
        chosen = threshold if threshold in thresholds else next(iter(thresholds), None)
        if chosen is not None:
            figures["confusion_matrix"] = confusion_matrix_figure(
                thresholds[chosen], title=f"{primary}: confusion matrix at '{chosen}'")
        for group in results[primary].get("subgroups", {}):
            figures[f"subgroup_{group}_auroc"] = subgroup_figure(results, group, "auroc")
            figures[f"subgroup_{group}_calibration"] = subgroup_figure(
                results, group, "ece", title=f"ECE by {group.replace('_', ' ')} (* = small group)")
    return figures


CONTRIBUTION_TOP = 8       # factors drawn one by one; the rest share one "all other factors" bar
LABEL_WRAP = 40            # characters per label line: fits a 390 px phone screen at 13 px
_LINE_PX, _BAR_PX, _GAP_PX, _ROW_GAP_PX = 17, 22, 3, 14   # one row: label lines, gap, bar, gap


def wrap_label(text: Any, width: int = LABEL_WRAP) -> str:
    """A label broken onto lines of at most `width` characters with <br>: plotly never wraps text itself."""
    return "<br>".join(textwrap.wrap(str(text), width)) or str(text)


def points_text(points: float) -> str:
    """A contribution in percentage points: '+12.1 pts', '-3.0 pts', '0.0 pts' (never '-0.0')."""
    rounded = round(points, 1)
    return "0.0 pts" if rounded == 0 else f"{rounded:+.1f} pts"


def _contribution_rows(contrib: pd.DataFrame, base: float, top: int) -> list[dict[str, Any]]:
    """Waterfall rows in percent, each with the extent of its bar (`low`, `high`): the average patient,
    the `top` biggest factors, all other factors, this patient."""
    ordered = contrib.reindex(contrib["contribution"].abs().sort_values(ascending=False, kind="stable").index)
    shown, rest = ordered.head(top), ordered.iloc[top:]
    steps = [(str(r.text), 100 * float(r.contribution)) for r in shown.itertuples()]
    if len(rest):
        steps.append((f"All other factors ({len(rest)})", 100 * float(rest["contribution"].sum())))
    rows = [{"label": "Average patient", "x": 100 * base, "measure": "absolute", "text": f"{100 * base:.1f}%",
             "low": min(0.0, 100 * base), "high": max(0.0, 100 * base)}]
    level = 100 * base
    for label, points in steps:
        rows.append({"label": label, "x": points, "measure": "relative", "text": points_text(points),
                     "low": min(level, level + points), "high": max(level, level + points)})
        level += points
    risk = 100 * (base + float(contrib["contribution"].sum()))
    rows.append({"label": "This patient", "x": 0.0, "measure": "total", "text": f"{risk:.1f}%",
                 "low": min(0.0, risk), "high": max(0.0, risk)})
    return rows


def contributions_figure(contrib: pd.DataFrame, base_risk: Optional[float], top: int = CONTRIBUTION_TOP) -> go.Figure:
    """Horizontal waterfall in percent: the average patient's risk, the `top` biggest contributions in
    percentage points, all other factors, this patient's risk.

    Each label sits above its bar, wrapped onto lines, so the bars keep the full width on a phone as on a
    desktop (labels beside the bars took 60% of a 390 px screen). The y axis counts pixels, so the height
    grows with the wrapped lines. Every value is written just right of its bar, with a fixed right margin
    for the longest bar, so no value is clipped at any width.
    """
    base = float(base_risk) if base_risk is not None and not pd.isna(base_risk) else 0.0
    rows = _contribution_rows(contrib, base, top)
    centers, annotations, cursor = [], [], 0.0
    for row in rows:
        label = wrap_label(row["label"])
        bar_top = cursor + (label.count("<br>") + 1) * _LINE_PX + _GAP_PX
        centers.append(bar_top + _BAR_PX / 2)
        annotations += [dict(xref="paper", x=0, xanchor="left", y=bar_top - _GAP_PX, yanchor="bottom", text=label,
                             align="left", showarrow=False, font=dict(size=13, color="#222222")),
                        dict(x=row["high"], xanchor="left", xshift=4, y=centers[-1], yanchor="middle", text=row["text"],
                             showarrow=False, font=dict(size=13, color="#222222"))]
        cursor = bar_top + _BAR_PX + _ROW_GAP_PX
    low, high = min(r["low"] for r in rows), max(r["high"] for r in rows)
    fig = go.Figure(go.Waterfall(
        orientation="h", y=centers, x=[r["x"] for r in rows], measure=[r["measure"] for r in rows], width=_BAR_PX,
        increasing={"marker": {"color": RAISES}}, decreasing={"marker": {"color": LOWERS}},
        totals={"marker": {"color": NEUTRAL}}, connector={"visible": False},  # it would cross the labels
        customdata=[[r["label"], r["text"]] for r in rows], hovertemplate="%{customdata[0]}: %{customdata[1]}<extra></extra>"))
    fig.update_layout(
        title=dict(text="What moved this patient's risk", xref="paper", x=0, xanchor="left",
                   subtitle=dict(text="Orange raises it, blue lowers it (percentage points)")),
        template="plotly_white", showlegend=False, annotations=annotations, height=int(cursor) + 110,
        margin=dict(l=10, r=80, t=70, b=40))
    fig.update_yaxes(range=[cursor, 0], visible=False, fixedrange=True)
    fig.update_xaxes(range=[low, high + 0.02 * (high - low or 1.0)], ticksuffix="%", fixedrange=True,
                     title_text="predicted 30-day risk", automargin=True)
    return fig


def risk_histogram_figure(histogram: pd.DataFrame, threshold: Optional[float]) -> go.Figure:
    """Bars of scored discharges by predicted risk (bin_start, bin_end, count) and the call threshold."""
    fig = go.Figure(go.Bar(x=(histogram["bin_start"] + histogram["bin_end"]) / 2 * 100, y=histogram["count"],
                           width=100 / max(1, len(histogram)) * 0.9, marker_color=PALETTE[0], name="discharges"))
    if threshold is not None and threshold == threshold:
        fig.add_vline(x=threshold * 100, line_dash="dash", line_color=RAISES,
                      annotation_text=f"threshold {threshold * 100:.1f}%")
    fig.update_layout(title="Risk distribution of scored discharges", xaxis_title="predicted 30-day risk (%)",
                      yaxis_title="discharges", height=340, margin={"t": 50, "b": 40}, template="plotly_white")
    return fig


def hospital_ratio_figure(benchmark: pd.DataFrame, latest: int, previous: Optional[int]) -> go.Figure:
    """One hospital's excess readmission ratio per measure beside its state's and the nation's medians."""
    now_column = f"ratio FY{latest}"
    fig = go.Figure()
    for column, name, colour, symbol in ((now_column, f"this hospital FY{latest}", PALETTE[0], "circle"),
                                         ("state median", "state median", PALETTE[1], "diamond"),
                                         ("national median", "national median", PALETTE[2], "square")):
        fig.add_scatter(x=benchmark[column], y=benchmark["measure_label"], mode="markers", name=name,
                        marker={"color": colour, "symbol": symbol, "size": 13})
    if previous:
        fig.add_scatter(x=benchmark[f"ratio FY{previous}"], y=benchmark["measure_label"], mode="markers",
                        name=f"this hospital FY{previous}",
                        marker={"color": PALETTE[0], "symbol": "circle-open", "size": 13})
    fig.add_vline(x=1.0, line_dash="dash", line_color=NEUTRAL, annotation_text="1.0 = as expected")
    fig.update_layout(title="Excess readmission ratio by measure", xaxis_title="excess readmission ratio",
                      height=420, template="plotly_white")
    return fig
