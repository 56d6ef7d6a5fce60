"""Home: the cohort at a glance. (Every page, this one included, starts with `ui.chrome.page`.)"""
from __future__ import annotations

import logging

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from ui import chrome, data
from ui.format import PALETTE, TIER_ICONS, friendly_error, synthetic_banner

log = logging.getLogger("readmit.app")


def home(status) -> None:
    st.title("30-day readmission risk")
    synthetic_banner(status)
    if not status.usable:
        st.warning(status.problem)
        return
    try:
        summary = data.summary()
        capacity = data.capacity(data.calls_per_day())
    except Exception:  # noqa: BLE001
        log.exception("home summary failed")
        friendly_error("the cohort summary")
        return
    cols = st.columns(4)
    cols[0].metric("Discharges", f"{summary.encounters:,}")
    cols[1].metric("Eligible patients", f"{summary.patients:,}", help="Distinct patients; encounters after death "
                   "or discharge to hospice are not eligible and are not scored.")
    cols[2].metric("Eligible discharges scored", f"{summary.scored:,}")
    cols[3].metric(f"Flagged at {capacity.calls_per_day} calls/day",
                   f"{capacity.flagged_fraction:.1%}", help=f"Risk threshold {capacity.threshold:.3f}. "
                   + capacity.basis)
    left, right = st.columns([3, 2])
    with left:
        hist = summary.risk_histogram
        fig = go.Figure(go.Bar(x=(hist["bin_start"] + hist["bin_end"]) / 2 * 100, y=hist["count"],
                               width=100 / len(hist) * 0.9, marker_color=PALETTE[0], name="discharges"))
        fig.add_vline(x=capacity.threshold * 100, line_dash="dash", line_color=PALETTE[3],
                      annotation_text=f"threshold {capacity.threshold * 100:.1f}%")
        fig.update_layout(title="Risk distribution of scored discharges", xaxis_title="predicted 30-day risk (%)",
                          yaxis_title="discharges", height=340, margin={"t": 50, "b": 40})
        st.plotly_chart(fig, width="stretch")
    with right:
        st.subheader("Risk tiers")
        st.dataframe(pd.DataFrame({"tier": [f"{TIER_ICONS[t]} {t}" for t in summary.tier_counts],
                                   "discharges": list(summary.tier_counts.values())}),
                     hide_index=True, width="stretch")
        st.subheader("Data freshness")
        fresh = {
            "Latest discharge": summary.last_discharge.strftime("%Y-%m-%d") if summary.last_discharge else "no dates",
            "Scored at": summary.scored_at.strftime("%Y-%m-%d %H:%M") if summary.scored_at else "unknown",
            "Model version": ", ".join(summary.model_versions) or "unknown",
            "Data source": ", ".join(status.sources) or "unknown",
        }
        st.table(pd.DataFrame({"": list(fresh), "value": list(fresh.values())}).set_index(""))
    st.page_link("pages/1_Worklist.py", label="Open the worklist", icon=":material/arrow_forward:")


_viewer, _status = chrome.page("Home")
home(_status)
