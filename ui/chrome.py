"""What every page does first: page config, navigation, the sign-in gate, the idle watch.

Each page file calls `page(title)` on its first line, so a page reached by any URL is gated: there
is no router that could be bypassed. Navigation is drawn here (Streamlit's automatic list is off in
.streamlit/config.toml) so the names are exactly Home, Worklist, Patient, Upload, Model quality,
Hospitals and Monitoring."""
from __future__ import annotations

import streamlit as st

from ui import auth, data

NAVIGATION = (
    ("app.py", "Home", ":material/home:"),
    ("pages/1_Worklist.py", "Worklist", ":material/list:"),
    ("pages/2_Patient.py", "Patient", ":material/person:"),
    ("pages/3_Upload.py", "Upload", ":material/upload_file:"),
    ("pages/4_Model_quality.py", "Model quality", ":material/analytics:"),
    ("pages/5_Hospitals.py", "Hospitals", ":material/local_hospital:"),
    ("pages/6_Monitoring.py", "Monitoring", ":material/monitoring:"),
)


def page(title: str):
    """Set up the page and return (viewer, data status); stops the run when the viewer may not see it."""
    st.set_page_config(page_title=f"{title} · Readmission risk", page_icon=":material/local_hospital:",
                       layout="wide")
    with st.sidebar:
        for path, label, icon in NAVIGATION:
            st.page_link(path, label=label, icon=icon)
        st.divider()
    status = data.status()
    viewer = auth.gate(status)
    st.session_state["viewer"] = viewer
    auth.sidebar(viewer, status)
    auth.idle_watch()
    return viewer, status
