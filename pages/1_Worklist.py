"""Worklist: today's open follow-up work ranked by risk, today's call list, and the handled patients.

The whole view lives in the URL: the widgets are bound to query parameters (`bind="query-params"`) and
`view` says Open or Handled, so a shared link opens the same view. Streamlit's Back and sidebar links
arrive without those parameters; the page then reloads itself with the ones this session saved last.
"""
from __future__ import annotations

import logging
from dataclasses import replace

import pandas as pd
import streamlit as st

from core import vocabulary
from core.errors import UserError
from serving import worklist
from serving.outreach import STATUS_LABELS, STATUSES
from serving.worklist import DEFAULT_PAGE_SIZE, RISK_TIERS, WorklistFilters, count_words
from ui import chrome, data
from ui.format import band, days_since, friendly_error, pct, synthetic_banner

log = logging.getLogger("readmit.app")
PAGE = "pages/1_Worklist.py"
URL_SAVED = "_worklist_url"
FILTER_KEYS = ("tier", "age", "sex", "race", "group", "disposition", "payer", "call_list")
VIEW_PARAMS = ("as_of", "window", "calls", "q", "page", "view", *FILTER_KEYS)
VIEWS = {"open": "Open", "handled": "Handled"}
# Below this width the table gives way to a four-column table (rank, patient, risk, main reason).
PHONE_CSS = """<style>
@media (max-width: 640px) { .st-key-wl_desktop { display: none; } }
@media (min-width: 641px) { .st-key-wl_phone { display: none; } }
</style>"""

viewer, status = chrome.page("Worklist")
st.title("Worklist")
synthetic_banner(status)
if not status.usable:
    st.warning(status.problem)
    st.stop()

if "view" not in st.query_params and st.session_state.get(URL_SAVED):
    st.switch_page(PAGE, query_params=st.session_state[URL_SAVED])   # Back or the sidebar: the last view
for stale in [k for k in st.query_params if k not in VIEW_PARAMS]:
    del st.query_params[stale]                                         # e.g. the Patient page's encounter


def reset_filters() -> None:
    for key in FILTER_KEYS:
        st.session_state[key] = False if key == "call_list" else []
    first_page()


def first_page() -> None:
    """A new list, filter or view starts on page 1."""
    st.session_state["page"] = 1


# A widget in the URL; changing it starts the list on page 1.
BOUND = {"bind": "query-params", "on_change": first_page}


def current_page() -> int:
    """The page asked for: the page widget's value, or the URL's before the widget is drawn."""
    return int(st.session_state.get("page") or st.query_params.get("page") or 1)


def turn_page(step: int) -> None:
    st.session_state["page"] = max(1, current_page() + step)


def open_patient(row) -> None:
    st.switch_page("pages/2_Patient.py", query_params={"encounter": str(row["encounter_id"]),
                                                       "source": str(row["source"])})


CODED_COLUMNS = ("age_band", "sex", "principal_group", "discharge_disposition", "payer")


def words(field: str):
    """A multiselect's `format_func`: the option's plain words; the URL keeps the stored level."""
    return lambda level: vocabulary.label(field, level)


def display(rows: pd.DataFrame) -> pd.DataFrame:
    """The open list as shown: risk in percent, plain words, no empty cells."""
    return pd.DataFrame({
        "rank": rows["rank"].astype(int), "patient_id": rows["patient_id"].astype(str),
        "risk_pct": (rows["risk"].astype(float) * 100).round(1), "reason_1": rows["reason_1"].fillna("—"),
        "discharged": discharged(rows), "flagged": ["Yes" if f else "No" for f in rows["flagged"]],
        "status": rows["status_label"], "risk_tier": [band(t) for t in rows["risk_tier"]],
        "encounter_id": rows["encounter_id"].astype(str), "reason_2": rows["reason_2"].fillna("—"),
        "reason_3": rows["reason_3"].fillna("—"),
        **{column: [vocabulary.label(column, v) for v in rows[column]] for column in CODED_COLUMNS},
        "origin": [origin(r) for r in rows.to_dict("records")],
    })


def discharged(rows: pd.DataFrame) -> list[str]:
    """'2026-11-21 (7 days ago)', '2026-11-28 (today)'."""
    return [f"{pd.Timestamp(t):%Y-%m-%d} ({'today' if d == 0 else count_words(int(d), 'day') + ' ago'})"
            for t, d in zip(rows["discharge_time"], rows["days_since_discharge"])]


