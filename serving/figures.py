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
HIGHLIGHT = "#FAECCC"   # PALETTE[1] (orange) at 20% on white: a table row to look at, never the only cue
METRIC_NAMES = {"auroc": "AUROC", "ece": "calibration error (ECE)", "auprc": "AUPRC", "brier": "Brier score",
                "ppv": "PPV", "sensitivity": "sensitivity"}
# Legend under the plot, clear of the x-axis title: on the right it takes half of a phone screen.
_LAYOUT = dict(template="plotly_white", margin=dict(l=60, r=20, t=60, b=50),
               legend=dict(orientation="h", x=0, xanchor="left", y=-0.3, yanchor="top"))


def _color(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _fmt(value: Optional[float], digits: int = 3) -> str:
    return "not available" if value is None or value != value else f"{value:.{digits}f}"


def _auroc_label(name: str, result: Mapping[str, Any]) -> str:
    overall = result["overall"]
    ci = overall.get("auroc_ci") or [None, None]
    interval = f" ({_fmt(ci[0])} to {_fmt(ci[1])})" if ci[0] is not None else ""
    return f"{name}<br>AUROC {_fmt(overall.get('auroc'))}{interval}"   # two lines: fits a phone legend


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


def reliability_figure(results: Results, title: str = "Calibration: predicted and observed risk") -> go.Figure:
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
            hovertemplate="predicted %{x:.1%}<br>observed %{y:.1%}<br>%{customdata[0]} discharges, "
                          "%{customdata[1]} readmitted<extra></extra>"))
    limit = min(1.0, top * 1.1 + 0.01)
    fig.add_trace(go.Scatter(x=[0, limit], y=[0, limit], mode="lines", name="perfect calibration",
                             line=dict(color="#999", dash="dot", width=1)))
    fig.update_layout(title=dict(text=title, subtitle=dict(text="10 equal-frequency bins, 95% intervals")),
                      xaxis_title="mean predicted risk", yaxis_title="observed readmission rate", **_LAYOUT)
    fig.update_xaxes(range=[0, limit], tickformat=".0%")
    fig.update_yaxes(range=[0, limit], tickformat=".0%")
    return fig


