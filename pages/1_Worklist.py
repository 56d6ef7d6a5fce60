"""Worklist: patients ranked by risk, filtered and paged in DuckDB; select a row to open the patient."""
from __future__ import annotations

import logging

import streamlit as st

from serving.worklist import RISK_TIERS, WorklistFilters
from ui import chrome, data
from ui.format import TIER_ICONS, friendly_error, pct, synthetic_banner

log = logging.getLogger("readmit.app")
viewer, status = chrome.page("Worklist")
st.title("Worklist")
synthetic_banner(status)
if not status.usable:
    st.warning(status.problem)
    st.stop()

options = data.options()
with st.sidebar:
    st.header("Filters")
    tiers = st.multiselect("Risk tier", RISK_TIERS, format_func=lambda t: f"{TIER_ICONS[t]} {t}", key="f_tiers")
    date_from = date_to = None
    if options["date_range"]:
        lo, hi = options["date_range"]
        picked = st.date_input("Discharged between", value=(lo, hi), min_value=lo, max_value=hi, key="f_dates")
        if isinstance(picked, (tuple, list)) and len(picked) == 2:
            date_from, date_to = picked
    age_bands = st.multiselect("Age band", options["age_bands"], key="f_age")
    sexes = st.multiselect("Sex", options["sexes"], key="f_sex")
    races = st.multiselect("Race", options["races"], key="f_race")
    groups = st.multiselect("Principal diagnosis group", options["diagnosis_groups"], key="f_group")
    dispositions = st.multiselect("Discharge disposition", options["dispositions"], key="f_disp")
    payers = st.multiselect("Payer", options["payers"], key="f_payer")
    latest = st.checkbox("Latest stay per patient only", value=True, key="f_latest")

search = st.text_input("Search by patient or encounter id", key="f_search", placeholder="e.g. P000123 or E0004567")
cap_col, ppv_col, sens_col, thr_col = st.columns([2, 1, 1, 1])
calls = cap_col.number_input("We can call this many patients a day", min_value=1, max_value=10_000,
                             value=data.calls_per_day(), step=5,
                             key="capacity_widget")
st.session_state["capacity_calls"] = int(calls)
try:
    capacity = data.capacity(int(calls))
except Exception:
    log.exception("capacity failed")
    friendly_error("the capacity estimate")
    st.stop()
thr_col.metric("Risk threshold", pct(capacity.threshold))
ppv_col.metric("PPV", pct(capacity.ppv), help="Of the patients flagged, the share who were readmitted "
               "within 30 days (past discharges).")
sens_col.metric("Sensitivity", pct(capacity.sensitivity), help="Of all readmitted patients, the share "
                "the flagged list would have reached (past discharges).")
st.caption(capacity.basis)

filters = WorklistFilters(tuple(tiers), date_from, date_to, tuple(age_bands), tuple(sexes), tuple(races),
                          tuple(groups), tuple(dispositions), tuple(payers), search.strip(), latest)
if st.session_state.get("_wl_filters") != filters:
    st.session_state["_wl_filters"] = filters
    st.session_state["wl_page"] = 1
page_size = 50
try:
    result = data.worklist(filters, int(st.session_state.get("wl_page", 1)), page_size, capacity.threshold)
except Exception:
    log.exception("worklist query failed")
    friendly_error("the worklist")
    st.stop()

if result.total == 0:
    st.info("No patients match these filters." + (" No patient or encounter id starts with "
                                                  f"'{search.strip()}'." if search.strip() else ""))
    st.stop()

st.markdown(f"**{result.total:,} patients** ranked by predicted 30-day readmission risk. "
            f"Page {result.page} of {result.pages}. *Flagged* = at or above the threshold for {calls} calls a day.")
table = result.rows.copy()
table["risk_tier"] = [f"{TIER_ICONS.get(t, '')} {t}" for t in table["risk_tier"]]
selection = st.dataframe(
    table, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row", key="wl_table",
    column_config={
        "rank": st.column_config.NumberColumn("#", width="small"),
        "patient_id": "Patient", "encounter_id": "Encounter",
        "risk_pct": st.column_config.ProgressColumn("Risk", format="%.1f%%", min_value=0, max_value=100),
        "risk_tier": "Tier", "flagged": "Flagged", "reasons": st.column_config.TextColumn("Top reasons", width="large"),
        "discharge_date": "Discharged", "age_band": "Age", "sex": "Sex", "race": "Race",
        "principal_group": "Diagnosis group", "discharge_disposition": "Discharged to", "payer": "Payer",
        "length_of_stay_days": "LOS (days)",
    })

rows = selection.selection.rows if selection and selection.selection else []
if rows:
    chosen = result.rows.iloc[rows[0]]
    st.switch_page("pages/2_Patient.py", query_params={"encounter": chosen["encounter_id"]})

nav = st.columns([1, 1, 3, 2])
if nav[0].button("◀ Previous", disabled=result.page <= 1, key="wl_prev"):
    st.session_state["wl_page"] = result.page - 1
    st.rerun()
if nav[1].button("Next ▶", disabled=result.page >= result.pages, key="wl_next"):
    st.session_state["wl_page"] = result.page + 1
    st.rerun()
with nav[2]:
    labels = {r.encounter_id: f"#{r.rank} {r.patient_id} ({r.risk_pct:.1f}%, {r.risk_tier})"
              for r in result.rows.itertuples()}
    picked = st.selectbox("Patient", list(labels), format_func=labels.get, key="wl_pick",
                          label_visibility="collapsed")
with nav[3]:
    if st.button("Open patient", type="primary", key="wl_open"):
        st.switch_page("pages/2_Patient.py", query_params={"encounter": picked})

st.download_button("Download this list (CSV)", data=lambda: data.export_csv(filters, capacity.threshold),
                   file_name="worklist.csv", mime="text/csv", key="wl_download", on_click="ignore",
                   help="All matching patients (up to 100,000). Text that a spreadsheet would run as a formula is "
                        "prefixed with a quote.")
