"""Monitoring: is the model still doing what it did when it was checked? Alerts first, then performance over
time, calibration by period, drift of each input, fairness and the service. Computed by
`serving.monitoring` from the prediction log and the outcomes (docs/monitoring.md)."""
from __future__ import annotations

import datetime as dt
import logging

import streamlit as st

from core.errors import UserError
from serving import figures
from serving.monitoring import alert_summary, readings
from ui import chrome, data
from ui.format import friendly_error, synthetic_banner

log = logging.getLogger("readmit.app")
viewer, status = chrome.page("Monitoring")
st.title("Monitoring")
synthetic_banner(status)
st.caption("How the model does on the discharges it has scored since it went live, period by period of discharge "
           "date. Outcomes are known 30 days after discharge: until then performance is *estimated* from the risks "
           "themselves (dashed), afterwards it is *realised* (solid).")

left, right = st.columns([1, 2])
period = left.radio("Periods", ["month", "week"], horizontal=True, key="m_period",
                    format_func=lambda p: {"month": "Months", "week": "Weeks"}[p])
choice = right.radio("Compared with", ["model", "window"], horizontal=True, key="m_reference",
                     format_func=lambda r: {"model": "the model's reference data",
                                            "window": "a baseline window of the log"}[r])
reference = "model"
if choice == "window":
    today = dt.date.today()
    picked = right.date_input("Baseline window (discharge dates)", value=(today - dt.timedelta(days=365),
                                                                         today - dt.timedelta(days=183)),
                              key="m_window")
    if not isinstance(picked, (tuple, list)) or len(picked) != 2:
        st.info("Pick the first and the last day of the baseline window.")
        st.stop()
    reference = f"{picked[0].isoformat()}:{picked[1].isoformat()}"

try:
    report = data.monitoring_report(reference, period)
except UserError as error:
    st.info(str(error))
    st.stop()
except Exception:
    log.exception("monitoring report failed")
    friendly_error("the monitoring report")
    st.stop()

counts = report["counts"]
if not counts["logged"]:
    st.info("No predictions logged yet. Scores enter the prediction log when the API, an upload or a batch run "
            "makes them (`readmit log-predictions --warehouse W` logs a batch run).")
    st.stop()
read = readings(report)
st.caption(f"Reference: {report['reference']['description']}. As of {report['as_of']}; "
           f"{counts['scored']:,} scored discharges, {counts['with_outcome']:,} with a known outcome, "
           f"{counts['unmatured']:,} under 30 days old.")

st.subheader("Alerts")
alerts = report["alerts"]
if not alerts:
    st.success("No alert: nothing in the monitored periods is outside its threshold.", icon=":material/check_circle:")
for item in alert_summary(report):
    more = f" And {item['more']} more of this kind." if item["more"] else ""
    (st.error if item["severity"] == "act" else st.warning)(item["message"] + more)
if alerts:
    acts = sum(a["severity"] == "act" for a in alerts)
    with st.expander(f"All {len(alerts)} alerts ({acts} act, {len(alerts) - acts} watch)"):
        st.dataframe([{"severity": a["severity"], "check": a["check"], "about": a["subject"], "period": a["period"],
                       "finding": a["message"]} for a in alerts], hide_index=True, width="stretch")

if not counts["with_outcome"]:
    st.info("No outcomes yet: realised performance, calibration and fairness appear once discharges are 30 days "
            "old and their outcomes are loaded (`readmit outcomes`). Until then the figures are estimates.")

st.subheader("Performance over time")
st.markdown(read["performance"])
st.plotly_chart(figures.monitoring_performance_figure(report), width="stretch")

st.subheader("Calibration by period")
st.markdown(read["calibration"])
st.plotly_chart(figures.monitoring_calibration_figure(report), width="stretch")

st.subheader("Drift of the model's inputs")
st.markdown(read["drift"])
show_all = st.toggle("Show every input", key="m_all_inputs")
st.plotly_chart(figures.monitoring_drift_figure(report, top=None if show_all else 15), width="stretch")
if report["drift"]["skipped"]:
    st.caption("Not monitored: " + "; ".join(f"{name} ({why})" for name, why in report["drift"]["skipped"].items()))

st.subheader("Fairness")
st.markdown(read["fairness"])
if report["fairness"]["rows"]:
    metric = st.selectbox("Measure", ["sensitivity", "observed_to_expected", "ppv", "selection_rate"], key="m_metric",
                          format_func=lambda m: {"sensitivity": "share of readmitted patients called",
                                                 "observed_to_expected": "observed / expected readmissions",
                                                 "ppv": "share of called patients readmitted",
                                                 "selection_rate": "share of patients called"}[m])
    st.plotly_chart(figures.monitoring_fairness_figure(report, metric), width="stretch")

st.subheader("Volume and outcomes")
st.markdown(read["volume"])
st.plotly_chart(figures.monitoring_volume_figure(report), width="stretch")

st.subheader("Service")
st.markdown(read["service"])
if report["service"]["metrics"] or any(p["api_predictions"] for p in report["service"]["per_period"]):
    st.plotly_chart(figures.monitoring_service_figure(report), width="stretch")