def capacity_figure(results: Results, title: str = "Calls and what they catch",
                    point: Optional[Mapping[str, float]] = None, point_label: str = "") -> go.Figure:
    """Threshold trade-off by capacity: what calling the top k% of discharges buys, PPV above sensitivity
    (stacked, so a phone shows both). `point` marks one operating point on both panels (keys fraction,
    ppv, sensitivity: e.g. the call list at the team's capacity), labelled `point_label`; pass the same
    numbers as the confusion matrix beside it."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=("PPV: readmitted among those called", "Sensitivity: readmissions caught"))
    right = max(50.0, 100 * point["fraction"] + 5) if point is not None else 50.0
    prevalence = None
    for i, (name, result) in enumerate(results.items()):
        curve = result["curves"]["capacity"]
        x = [100 * pt["fraction"] for pt in curve]
        fig.add_trace(go.Scatter(x=x, y=[pt["ppv"] for pt in curve], mode="lines", name=name,
                                 legendgroup=name, line=dict(color=_color(i)),
                                 hovertemplate="%{x:.1f}% called: PPV %{y:.1%}<extra></extra>"), row=1, col=1)
        fig.add_trace(go.Scatter(x=x, y=[pt["sensitivity"] for pt in curve], mode="lines", name=name,
                                 legendgroup=name, showlegend=False, line=dict(color=_color(i)),
                                 hovertemplate="%{x:.1f}% called: sensitivity %{y:.1%}<extra></extra>"), row=2, col=1)
        prevalence = result["overall"].get("prevalence")
    if prevalence is not None:
        fig.add_trace(go.Scatter(x=[0, right], y=[prevalence, prevalence], mode="lines",
                                 name=f"readmission rate {100 * prevalence:.1f}% (calling at random)",
                                 line=dict(color="#999", dash="dot", width=1)), row=1, col=1)
    if point is not None:
        x = 100 * point["fraction"]
        for row, key in ((1, "ppv"), (2, "sensitivity")):
            fig.add_trace(go.Scatter(x=[x], y=[point[key]], mode="markers+text", text=[f"{100 * point[key]:.1f}%"],
                                     textposition="top left" if x > 0.7 * right else "top right", cliponaxis=False,
                                     showlegend=row == 1, name=point_label or "operating point", legendgroup="point",
                                     marker=dict(color=NEUTRAL, size=10, symbol="diamond")), row=row, col=1)
            fig.add_vline(x=x, line_dash="dot", line_color=NEUTRAL, row=row, col=1)
    fig.update_xaxes(range=[0, min(100.0, right)], ticksuffix="%")
    fig.update_xaxes(title_text="discharges called, highest risk first", row=2, col=1)
    fig.update_yaxes(range=[0, 1], tickformat=".0%")
    fig.update_layout(title=title, height=620, **_LAYOUT)
    fig.update_layout(legend_y=-0.18)   # below the lower panel's axis title (the plot is taller here)
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
        x = [f"{row['level']}{' *' if row['small'] else ''}<br>n={row['n']:,}" for row in rows]
        y = [row.get(metric) for row in rows]
        error = None
        if metric == "auroc":
            upper = [((row.get("auroc_ci") or [None, None])[1] or v or 0) - (v or 0) for row, v in zip(rows, y)]
            lower = [(v or 0) - ((row.get("auroc_ci") or [None, None])[0] or v or 0) for row, v in zip(rows, y)]
            error = dict(type="data", symmetric=False, array=upper, arrayminus=lower, thickness=1)
        fig.add_trace(go.Bar(x=x, y=y, name=name, marker_color=_color(i), error_y=error,
                             customdata=[[row["positives"]] for row in rows],
                             hovertemplate="%{x}<br>" + METRIC_NAMES.get(metric, metric) + " %{y:.3f}<br>"
                                           "%{customdata[0]} readmitted<extra>" + name + "</extra>"))
    if metric == "auroc":
        fig.add_hline(y=0.5, line=dict(color="#999", dash="dot", width=1), annotation_text="chance",
                      annotation_position="bottom right")
    label = METRIC_NAMES.get(metric, metric)
    fig.update_layout(barmode="group", title=title or f"{label[0].upper()}{label[1:]} by {group.replace('_', ' ')}",
                      yaxis_title=label, **_LAYOUT)
    fig.update_layout(title_subtitle_text="* = too few encounters to judge", height=380)
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
            figures[f"subgroup_{group}_calibration"] = subgroup_figure(results, group, "ece")
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


def histogram_x_range(histogram: pd.DataFrame, threshold: Optional[float] = None) -> list[float]:
    """The x range (percent) of `risk_histogram_figure`: the bins that hold discharges (and the threshold),
    half a bin plus 5% of that span either side, within 0-100. All bins when none holds any."""
    filled = histogram[histogram["count"] > 0]
    filled = filled if len(filled) else histogram
    if filled.empty:
        return [0.0, 100.0]
    low, high = 100 * float(filled["bin_start"].min()), 100 * float(filled["bin_end"].max())
    if threshold is not None and threshold == threshold:
        low, high = min(low, 100 * threshold), max(high, 100 * threshold)
    width = 100 * float((filled["bin_end"] - filled["bin_start"]).median())
    pad = 0.5 * width + 0.05 * (high - low)
    return [max(0.0, low - pad), min(100.0, high + pad)]


def risk_histogram_figure(histogram: pd.DataFrame, threshold: Optional[float]) -> go.Figure:
    """Bars of scored discharges by predicted risk (bin_start, bin_end, count) and the call threshold.
    The x axis spans the risks that occur (`histogram_x_range`), not 0-100%: risks under 35% would leave
    two thirds of the chart empty. Each bar is as wide as its own bin."""
    start, end = 100 * histogram["bin_start"], 100 * histogram["bin_end"]
    fig = go.Figure(go.Bar(x=(start + end) / 2, y=histogram["count"], width=(end - start) * 0.9,
                           marker_color=PALETTE[0], name="discharges",
                           customdata=list(zip(start, end)),
                           hovertemplate="risk %{customdata[0]:.0f}-%{customdata[1]:.0f}%: "
                                         "%{y:,} discharges<extra></extra>"))
    if threshold is not None and threshold == threshold:
        fig.add_vline(x=threshold * 100, line_dash="dash", line_color=RAISES,
                      annotation_text=f"threshold {threshold * 100:.1f}%")
    fig.update_layout(title="Risk distribution of scored discharges", xaxis_title="predicted 30-day risk",
                      yaxis_title="discharges", height=340, margin={"t": 50, "b": 40}, template="plotly_white")
    fig.update_xaxes(range=histogram_x_range(histogram, threshold), ticksuffix="%")
    fig.update_yaxes(tickformat=",d", separatethousands=True)
    return fig


RATIO_LABEL_WRAP = 18   # characters per measure label line: a 390 px screen keeps most of its width for points


def hospital_ratio_figure(benchmark: pd.DataFrame, latest: int, previous: Optional[int]) -> go.Figure:
    """One hospital's excess readmission ratio per measure beside its state's and the nation's medians.

    Measures are named by their short name (`measure_short` where given), wrapped to `RATIO_LABEL_WRAP`
    characters, with the full name in the hover, so a phone keeps the width for the points; the legend sits
    below the plot and "1.0 = as expected" in the axis title, clear of the points."""
    full = benchmark["measure_label"].astype(str).tolist()
    short = benchmark["measure_short"] if "measure_short" in benchmark else benchmark["measure_label"]
    labels = [wrap_label(label, RATIO_LABEL_WRAP) for label in short.astype(str)]
    series = [(f"ratio FY{latest}", f"this hospital FY{latest}", PALETTE[0], "circle"),
              ("state median", "state median", PALETTE[1], "diamond"),
              ("national median", "national median", PALETTE[2], "square")]
    if previous:
        series.append((f"ratio FY{previous}", f"this hospital FY{previous}", PALETTE[0], "circle-open"))
    fig = go.Figure()
    for column, name, colour, symbol in series:
        fig.add_scatter(x=benchmark[column], y=labels, mode="markers", name=name, customdata=full,
                        marker={"color": colour, "symbol": symbol, "size": 13},
                        hovertemplate="%{customdata}<br>" + name + ": %{x:.3f}<extra></extra>")
    fig.add_vline(x=1.0, line_dash="dash", line_color=NEUTRAL)
    fig.update_layout(title="Excess readmission ratio by measure",
                      xaxis_title="excess readmission ratio (1.0 = as expected)",
                      height=460, **_LAYOUT)
    fig.update_layout(margin=dict(l=10, r=20, t=60, b=50), legend_y=-0.22)
    fig.update_yaxes(autorange="reversed", automargin=True, categoryorder="array", categoryarray=labels)
    return fig


# --- monitoring (serving.monitoring report dicts) ------------------------------------------------------

_ACT_COLOUR, _WATCH_COLOUR = "#D55E00", "#E69F00"


def _period_starts(report: Mapping[str, Any], periods: list[str]) -> list[pd.Timestamp]:
    starts = {p["period"]: pd.Timestamp(p["start"]) for p in report["periods"]}
    return [starts[p] for p in periods]


def _performance_rows(report: Mapping[str, Any], kind: str) -> pd.DataFrame:
    rows = pd.DataFrame([r for r in report["performance"] if r["kind"] == kind])
    if rows.empty:
        return rows
    rows["start"] = _period_starts(report, rows["period"].tolist())
    return rows.sort_values("start")


def _no_data(fig: go.Figure, text: str) -> go.Figure:
    fig.add_annotation(text=text, showarrow=False, xref="paper", yref="paper", x=0.5, y=0.5,
                       font=dict(size=14, color=NEUTRAL))
    return fig


def monitoring_performance_figure(report: Mapping[str, Any]) -> go.Figure:
    """AUROC and the call list's PPV by period: realised (solid, 95% interval shaded) once outcomes have
    matured, estimated from the risks alone (dashed) for every period; the reference dotted."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=("AUROC", "PPV of the call list"))
    realised, estimated = _performance_rows(report, "realised"), _performance_rows(report, "estimated")
    if not realised.empty:
        band = pd.concat([realised["start"], realised["start"][::-1]])
        fig.add_trace(go.Scatter(x=band, y=pd.concat([realised["auroc_high"], realised["auroc_low"][::-1]]),
                                 fill="toself", fillcolor="rgba(0,114,178,0.15)", line=dict(width=0), hoverinfo="skip",
                                 name="95% interval", showlegend=True), row=1, col=1)
        fig.add_trace(go.Scatter(x=realised["start"], y=realised["auroc"], mode="lines+markers", name="realised",
                                 line=dict(color=PALETTE[0], width=2)), row=1, col=1)
        fig.add_trace(go.Scatter(x=realised["start"], y=realised["ppv"], mode="lines+markers", name="realised PPV",
                                 line=dict(color=PALETTE[0], width=2), showlegend=False), row=2, col=1)
    if not estimated.empty:
        fig.add_trace(go.Scatter(x=estimated["start"], y=estimated["auroc"], mode="lines+markers", name="estimated",
                                 line=dict(color=PALETTE[1], width=2, dash="dash")), row=1, col=1)
        fig.add_trace(go.Scatter(x=estimated["start"], y=estimated["ppv"], mode="lines+markers", name="estimated PPV",
                                 line=dict(color=PALETTE[1], width=2, dash="dash"), showlegend=False), row=2, col=1)
    base = (report["reference"].get("performance") or {}).get("auroc")
    if base is not None:
        fig.add_hline(y=base, line_dash="dot", line_color=NEUTRAL, row=1, col=1,
                      annotation_text=f"reference {base:.2f}", annotation_position="top left")
    if realised.empty and estimated.empty:
        _no_data(fig, "No scored discharges in the prediction log yet")
    fig.update_yaxes(title_text="AUROC", row=1, col=1)
    fig.update_yaxes(title_text="PPV", tickformat=".0%", row=2, col=1)
    fig.update_layout(title="Performance over time", height=540, template="plotly_white",
                      margin=dict(l=60, r=20, t=60, b=40), legend=dict(orientation="h", y=-0.08, x=0,
                                                                       yanchor="top"))
    return fig