def origin(row: dict) -> str:
    if row.get("uploaded_by") and not pd.isna(row.get("uploaded_at")):
        return f"Uploaded by {row['uploaded_by']}, {pd.Timestamp(row['uploaded_at']):%Y-%m-%d %H:%M} UTC"
    return "Hospital records"


OPEN_COLUMNS = {
    "rank": st.column_config.NumberColumn("#", width=44),
    "patient_id": st.column_config.TextColumn("Patient", width=120),
    "risk_pct": st.column_config.NumberColumn("Risk", format="%.1f%%", width=70,
                                              help="Predicted risk of a readmission within 30 days"),
    "reason_1": st.column_config.TextColumn("Main reason", width=330),
    "discharged": st.column_config.TextColumn("Discharged", width=170,
                                              help="Discharge date and days since discharge"),
    "flagged": st.column_config.TextColumn("Call today", width=80,
                                           help="On today's call list: the highest-risk open patients, as many "
                                                "as the calls per day."),
    "status": st.column_config.TextColumn("Outreach", width=110),
    "risk_tier": st.column_config.TextColumn("Risk band", width=100), "encounter_id": "Encounter",
    "reason_2": st.column_config.TextColumn("Reason 2", width="large"),
    "reason_3": st.column_config.TextColumn("Reason 3", width="large"), "age_band": "Age", "sex": "Sex",
    "principal_group": "Diagnosis group", "discharge_disposition": "Discharged to", "payer": "Payer",
    "origin": st.column_config.TextColumn("Source", width="medium"),
}


def phone_table(rows: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"Rank": rows["rank"].astype(int).astype(str), "Patient": rows["patient_id"].astype(str),
                         "Risk": [pct(r) for r in rows["risk"]], "Main reason": rows["reason_1"].fillna("—")})


def handled_display(rows: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "patient_id": rows["patient_id"].astype(str), "reason": rows["reason"], "discharged": discharged(rows),
        "history": [h or "No outreach recorded" for h in rows["history"]],
        "risk": [pct(r) if r == r and r is not None else "not scored" for r in rows["risk"]],
        "encounter_id": rows["encounter_id"].astype(str),
    })


HANDLED_COLUMNS = {
    "patient_id": st.column_config.TextColumn("Patient", width=120),
    "reason": st.column_config.TextColumn("Left the open list because", width=200),
    "discharged": st.column_config.TextColumn("Discharged", width=170, help="Discharge date and days since discharge"),
    "history": st.column_config.TextColumn("Outreach history (when, result, by whom, note)", width=380),
    "risk": "Risk", "encounter_id": "Encounter",
}


def pick_and_act(rows: pd.DataFrame, key: str, shown: str = "") -> None:
    """Below a table: pick one of its patients, open them, or record a call for them. `shown` names the rows
    (view and page): the picker starts afresh on other rows rather than keep a choice made among others."""
    if rows.empty:
        return
    labels = {i: (f"#{r['rank']} " if not pd.isna(r["rank"]) else "") + f"{r['patient_id']} ({pct(r['risk'])}, "
              f"{days_since(int(r['days_since_discharge']))})" for i, r in rows.iterrows()}
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    picked = left.selectbox("Patient", list(labels), format_func=labels.get, key=f"{key}_pick_{shown}")
    row = rows.loc[picked]
    if right.button("Open patient", type="primary", key=f"{key}_open", width="stretch"):
        open_patient(row)
    with st.expander(f"Record a call for {row['patient_id']}"):
        with st.form(f"{key}_outreach", clear_on_submit=True, border=False):
            code = st.selectbox("Result", STATUSES, format_func=STATUS_LABELS.get, index=STATUSES.index("reached"))
            note = st.text_input("Note (optional)", max_chars=1000)
            if st.form_submit_button("Save", type="primary"):
                try:
                    data.record_outreach(str(row["source"]), str(row["encounter_id"]), str(row["patient_id"]),
                                         code, note, viewer.user)
                except UserError as error:
                    st.error(str(error))
                else:
                    st.toast(f"Saved: {STATUS_LABELS[code]} for {row['patient_id']}.")
                    st.rerun()


