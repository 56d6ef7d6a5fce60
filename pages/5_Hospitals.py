"""Hospitals: CMS HRRP excess readmission ratios for one hospital against its state and the nation."""
from __future__ import annotations

import logging

import streamlit as st

from serving import figures
from serving.hospitals import display_ratio, reason_column
from serving.worklist import count_words
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
reported = int(bench[now_col].notna().sum())
unreported = len(bench) - reported
st.markdown(f"**FY{latest}: {len(above)} of {count_words(reported, 'reported measure')} above 1.0**"
            + (": " + ", ".join(above["measure_label"]) if len(above) else "")
            + (f" ({unreported} of {len(bench)} have no ratio; the table says why)." if unreported
               else "."))

st.plotly_chart(figures.hospital_ratio_figure(bench, latest, previous), width="stretch")
missing = bench[bench[now_col].isna()]
if len(missing):
    st.caption("Not plotted: " + "; ".join(f"{m} ({r.lower()})" for m, r in
                                           zip(missing["measure_label"], missing[reason_column(now_col)])))

# A missing value says why in words (its CMS footnote or flag), never 0; above 1.0 is said in words too.
table = bench.copy()
for column in (now_col, before_col, "state median", "national median"):
    table[column] = [display_ratio(v, reason) for v, reason in zip(bench[column], bench[reason_column(column)])]
table[now_col] = [text + (" ▲ above 1.0" if v is not None and v == v and v > 1 else "")
                  for text, v in zip(table[now_col], bench[now_col])]
table["change"] = bench["change"].map(lambda v: "—" if v is None or v != v else f"{v:+.3f}")
table["discharges"] = [reason if v is None or v != v else f"{int(v):,}"
                       for v, reason in zip(bench["discharges"], bench[reason_column("discharges")])]
table = table.drop(columns=["measure"]).rename(columns={"measure_label": "measure"})
st.dataframe(table[["measure", now_col, before_col, "change", "state median", "national median", "discharges"]],
             hide_index=True, width="stretch",
             column_config={"measure": st.column_config.TextColumn("Measure", width=280),
                            now_col: st.column_config.TextColumn(f"Ratio FY{latest}", width=145,
                                                                 help="Above 1.0: more readmissions than expected "
                                                                      "for the hospital's patients"),
                            before_col: st.column_config.TextColumn(before_col.replace("ratio", "Ratio"), width=145),
                            "change": st.column_config.TextColumn("Change", width=58),
                            "state median": st.column_config.TextColumn("State median", width=90),
                            "national median": st.column_config.TextColumn("National median", width=105),
                            "discharges": st.column_config.TextColumn("Discharges", width=150)})