def monitoring_calibration_figure(report: Mapping[str, Any]) -> go.Figure:
    """Observed against predicted readmission rate by period: observed (with its Wilson 95% interval) once
    outcomes have matured; the predicted rate (mean risk) for every period."""
    fig = go.Figure()
    realised, estimated = _performance_rows(report, "realised"), _performance_rows(report, "estimated")
    if not estimated.empty:
        fig.add_trace(go.Scatter(x=estimated["start"], y=estimated["predicted_rate"], mode="lines+markers",
                                 name="predicted (mean risk)", line=dict(color=PALETTE[1], width=2, dash="dash")))
    if not realised.empty:
        fig.add_trace(go.Scatter(
            x=realised["start"], y=realised["observed_rate"], mode="lines+markers", name="observed",
            line=dict(color=PALETTE[0], width=2),
            error_y=dict(type="data", symmetric=False, array=realised["observed_high"] - realised["observed_rate"],
                         arrayminus=realised["observed_rate"] - realised["observed_low"], color=PALETTE[0])))
    if realised.empty:
        _no_data(fig, "No matured outcomes yet: observed rates appear 30 days after a period ends")
    fig.update_layout(title="Observed and predicted readmissions",
                      yaxis=dict(title="readmission rate", tickformat=".1%", rangemode="tozero"), height=380,
                      template="plotly_white", margin=dict(l=60, r=20, t=60, b=40),
                      legend=dict(orientation="h", y=1.08, x=0))
    return fig


