"""Home: the cohort at a glance. (Every page, this one included, starts with `ui.chrome.page`.)"""
from __future__ import annotations

import logging

import pandas as pd
import streamlit as st

from serving import figures
from ui import chrome, data
from ui.format import TIER_ICONS, friendly_error, synthetic_banner

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
    except Exception:
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
        st.plotly_chart(figures.risk_histogram_figure(summary.risk_histogram, capacity.threshold), width="stretch")
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