def show_search(day, text: str, filters: WorklistFilters) -> None:
    found = worklist.search(day, data.index(), text, filters, data.uploads())
    if not found.found:
        st.info(f"No patient or encounter id starts with '{text}' in this warehouse or the uploaded discharges.")
        return
    for encounter_id, hidden in found.hidden_by.items():
        st.warning(f"Encounter {encounter_id} is hidden by the filter {'; '.join(hidden)}. It is shown here because "
                   "you searched for it.")
    if len(found.open):
        st.markdown(f"**Open**: {count_words(len(found.open), 'match', 'matches')}.")
        st.dataframe(display(found.open), hide_index=True, width="stretch", column_config=OPEN_COLUMNS,
                     key="wl_search_open")
        pick_and_act(found.open, "wl_search", text)
    if len(found.handled):
        st.markdown(f"**Handled**: {count_words(len(found.handled), 'match', 'matches')}.")
        st.dataframe(handled_display(found.handled), hide_index=True, width="stretch", column_config=HANDLED_COLUMNS,
                     key="wl_search_handled")
    for row in found.outside.to_dict("records"):
        when = row.get("discharge_time")
        if when is None or pd.isna(when):
            st.info(f"Patient {row['patient_id']} has no discharge on record (encounter {row['encounter_id']}).")
        elif pd.Timestamp(when).date() > day.as_of:
            st.info(f"Patient {row['patient_id']} was discharged on {pd.Timestamp(when):%Y-%m-%d}, after "
                    f"{day.as_of:%Y-%m-%d}, the date this list is for.")
        else:
            gap = (day.as_of - pd.Timestamp(when).date()).days
            st.info(f"Patient {row['patient_id']}'s latest discharge was on {pd.Timestamp(when):%Y-%m-%d}, "
                    f"{count_words(gap, 'day')} before {day.as_of:%Y-%m-%d}: outside the "
                    f"{count_words(day.window_days, 'day')} follow-up window.")


options = data.options()
settings = data.settings()
try:
    index = data.index()
    default_day = data.default_as_of()
except Exception:
    log.exception("worklist index failed")
    friendly_error("the worklist")
    st.stop()
# never after the default day: de-identified MIMIC dates lie in the 2100s, after today (a date input refuses a
# default below its minimum)
first_day = min(index.first_discharge or default_day, default_day)
last_day = max(default_day, index.latest_discharge or default_day)

with st.sidebar:
    st.header("Filters")
    tiers = st.multiselect("Risk band", RISK_TIERS, key="tier", **BOUND)   # plain values: readable URLs
    age_bands = st.multiselect("Age band", options["age_bands"], key="age", format_func=words("age_band"), **BOUND)
    sexes = st.multiselect("Sex", options["sexes"], key="sex", format_func=words("sex"), **BOUND)
    races = st.multiselect("Race", options["races"], key="race", format_func=words("race"), **BOUND)
    groups = st.multiselect("Diagnosis group", options["diagnosis_groups"], key="group",
                            format_func=words("principal_group"), **BOUND)
    dispositions = st.multiselect("Discharged to", options["dispositions"], key="disposition",
                                  format_func=words("discharge_disposition"), **BOUND)
    payers = st.multiselect("Payer", options["payers"], key="payer", format_func=words("payer"), **BOUND)
    call_list_only = st.checkbox("Today's call list only", key="call_list", **BOUND)
    st.button("Clear filters", on_click=reset_filters, key="wl_clear")

headline = st.empty()
c_date, c_window, c_calls = st.columns(3)
as_of = c_date.date_input("List for", value=default_day, min_value=first_day, max_value=last_day, key="as_of",
                          **BOUND, format="YYYY-MM-DD",
                          help="The day the list is built for (today by default). Pick an earlier day to look back: "
                               "only admissions up to that day count as readmissions.")
window = int(c_window.number_input("Follow-up window (days after discharge)", min_value=1, max_value=365,
                                   value=settings.follow_up_days, step=1, key="window", **BOUND))
calls = int(c_calls.number_input("Calls per day", min_value=1, max_value=10_000, value=settings.calls_per_day,
                                 step=1, key="calls", **BOUND,
                                 help="How many patients the team can call today: today's call list holds the "
                                      "highest-risk open patients, this many."))

filters = WorklistFilters(tuple(tiers), tuple(age_bands), tuple(sexes), tuple(races), tuple(groups),
                          tuple(dispositions), tuple(payers), bool(call_list_only))
try:
    day = data.day_list(as_of, window, calls)
    data.store_call_list(day, viewer.user)
    capacity = data.capacity(calls, as_of, window)
except Exception:
    log.exception("worklist query failed")
    friendly_error("the worklist")
    st.stop()

