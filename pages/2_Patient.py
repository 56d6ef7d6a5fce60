"""Patient: one encounter, its risk and why; every view is written to the audit log."""
from __future__ import annotations

import logging

import pandas as pd
import streamlit as st

from core import vocabulary
from core.errors import UserError
from serving import audit, figures, patient
from serving.outreach import STATUS_LABELS, STATUSES
from serving.worklist import count_words
from ui import chrome, data
from ui.format import band, call_list_text, friendly_error, pct, synthetic_banner, tier_label

log = logging.getLogger("readmit.app")


def other_stays(rows: pd.DataFrame) -> pd.DataFrame:
    """The patient's other stays in plain words: dates, codes as words, risk in percent, the outcome as Yes/No."""
    def when(value) -> str:
        return "Not recorded" if value is None or pd.isna(value) else f"{pd.Timestamp(value):%Y-%m-%d}"

    def outcome(value) -> str:
        return "Not known yet" if value is None or pd.isna(value) else "Yes" if bool(value) else "No"

    def stay(admitted, discharged, days) -> str:
        length = "" if days is None or pd.isna(days) else f" ({count_words(int(days), 'day')})"
        return f"{when(admitted)} to {when(discharged)}{length}"

    shown = {"Encounter": rows["encounter_id"].astype(str),
             "Stay": [stay(*r) for r in zip(rows["admit_time"], rows["discharge_time"], rows["length_of_stay_days"])],
             "Admission type": rows["admission_type"].map(lambda v: vocabulary.label("admission_type", v)),
             "Discharged to": rows["discharge_disposition"].map(
                 lambda v: vocabulary.label("discharge_disposition", v)),
             "Readmitted within 30 days": rows["readmitted_30d"].map(outcome)}
    if "risk" in rows:
        shown["Risk"] = rows["risk"].map(lambda v: "Not scored" if v is None or pd.isna(v) else pct(v))
        shown["Risk band"] = rows["risk_tier"].map(band)
    return pd.DataFrame(shown)


viewer, status = chrome.page("Patient")
st.title("Patient")
synthetic_banner(status)
if not status.usable:
    st.warning(status.problem)
    st.stop()

params = st.query_params
asked_encounter = params.get("encounter", "").strip()
asked_patient = params.get("patient", "").strip()
asked_any = params.get("id", "").strip()
asked_source = params.get("source", "").strip()
with st.form("lookup"):
    typed = st.text_input("Patient or encounter id", value=asked_encounter or asked_patient or asked_any,
                          key="pt_lookup")
    if st.form_submit_button("Show"):
        value = typed.strip()
        st.query_params.clear()
        if value:
            st.query_params["id"] = value
        st.rerun()

if not asked_encounter and not asked_patient and not asked_any:
    st.info("Choose a patient on the Worklist, or type a patient or encounter id above.")
    st.stop()

wh = data.warehouse()
try:
    encounter_id = (patient.resolve_any_id(wh, asked_any) if asked_any else
                    patient.resolve_encounter(wh, asked_encounter or None, asked_patient or None))
    detail = patient.patient_detail(wh, encounter_id) if encounter_id else None
    if detail is None or (asked_source and str(detail.encounter.get("source")) != asked_source):
        detail = (data.uploaded_detail(asked_encounter or asked_any or None, None, asked_source or None)
                  or data.uploaded_detail(None, asked_patient or asked_any or None, asked_source or None))
except Exception:
    log.exception("patient lookup failed")
    friendly_error("this patient")
    st.stop()

who = viewer.user
if detail is None:
    audit.record_access(who, "patient_not_found", asked_patient or asked_any or None, asked_encounter or None,
                        page="Patient")
    st.error(f"Not found: no patient or encounter with id '{asked_encounter or asked_patient or asked_any}' "
             "in this warehouse or the uploaded discharges.")
    st.stop()

audit.record_access(who, "view_patient", detail.patient_id, detail.encounter_id, page="Patient")
enc, pred = detail.encounter, detail.prediction or {}

st.subheader(f"Patient {detail.patient_id} · encounter {detail.encounter_id}")
if detail.uploaded:
    st.caption(f"Uploaded by {detail.uploaded['uploaded_by']} on {detail.uploaded['uploaded_at']:%Y-%m-%d %H:%M} UTC "
               f"(file {detail.uploaded['upload_name']}), scored when it was added to the worklist.")
risk = pred.get("risk")
scored = risk is not None and not pd.isna(risk)
service = data.loaded_model() if scored else None
live, live_failed = None, False
if service is not None and patient.needs_live_explanation(pred, service.model_version):
    try:
        with st.spinner("Explaining this score with the loaded model…"):
            live = data.live_explanation(detail.encounter_id, service)
    except Exception as error:
        log.error("live explanation failed (%s)", type(error).__name__)  # no patient ids in the app log
        live_failed = True

if not scored:
    reason = pred.get("ineligible_reason") or enc.get("ineligible_reason")
    st.warning(f"Not scored: this discharge is not eligible for readmission measurement"
               f"{' (' + str(reason) + ')' if reason else ''}.")
