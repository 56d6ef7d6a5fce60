"""Home: the cohort at a glance. (Every page, this one included, starts with `ui.chrome.page`.)"""
from __future__ import annotations

import logging

import pandas as pd
import streamlit as st

from core import vocabulary
from serving import figures
from serving.worklist import count_words
from ui import chrome, data
from ui.format import band, friendly_error, synthetic_banner

log = logging.getLogger("readmit.app")


def home(status) -> None:
    st.title("30-day readmission risk")
    synthetic_banner(status)
    if not status.usable:
        st.warning(status.problem)
        return
    try:
        summary = data.summary()
        calls = data.calls_per_day()
        day = data.day_list(data.as_of(), data.follow_up_days(), calls)
    except Exception:
        log.exception("home summary failed")
        friendly_error("the cohort summary")
        return
    cols = st.columns(4)
    cols[0].metric("Discharges", f"{summary.encounters:,}")
    cols[1].metric("Eligible patients", f"{summary.patients:,}", help="Distinct patients; encounters after death "
                   "or discharge to hospice are not eligible and are not scored.")
    cols[2].metric("Eligible discharges scored", f"{summary.scored:,}")
    cols[3].metric(f"Call list for {day.as_of:%Y-%m-%d}", count_words(len(day.call_list), "patient"),
                   help=f"The highest-risk {count_words(calls, 'patient')} of {count_words(len(day.open), 'open patient')} "
                        f"(discharged in the last {count_words(day.window_days, 'day')}, not yet handled), at "
                        f"{count_words(calls, 'call')} a day.")
    left, right = st.columns([3, 2])
    with left:
        st.plotly_chart(figures.risk_histogram_figure(summary.risk_histogram, None), width="stretch")
    with right:
        st.subheader("Risk bands")
        st.dataframe(pd.DataFrame({"risk band": [band(t) for t in summary.tier_counts],
                                   "discharges": list(summary.tier_counts.values())}),
                     hide_index=True, width="stretch",
                     column_config={"discharges": st.column_config.NumberColumn(format="localized")})
        st.subheader("Data freshness")
        fresh = {
            "Latest discharge": summary.last_discharge.strftime("%Y-%m-%d") if summary.last_discharge else "no dates",
            "Scored at": summary.scored_at.strftime("%Y-%m-%d %H:%M UTC") if summary.scored_at else "unknown",
            "Model version": ", ".join(summary.model_versions) or "unknown",
            "Data source": ", ".join(vocabulary.label("source", s) for s in status.sources) or "unknown",
        }
        st.table(pd.DataFrame({"": list(fresh), "value": list(fresh.values())}).set_index(""), hide_header=True)
    st.page_link("pages/1_Worklist.py", label="Open the worklist", icon=":material/arrow_forward:")


_viewer, _status = chrome.page("Home")
home(_status)
data.warm_up()   # after the page is drawn: the model and code titles load while the user reads it
