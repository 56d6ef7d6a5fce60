"""Model quality: how well the shipped model ranks and calibrates, what the team's call list catches, for
which groups, and the model card. Every number names the encounters it was measured on."""
from __future__ import annotations

import logging
import math

import streamlit as st

from serving import figures
from serving import quality as q
from ui import chrome, data
from ui.format import friendly_error, synthetic_banner

log = logging.getLogger("readmit.app")
TABLE_ROW_PX = 35   # Streamlit's dataframe row height
NO_LABELS = "No past discharges with a known outcome in this warehouse yet, so this cannot be measured here."
viewer, status = chrome.page("Model quality")
st.title("Model quality")
synthetic_banner(status)
st.caption("Two kinds of evidence, always named: the **held-out test set** the shipped model was evaluated on when "
           "it was built (`metrics.json` in the model folder), and the **labelled encounters in this warehouse** "
           "(past discharges whose 30-day outcome is known).")

info = data.model_info(data.settings().model_dir)
calls = data.calls_per_day() if status.usable else None
quality = capacity = None
if status.usable:
    try:
        capacity = data.capacity(calls)
        quality = data.quality(capacity.threshold)
    except Exception:
        log.exception("quality view failed")
        friendly_error("the quality figures")
threshold = capacity.threshold if capacity is not None and not math.isnan(capacity.threshold) else None


def cut_off_words() -> str:
    return f"risk of {q.percent(threshold)} or more ({calls} calls a day)"


def highlight_gap(row) -> list[str]:
    """Bold on a light orange tint for a GAP row: the word GAP in the Note column carries the meaning."""
    marked = str(row["Note"]).startswith("GAP")
    return [f"font-weight: bold; background-color: {figures.HIGHLIGHT}" if marked else "" for _ in row]


if info.stale:   # every held-out number on every tab comes from that metrics.json
    st.warning(info.stale)
tabs = st.tabs(["Discrimination", "Calibration", "Capacity and threshold", "Subgroups", "Model card"])
with tabs[0]:
    st.subheader("Held-out test set (model folder)")
    headline = info.headline
    if headline is not None:
        st.metric("AUROC, held-out test set", q.number(headline.auroc),
                  help="The chance that a readmitted patient is ranked above one who was not (0.5 = chance).")
        st.caption(f"{headline.text}, the patients set aside when the model was built.")
    comparison = info.comparison
    if not comparison.empty:
        st.markdown("**The shipped model beside LACE and the Spark MLlib baselines, on the same encounters**")
        st.dataframe(comparison, hide_index=True, width="stretch")
        if comparison.isin([q.NOT_AVAILABLE]).any().any():
            st.caption(f"{q.NOT_AVAILABLE}: metrics.json has no value for this model.")
    if "roc" in info.figures:
        st.plotly_chart(info.figures["roc"], width="stretch", key="fig_roc")
        st.caption(f"On {headline.data_text}." if headline else "From metrics.json.")
    if headline is None and comparison.empty:
        st.info(info.problem or "The model folder has no evaluation yet: `readmit evaluate` writes metrics.json.")

    st.subheader("This warehouse")
    if quality is not None:
        a, b, c = st.columns(3)
        a.metric("AUROC, transformer", q.number(quality.auroc), help=f"On {quality.data_text}.")
        b.metric("AUROC, LACE index", q.number(quality.lace_auroc), help=f"On {quality.data_text}.")
        c.metric("Labelled encounters", f"{quality.n:,}", help=f"{quality.positives:,} were readmitted within 30 days.")
        ci = q.interval(quality.auroc_ci)
        st.caption(f"AUROC {q.number(quality.auroc)}" + (f" (95% interval {ci})" if ci else "")
                   + f" on {quality.data_text}, {quality.positives:,} of them readmitted within 30 days; LACE index "
                   f"AUROC {q.number(quality.lace_auroc)} on the same encounters.")
        st.plotly_chart(figures.roc_figure(quality.as_results()), width="stretch", key="fig_roc_warehouse")
        st.caption(f"On {quality.data_text}.")
    else:
        st.info(NO_LABELS)