label = "Today's call list" if as_of == default_day else "Call list"
today_note = (f" Demo data: \"today\" is {default_day:%Y-%m-%d}, the newest discharge date in the warehouse."
              if as_of == default_day and status.synthetic else "")
headline.markdown(
    f"**{label} for {as_of:%Y-%m-%d}: {count_words(len(day.call_list), 'patient')}**, the highest-risk of "
    f"{count_words(len(day.open), 'open patient')}, ranked by predicted 30-day readmission risk. Open: discharged "
    f"in the last {count_words(window, 'day')} and not yet handled ({count_words(len(day.handled), 'patient')} "
    f"handled).{today_note}")
st.markdown(f"At {count_words(calls, 'call')} a day: **PPV {pct(capacity.ppv)}**, **sensitivity "
            f"{pct(capacity.sensitivity)}**", help="PPV: of the patients the list would have called, the share "
            "readmitted within 30 days. Sensitivity: of the patients readmitted within 30 days, the share the list "
            "would have called.")
st.caption(capacity.replay.basis)

patient_hint, encounter_hint = worklist.id_examples(day)
c_search, c_view = st.columns([3, 2], vertical_alignment="bottom")
search = c_search.text_input("Find a patient or encounter id", key="q", bind="query-params",
                             placeholder=f"e.g. {patient_hint} or {encounter_hint}" if patient_hint else "").strip()
view = c_view.segmented_control(
    "Show", list(VIEWS), key="wl_view", required=True, on_change=first_page,
    default=st.query_params.get("view") if st.query_params.get("view") in VIEWS else "open",
    format_func=lambda v: f"{VIEWS[v]} ({len(day.open) if v == 'open' else len(day.handled):,})")
st.query_params["view"] = view

if search:
    show_search(day, search, filters)
else:
    rows = day.open if view == "open" else day.handled
    shown_filters = filters if view == "open" else replace(filters, call_list_only=False)   # nobody handled is on it
    result = worklist.page_of(rows, shown_filters, current_page(), DEFAULT_PAGE_SIZE)
    if result.total == 0:
        st.info("No patients match these filters." if shown_filters.active() else
                "Nobody here: no open patients in the window." if view == "open" else "No handled patients yet.")
    elif view == "open":
        st.html(PHONE_CSS)
        with st.container(key="wl_desktop"):
            selection = st.dataframe(display(result.rows), hide_index=True, width="stretch", on_select="rerun",
                                     selection_mode="single-row", key="wl_table", column_config=OPEN_COLUMNS)
        with st.container(key="wl_phone"):
            st.table(phone_table(result.rows), hide_index=True)
        chosen = selection.selection.rows if selection and selection.selection else []
        if chosen:
            open_patient(result.rows.iloc[chosen[0]])
    else:
        st.caption("Patients who left the open list: readmitted, died, discharged to hospice, not scored, or "
                   "outreach closed (reached, follow-up booked, declined, not needed); the latest outreach first.")
        st.dataframe(handled_display(result.rows), hide_index=True, width="stretch", key="wl_handled",
                     column_config=HANDLED_COLUMNS)
    nav = st.columns([1, 1, 3, 1], vertical_alignment="bottom")
    nav[0].button("◀ Previous", disabled=result.page <= 1, key="wl_prev", on_click=turn_page, args=(-1,))
    nav[1].button("Next ▶", disabled=result.page >= result.pages, key="wl_next", on_click=turn_page, args=(1,))
    nav[2].markdown(f"Page {result.page} of {result.pages} · {count_words(result.total, 'patient')}"
                    + (" match the filters" if shown_filters.active() else ""))
    nav[3].number_input("Page", min_value=1, value=1, step=1, key="page", bind="query-params")
    pick_and_act(result.rows, "wl", f"{view}_{result.page}")

st.download_button(f"Download {'today' if as_of == default_day else 'this day'}'s call list (CSV)",
                   data=worklist.call_list_csv(day),
                   file_name=f"call_list_{as_of:%Y-%m-%d}.csv", mime="text/csv", key="wl_download",
                   on_click="ignore", help="The same columns as `readmit worklist`. Text a spreadsheet would run as "
                                           "a formula starts with a quote.")

st.session_state[URL_SAVED] = {k: st.query_params.get_all(k) for k in st.query_params}
st.session_state[data.VIEW_KEY] = {"as_of": as_of, "window": window, "calls": calls}
