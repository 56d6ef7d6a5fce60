"""Model quality: discrimination, calibration, capacity trade-off, subgroups and the model card."""
from __future__ import annotations

import logging
import math

import pandas as pd
import streamlit as st

from serving import figures
from ui import chrome, data
from ui.format import friendly_error, pct, synthetic_banner

log = logging.getLogger("readmit.app")
viewer, status = chrome.page("Model quality")
st.title("Model quality")
synthetic_banner(status)

info = data.model_info(data.settings().model_dir)
calls = data.calls_per_day() if status.usable else 25
quality = None
capacity = None
if status.usable:
    try:
        capacity = data.capacity(calls)
        quality = data.quality(capacity.threshold)
    except Exception:
        log.exception("quality view failed")
        friendly_error("the quality figures")

tabs = st.tabs(["Discrimination", "Capacity and threshold", "Subgroups", "Model card"])
with tabs[0]:
    if quality is not None:
        a, b, c = st.columns(3)
        a.metric("AUROC, transformer", f"{quality.auroc:.3f}")
        b.metric("AUROC, LACE index", f"{quality.lace_auroc:.3f}" if not math.isnan(quality.lace_auroc) else "—")
        c.metric("Past discharges evaluated", f"{quality.n:,}", help=f"{quality.positives:,} were readmitted within 30 days.")
        st.plotly_chart(figures.roc_figure(quality.as_results(), "ROC on past discharges in this warehouse"),
                        width="stretch")
    baselines = info.metrics.get("comparison")  # one flat row per model (models/evaluate.py)
    if baselines:
        st.subheader("Transformer beside LACE and the MLlib baselines (held-out test set)")
        try:
            st.dataframe(pd.DataFrame(baselines).T if isinstance(baselines, dict) else pd.DataFrame(baselines),
                         width="stretch")
        except Exception:
            st.json(baselines)
    if info.figures:
        st.subheader("Evaluation figures from the model folder")
        for name, figure in info.figures.items():
            st.plotly_chart(figure, width="stretch", key=f"fig_{name}")
    elif info.problem:
        st.info(info.problem)
    else:
        st.caption("The model folder has no evaluation yet: `readmit evaluate` writes metrics.json.")

with tabs[1]:
    if quality is not None and capacity is not None:
        st.markdown(f"At **{calls} calls a day** the threshold is **{pct(capacity.threshold)}**. {capacity.basis}")
        transformer_only = {"transformer": quality.as_results()["transformer"]}
        st.plotly_chart(figures.capacity_figure(transformer_only, "Threshold trade-off by capacity",
                                                marker=(capacity.flagged_fraction, f"{calls} calls/day")),
                        width="stretch")
        cm = quality.confusion
        st.subheader("Confusion matrix at this threshold")
        st.table(pd.DataFrame({"readmitted": [cm["tp"], cm["fn"]], "not readmitted": [cm["fp"], cm["tn"]]},
                              index=["flagged (called)", "not flagged"]))
    else:
        st.info("No past discharges with a known outcome in this warehouse, so the trade-off cannot be shown.")

with tabs[2]:
    if quality is not None and not quality.subgroups.empty:
        st.markdown("The same threshold for everyone; a **GAP** note marks groups whose sensitivity differs from "
                    "the overall one by more than 5 points. Small groups are marked *too few to judge*.")
        table = quality.subgroups.copy()
        for column in ("flagged", "ppv", "sensitivity", "sensitivity gap"):
            table[column] = table[column].map(lambda v: None if v is None or pd.isna(v) else round(v * 100, 1))
        table["auroc"] = table["auroc"].round(3)
        st.dataframe(table.style.apply(
            lambda row: ["font-weight: bold; background-color: #FFF1D6" if str(row["note"]).startswith("GAP") else ""
                         for _ in row], axis=1), hide_index=True, width="stretch",
            column_config={"flagged": "flagged %", "ppv": "PPV %", "sensitivity": "sensitivity %",
                           "sensitivity gap": "gap (points)"})
    else:
        st.info("No subgroup table: no past discharges with a known outcome.")

with tabs[3]:
    if info.card:
        st.markdown(info.card)
    else:
        st.info(info.problem or "The model folder has no model card (README.md).")
