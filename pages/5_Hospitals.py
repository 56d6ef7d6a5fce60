"""Hospitals: CMS HRRP excess readmission ratios for one hospital against its state and the nation."""
from __future__ import annotations

import logging

import streamlit as st

from serving import figures
from serving.hospitals import TOO_FEW, display_ratio
from ui import chrome, data
from ui.format import friendly_error

log = logging.getLogger("readmit.app")
viewer, status = chrome.page("Hospitals")
st.title("Hospitals")
st.caption("CMS Hospital Readmissions Reduction Program (HRRP): excess readmission ratio = predicted / expected "
           "readmissions. Above 1.0 means more readmissions than expected for that hospital's patients.")
if not status.usable or "hospitals" not in status.tables:
    st.info("No CMS HRRP data in this warehouse. Load it with `readmit etl --source cms`.")
    st.stop()
try:
    hospitals = data.hospitals()
except Exception:
    log.exception("hospital list failed")
    friendly_error("the hospital list")
    st.stop()
labels = {r.facility_id: f"{r.facility_name} ({r.state}, {r.facility_id})" for r in hospitals.itertuples()}
chosen = st.selectbox("Hospital", list(labels), format_func=labels.get, key="h_pick",
                      placeholder="Type a hospital name")
if not chosen:
    st.stop()
bench = data.benchmark(chosen)
if bench is None:
    st.error("Not found: no HRRP results for this hospital.")
    st.stop()
latest, previous = bench.attrs.get("latest_year"), bench.attrs.get("previous_year")
now_col, before_col = f"ratio FY{latest}", f"ratio FY{previous}" if previous else "ratio (previous)"
above = bench[bench["status"].str.startswith("Above")]
st.markdown(f"**{len(above)} of {len(bench)} measures above 1.0 in FY{latest}**"
            + (": " + ", ".join(above["measure_label"]) if len(above) else "."))

st.plotly_chart(figures.hospital_ratio_figure(bench, latest, previous), width="stretch")
missing = bench[bench[now_col].isna()]
if len(missing):
    st.caption(f"Not plotted ({TOO_FEW.lower()} or not available): " + ", ".join(missing["measure_label"]))

table = bench.copy()
for column in (now_col, before_col, "state median", "national median"):
    table[column] = table[column].map(display_ratio)
table["change"] = bench["change"].map(lambda v: "—" if v is None or v != v else f"{v:+.3f}")
table["discharges"] = bench["discharges"].map(lambda v: TOO_FEW if v is None or v != v else f"{int(v):,}")
st.dataframe(table.drop(columns=["measure"]).rename(columns={"measure_label": "measure"}), hide_index=True,
             width="stretch")