def monitoring_drift_figure(report: Mapping[str, Any], top: Optional[int] = None) -> go.Figure:
    """Heat map of each input's PSI against the reference, period by period (inputs with the largest PSI
    first); watch and act cells are marked W and A, periods not judged (partial or small) left blank."""
    cells = pd.DataFrame(report["drift"]["cells"])
    fig = go.Figure()
    if cells.empty:
        return _no_data(fig, "No drift computed yet: nothing scored in the prediction log")
    cells["psi"] = cells["psi"].where(cells["judged"])   # part-periods and small ones are left blank
    order = cells.groupby("feature")["psi"].max().fillna(0).sort_values(ascending=False).index.tolist()
    order = order[:top] if top else order
    periods = [p["period"] for p in report["periods"]]
    grid = cells.pivot(index="feature", columns="period", values="psi").reindex(index=order, columns=periods)
    severity = cells.pivot(index="feature", columns="period", values="severity").reindex(index=order, columns=periods)
    labels = {row["feature"]: row["label"] for row in report["drift"]["cells"]}
    marks = severity.apply(lambda column: column.map({"act": "A", "watch": "W"})).fillna("")
    fig.add_trace(go.Heatmap(
        z=grid.clip(upper=0.5).to_numpy(), x=_period_starts(report, periods), y=[labels[f] for f in order],
        text=marks.to_numpy(), texttemplate="%{text}", customdata=grid.to_numpy(), zmin=0, zmax=0.5,
        colorscale=[[0, "#FFFFFF"], [0.2, "#FBE3C8"], [0.5, _WATCH_COLOUR], [1, _ACT_COLOUR]],
        colorbar=dict(title="PSI", tickvals=[0, 0.1, 0.25, 0.5], ticktext=["0", "0.1", "0.25", "≥0.5"]),
        hovertemplate="%{y}<br>%{x|%b %Y}: PSI %{customdata:.3f}<extra></extra>"))
    fig.update_layout(title="Drift by input (PSI; W watch, A act)",
                      height=max(320, 18 * len(order) + 140), template="plotly_white",
                      margin=dict(l=10, r=10, t=60, b=40), yaxis=dict(autorange="reversed", automargin=True))
    return fig


