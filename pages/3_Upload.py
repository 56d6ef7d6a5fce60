"""Upload: score a discharges CSV (or a Diabetes 130 file); store its valid rows only when added to the worklist."""
from __future__ import annotations

import logging

import streamlit as st

from core.errors import UserError
from core.spreadsheet import safe_csv
from serving import upload
from serving.worklist import count_words
from ui import chrome, data
from ui.format import band, friendly_error, synthetic_banner

log = logging.getLogger("readmit.app")
viewer, status = chrome.page("Upload")
st.title("Upload")
synthetic_banner(status)
st.markdown("Score a file of discharges: one row per discharge, in the template's columns (or a Diabetes 130 "
            "extract). Rows with problems are listed with their row number, column and problem; the other rows "
            "are scored. **Nothing you upload is stored** unless you add it to the worklist: otherwise the file is "
            "read, scored and discarded.")
st.download_button("Download the template (CSV)", data=upload.template_csv(), file_name="discharges_template.csv",
                   mime="text/csv", key="up_template", on_click="ignore")
uploaded = st.file_uploader("Discharges file", type=["csv"], key="up_file",
                            help="Size limit: see server.maxUploadSize in .streamlit/config.toml.")
if uploaded is None:
    st.stop()

model_dir = data.settings().model_dir
try:
    service = data.scoring_service(model_dir)
except Exception:
    log.exception("model could not be loaded from %s", model_dir)
    st.error(f"The model could not be loaded from {model_dir}. Train or publish one (`readmit train`), or set "
             "READMIT_MODEL_DIR.")
    st.stop()

with st.spinner("Checking and scoring…"):
    try:
        result = upload.score_upload(service, uploaded.getvalue(), uploaded.name,
                                        warehouse=status.root if status.usable else None)
    except UserError as error:  # a file we cannot read at all: one clear line
        st.error(f"This file cannot be read: {error}")
        st.stop()
    except Exception:
        log.exception("scoring an upload failed")
        friendly_error("the scored file")
        st.stop()

scored = len(result.predictions)
bad_rows = result.errors["row"].dropna().nunique() if not result.errors.empty else 0
a, b = st.columns(2)
a.metric("Rows scored", f"{scored:,}")
b.metric("Rows with problems", f"{bad_rows:,}")
if not result.errors.empty:
    st.subheader("Problems found")
    st.markdown(upload.problem_summary(result.errors))
    st.dataframe(result.errors, hide_index=True, width="stretch", key="up_errors",
                 column_config={"row": st.column_config.NumberColumn("Row", help="1 = first data row under the header"),
                                "column": "Column", "problem": st.column_config.TextColumn("Problem", width="large")})
if scored:
    st.subheader("Scored discharges, highest risk first")
    shown = [c for c in ("rank", "patient_id", "encounter_id", "risk", "risk_tier", "risk_percentile", "reason_1",
                         "reason_2", "reason_3", "problem") if c in result.predictions.columns]
    view = result.predictions[shown].copy()
    if "risk" in view:
        view["risk"] = (view["risk"] * 100).round(1)
    if "risk_tier" in view:
        view["risk_tier"] = view["risk_tier"].map(band)
    st.dataframe(view, hide_index=True, width="stretch", key="up_scored",
                 column_config={"rank": "#", "patient_id": "Patient", "encounter_id": "Encounter",
                                "risk": st.column_config.NumberColumn("Risk", format="%.1f%%"), "risk_tier": "Risk band",
                                "risk_percentile": st.column_config.NumberColumn("Percentile", format="%.0f"),
                                "reason_1": "Reason 1", "reason_2": "Reason 2",
                                "reason_3": "Reason 3", "problem": "Not scored because"})
    st.download_button("Download the scored rows (CSV)", data=safe_csv(result.predictions),
                       file_name="scored_discharges.csv", mime="text/csv", key="up_download", on_click="ignore")

# --- adding the valid rows to the worklist ----------------------------------------------------------------------
if scored:
    st.subheader("Add to the worklist")
    st.markdown("Store the valid rows, scored with their reasons, in the operational database: discharges in the "
                "follow-up window join the Worklist, and each opens on the Patient page. Rows with problems are never "
                "stored; a discharge added before (same source and encounter id) is left as it was.")
    if st.button("Add these discharges to the worklist", type="primary", key="up_add"):
        try:
            with st.spinner("Storing and scoring…"):
                added = upload.add_to_worklist(data.engine(), service, uploaded.getvalue(), uploaded.name,
                                               by=viewer.user, warehouse=status.root if status.usable else None)
        except UserError as error:
            st.error(f"This file cannot be added: {error}")
        except Exception:
            log.exception("adding an upload to the worklist failed")
            friendly_error("the worklist update")
        else:
            before = ("was added before and is left as it was" if added.already == 1
                      else "were added before and are left as they were")
            parts = [f"Added {count_words(added.added, 'discharge')} to the worklist"] if added.added else []
            if added.already:
                parts.append(f"{count_words(added.already, 'valid discharge')} {before}")
            invalid = added.errors["row"].dropna().nunique()
            if invalid:
                parts.append(f"{count_words(invalid, 'row')} with problems {'was' if invalid == 1 else 'were'} not stored")
            st.success(("" if added.added else "Nothing new to add: ") + "; ".join(parts) + ".")
            st.page_link("pages/1_Worklist.py", label="Open the worklist", icon=":material/arrow_forward:")