else:
    a, b, c = st.columns(3)
    a.metric("Predicted 30-day readmission risk", pct(risk))
    b.metric("Risk band", str(pred.get("risk_tier") or "—"), help=tier_label(pred.get("risk_tier")))
    pctile = pred.get("risk_percentile")
    c.metric("Percentile among scored discharges", f"{pctile:.0f}" if pctile is not None and not pd.isna(pctile) else "—")
    st.markdown(call_list_text(*data.list_position(str(enc.get("source") or "warehouse"), detail.encounter_id)))
    if live is not None and not live.agrees_with(risk):
        st.warning(f"The model loaded now ({live.model_version}) gives {pct(live.risk)} for this discharge, not the "
                   f"stored {pct(risk)} (scored by {pred.get('model_version') or 'an unknown model'}). The stored risk "
                   "is shown above; the reasons and the chart below explain the loaded model's risk. Rescore the "
                   "warehouse with this model (`readmit score`).")
    if live is not None:
        reasons = list(live.reasons)
    else:
        reasons = [pred.get(f"reason_{i}") for i in (1, 2, 3)]
        reasons = [r for r in reasons if r and not (isinstance(r, float) and pd.isna(r))]
    if reasons:
        st.markdown("**Main reasons for this score:**\n" + "\n".join(f"{i}. {r}" for i, r in enumerate(reasons, 1)))

left, right = st.columns([3, 2])
with left:
    if live is not None:
        st.plotly_chart(figures.contributions_figure(live.contributions, live.base_risk), width="stretch")
        stored_by = (f"the stored explanation is model {pred.get('model_version') or '(unknown)'}'s"
                     if not detail.contributions.empty else "no explanation is stored with this score")
        st.caption(f"Reasons and chart: computed now by the loaded model {live.model_version} ({stored_by}), by "
                   "the method `readmit score` stores: Shapley values of the field groups. The bars add up from the "
                   "average patient's risk to this patient's risk.")
    elif not detail.contributions.empty:
        st.plotly_chart(figures.contributions_figure(detail.contributions, pred.get("base_risk")), width="stretch")
        why = (" (an explanation by the loaded model could not be computed)" if live_failed
               else " (no model is loaded here)" if scored and service is None else "")
        st.caption(f"Reasons and chart: stored when model {pred.get('model_version') or '(unknown)'} scored this "
                   f"discharge{why}, the same ones the worklist shows: Shapley values of the field groups. The bars "
                   "add up from the average patient's risk to this patient's risk.")
    else:
        st.info("No explanation stored for this discharge.")
with right:
    lace = detail.lace
    if lace:
        st.subheader(f"LACE index: {lace['total']}")
        st.caption(f"For comparison: the classic LACE score, {lace.get('band', '')}.")
        st.table(pd.DataFrame({"component": ["Length of stay", "Acuity (emergency admission)", "Comorbidity (Charlson)",
                                             "Emergency visits (past year)"],
                               "points": [lace["L"], lace["A"], lace["C"], lace["E"]]}).set_index("component"))

st.subheader("The stay")
shown = pd.DataFrame(patient.stay_facts(enc), columns=["", "value"])
c1, c2 = st.columns(2)
half = (len(shown) + 1) // 2
c1.table(shown.iloc[:half].set_index(""), hide_header=True)
c2.table(shown.iloc[half:].set_index(""), hide_header=True)

d1, d2 = st.columns(2)
with d1:
    st.subheader("Diagnoses")
    if detail.diagnoses.empty:
        st.write("No diagnosis recorded.")
    else:
        st.table(detail.diagnoses.rename(columns={"position": "Position", "code": "Code", "description": "Description"}),
                 hide_index=True)   # a table wraps the long ICD titles a data grid would cut off
with d2:
    st.subheader("Diabetes medications at discharge")
    if detail.medications.empty:   # a list recorded empty is not a list never recorded
        st.write("No diabetes medication given." if detail.medications_recorded else f"{vocabulary.NOT_RECORDED}.")
    else:
        st.table(detail.medications.rename(columns={"medication": "Medication", "at discharge": "At discharge"}),
                 hide_index=True)

st.subheader("Other stays of this patient")
if detail.other_encounters.empty:
    st.write("No other stays on record.")
else:
    st.table(other_stays(detail.other_encounters), hide_index=True)   # wraps: every column in sight

# --- outreach: the call history and a form to record a call ------------------------------------------------
st.subheader("Outreach")
outreach_source = str(enc.get("source") or "warehouse")
calls_made = data.outreach_history(outreach_source, detail.encounter_id, detail.patient_id)
if calls_made:
    st.table(pd.DataFrame({
        "When": [f"{e.recorded_at:%Y-%m-%d %H:%M} UTC" for e in calls_made], "Result": [e.label for e in calls_made],
        "Recorded by": [e.recorded_by for e in calls_made],
        "Note": [(e.note or "—") + (" (recorded under another patient id)" if e.patient_mismatch else "")
                 for e in calls_made]}), hide_index=True)
else:
    st.write("No calls recorded for this discharge yet.")
with st.form("pt_outreach", clear_on_submit=True):
    st.markdown(f"**Record a call**, saved under the name {viewer.user}")
    result_code = st.selectbox("Result", STATUSES, format_func=STATUS_LABELS.get, index=STATUSES.index("reached"),
                               help="Reached, Follow-up booked, Declined and Not needed close the case: the patient "
                                    "leaves the open list. No answer keeps them on it.")
    call_note = st.text_input("Note (optional)", max_chars=1000)
    if st.form_submit_button("Save", type="primary"):
        try:
            data.record_outreach(outreach_source, detail.encounter_id, detail.patient_id, result_code, call_note,
                                 viewer.user)
        except UserError as error:
            st.error(str(error))
        else:
            st.rerun()
st.page_link("pages/1_Worklist.py", label="Back to the worklist", icon=":material/arrow_back:")