with tabs[1]:
    st.subheader("Held-out test set (model folder)")
    overall = ((info.metrics.get("models") or {}).get("transformer") or {}).get("overall") or {}
    if "reliability" in info.figures and headline is not None:
        st.plotly_chart(info.figures["reliability"], width="stretch", key="fig_reliability")
        st.caption(f"Calibration error (ECE) {q.number(overall.get('ece'))}: on average, predicted and observed "
                   f"rates differ by {q.number(100 * overall['ece'], 1) if 'ece' in overall else q.NOT_AVAILABLE} "
                   f"percentage points; calibration slope {q.number(overall.get('calibration_slope'), 2)} (1 is "
                   f"ideal). On {headline.data_text}.")
    else:
        st.info(info.problem or "The model folder has no evaluation yet: `readmit evaluate` writes metrics.json.")
    st.subheader("This warehouse")
    if quality is not None:
        a, b, c = st.columns(3)
        a.metric("Mean predicted risk", q.percent(quality.mean_predicted))
        b.metric("Observed readmission rate", q.percent(quality.prevalence))
        c.metric("Calibration error (ECE)", q.number(quality.ece),
                 help="Average gap between predicted and observed rates over 10 equal-size groups by risk.")
        st.caption(f"On {quality.data_text}.")
    else:
        st.info(NO_LABELS)

with tabs[2]:
    if quality is not None and threshold is not None:
        cm = quality.confusion
        called = cm["tp"] + cm["fp"]
        st.markdown(f"**At {calls} calls a day** the Worklist calls the highest-risk open patients each day. Over "
                    f"past days that reaches the same share of discharges as calling everyone with a "
                    f"**{cut_off_words()}**. Applied to {quality.data_text}, that cut-off calls:")
        a, b, c = st.columns(3)
        a.metric("Called", q.percent(cm["flagged_fraction"]), help=f"{called:,} of {quality.n:,} encounters.")
        b.metric("PPV", q.percent(cm["precision"]), help="Readmitted within 30 days, among those called.")
        c.metric("Sensitivity", q.percent(cm["recall"]), help="Readmissions that were called.")
        point_label = f"{calls} calls a day (risk ≥ {q.percent(threshold)})"
        shipped = q.plain_model_name("transformer")
        st.plotly_chart(figures.capacity_figure({shipped: quality.as_results()[shipped]}, point=quality.point,
                                                point_label=point_label), width="stretch", key="fig_capacity")
        st.caption(f"On {quality.data_text}: the share called if everyone above a cut-off were called, from the "
                   "highest risk down; the marked point is this cut-off.")
        st.subheader("Confusion matrix at this cut-off")
        st.table(q.confusion_table(cm))
        st.caption(f"PPV {q.percent(cm['precision'])} = {cm['tp']:,} readmitted of {called:,} called; sensitivity "
                   f"{q.percent(cm['recall'])} = {cm['tp']:,} called of {cm['tp'] + cm['fn']:,} readmitted. The "
                   "marked point on the chart shows the same numbers.")
        st.caption(f"How the cut-off is found: {capacity.basis} The Worklist's own PPV "
                   f"({q.percent(capacity.ppv)}) and sensitivity ({q.percent(capacity.sensitivity)}) replay the "
                   "daily call list itself; the single cut-off here also allows the breakdown by group.")
    elif quality is not None:
        st.info("No past days to replay the call list on yet, so there is no cut-off to show.")
    else:
        st.info(NO_LABELS)

with tabs[3]:
    if quality is not None and not quality.subgroups.empty:
        if threshold is not None:
            st.markdown(f"The same cut-off for everyone: a **{cut_off_words()}**. **GAP** marks a group whose "
                        f"sensitivity differs from the overall {q.percent(quality.confusion['recall'])} by more "
                        "than 5 points; groups with fewer than 100 encounters or 10 readmissions are marked *too "
                        f"few to judge*. On {quality.data_text}.")
        table = q.subgroup_table(quality.subgroups)
        if threshold is None:
            table = table.drop(columns=["Called", "PPV", "Sensitivity", "Sensitivity gap (points)"])
        st.dataframe(table.style.apply(highlight_gap, axis=1), hide_index=True, width="stretch",
                     height=TABLE_ROW_PX * (len(table) + 1) + 3,   # every row, no inner scroll bar
                     column_config={"Note": st.column_config.TextColumn("Note", width="medium")})
        if table.isin([q.NOT_AVAILABLE]).any().any():
            st.caption(f"{q.NOT_AVAILABLE}: the group has no readmission (AUROC, sensitivity) or nobody in it was "
                       "called (PPV).")
    else:
        st.info(NO_LABELS)
    subgroup_figures = {name: fig for name, fig in info.figures.items() if name.startswith("subgroup_")}
    if subgroup_figures:
        st.subheader("Held-out test set (model folder)")
        for name, figure in subgroup_figures.items():
            st.plotly_chart(figure, width="stretch", key=f"fig_{name}")
        st.caption(f"On {headline.data_text}; bars show 95% intervals." if headline else "From metrics.json.")

with tabs[4]:
    if info.card:
        st.markdown(info.card_body)
    else:
        st.info(info.problem or "The model folder has no model card (README.md).")