def monitoring_fairness_figure(report: Mapping[str, Any], metric: str = "sensitivity") -> go.Figure:
    """Each group's `metric` as a ratio to the largest group's, with its patient-bootstrap 95% interval;
    the shaded band is 0.8-1.25 (suppressed cells are left out)."""
    rows = pd.DataFrame(report["fairness"]["rows"])
    fig = go.Figure()
    if rows.empty:
        return _no_data(fig, "No fairness figures yet: they need matured outcomes")
    rows = rows[(rows["metric"] == metric) & ~rows["suppressed"]].copy()
    rows = rows[rows["group"] != rows["reference"]]
    if rows.empty:
        return _no_data(fig, "Every group but the largest is too small to show (under 10)")
    rows["name"] = rows["attribute"] + ": " + rows["group"]
    colours = [(_ACT_COLOUR if flagged else PALETTE[0]) for flagged in rows["flagged"]]
    fig.add_vrect(x0=0.8, x1=1.25, fillcolor="rgba(0,158,115,0.10)", line_width=0)
    fig.add_vline(x=1.0, line_dash="dash", line_color=NEUTRAL)
    fig.add_trace(go.Scatter(
        x=rows["ratio"], y=rows["name"], mode="markers", marker=dict(size=10, color=colours),
        error_x=dict(type="data", symmetric=False, array=rows["ratio_high"] - rows["ratio"],
                     arrayminus=rows["ratio"] - rows["ratio_low"], color=NEUTRAL),
        customdata=rows[["reference", "cell"]].to_numpy(),
        hovertemplate="%{y}: %{x:.2f} x %{customdata[0]} (n=%{customdata[1]})<extra></extra>"))
    fig.update_layout(title=f"{metric.replace('_', ' ').capitalize()}: ratio to the largest group",
                      xaxis_title="ratio (1 = same as the largest group)", height=max(300, 22 * len(rows) + 120),
                      template="plotly_white", margin=dict(l=10, r=20, t=60, b=40),
                      yaxis=dict(autorange="reversed", automargin=True), showlegend=False)
    return fig


def monitoring_volume_figure(report: Mapping[str, Any]) -> go.Figure:
    """Scored discharges by period, split by what is known of their outcome (label delay made visible)."""
    periods = pd.DataFrame(report["periods"])
    fig = go.Figure()
    if periods.empty:
        return _no_data(fig, "Nothing logged yet")
    x = pd.to_datetime(periods["start"])
    for column, name, colour in (("with_outcome", "outcome known", PALETTE[0]),
                                 ("unknown", "matured, outcome missing", _ACT_COLOUR),
                                 ("unmatured", "not yet 30 days after discharge", "#BBBBBB")):
        fig.add_trace(go.Bar(x=x, y=periods[column], name=name, marker_color=colour))
    fig.update_layout(barmode="stack", title="Scored discharges and outcomes", height=340,
                      template="plotly_white", yaxis_title="discharges", margin=dict(l=60, r=20, t=60, b=40),
                      legend=dict(orientation="h", y=1.1, x=0))
    return fig


def monitoring_service_figure(report: Mapping[str, Any]) -> go.Figure:
    """Predictions served through the API by period, and the latency percentiles of a metrics scrape."""
    service = report["service"]
    per_period = pd.DataFrame(service["per_period"])
    metrics = service.get("metrics") or {}
    fig = make_subplots(rows=1, cols=2, column_widths=[0.7, 0.3],
                        subplot_titles=("API predictions by period", "API latency (s)"))
    if not per_period.empty and per_period["api_predictions"].sum():
        fig.add_trace(go.Bar(x=_period_starts(report, per_period["period"].tolist()), y=per_period["api_predictions"],
                             marker_color=PALETTE[0], name="API predictions"), row=1, col=1)
    if metrics.get("requests"):
        fig.add_trace(go.Bar(x=["p50", "p95", "p99"], y=[metrics.get(f"p{q}_seconds") for q in (50, 95, 99)],
                             marker_color=PALETTE[4], name="latency"), row=1, col=2)
    if not fig.data:
        _no_data(fig, "No API traffic")
    fig.update_layout(title="Service", height=300, template="plotly_white", showlegend=False,
                      margin=dict(l=60, r=20, t=70, b=40))
    return fig
