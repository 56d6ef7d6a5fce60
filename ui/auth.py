"""The sign-in gate and the idle timeout.

Rules (docs/dashboard.md):
- an identity provider is configured when `.streamlit/secrets.toml` has an `[auth]` section; then
  every page requires `st.login` (OIDC), whatever the data;
- without one, synthetic demo data may be browsed without sign-in, and real data is refused with
  instructions;
- a signed-in session ends after `READMIT_IDLE_MINUTES` (default 15) without interaction: the next
  interaction, or the minute timer, signs the user out with `st.logout`.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import streamlit as st

from core.config import Settings

DEMO_USER = "demo (not signed in)"
LAST_ACTIVITY = "_readmit_last_activity"
ENDED_NOTE = "_readmit_session_ended"


@dataclass(frozen=True)
class Viewer:
    user: str
    signed_in: bool
    demo: bool


def idle_limit_seconds() -> float:
    """`READMIT_IDLE_MINUTES` (core.config.Settings, read on every run) in seconds."""
    return Settings().idle_minutes * 60


def auth_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:
        return False


def _logged_in() -> bool:
    try:
        return bool(st.user.get("is_logged_in", False))
    except Exception:
        return False


def _identity() -> str:
    for claim in ("email", "preferred_username", "sub", "name"):
        value = st.user.get(claim)
        if value:
            return str(value)
    return "unknown user"


def _idle_expired() -> bool:
    last = st.session_state.get(LAST_ACTIVITY)
    return last is not None and time.time() - last > idle_limit_seconds()


def touch() -> None:
    st.session_state[LAST_ACTIVITY] = time.time()


HOW_TO_CONFIGURE = """
This warehouse holds **real patient data**, and no identity provider is configured, so no patient
data is shown.

To configure sign-in, create `.streamlit/secrets.toml` next to `app.py` with your OpenID Connect
provider (see docs/dashboard.md):

```toml
[auth]
redirect_uri = "https://your-host/oauth2callback"
cookie_secret = "a long random string"
client_id = "..."
client_secret = "..."
server_metadata_url = "https://your-idp/.well-known/openid-configuration"
```

Then restart the app. To look around with fake data instead, run `readmit demo`.
"""


def gate(status) -> Viewer:
    """Decide who is looking and stop the page unless they may see it."""
    if _logged_in():
        if _idle_expired():
            st.session_state.pop(LAST_ACTIVITY, None)
            st.logout()
            st.stop()
        touch()
        return Viewer(_identity(), True, bool(status.synthetic))
    if auth_configured():
        st.title("Readmission risk")
        if st.session_state.pop(ENDED_NOTE, False):
            st.info("You were signed out after 15 minutes without activity.")
        st.write("Sign in to see the patient worklist.")
        if st.button("Sign in", type="primary", key="sign_in"):
            st.login()
        st.stop()
    if status.synthetic or not status.usable:
        if _idle_expired():
            st.info("Your session was idle for 15 minutes; the view was reset.")
            for key in list(st.session_state.keys()):
                del st.session_state[key]
        touch()
        return Viewer(DEMO_USER, False, True)
    st.title("Sign-in required")
    st.error("Patient data is hidden: sign-in is not configured.")
    st.markdown(HOW_TO_CONFIGURE)
    st.stop()


@st.fragment(run_every=60)
def idle_watch() -> None:
    """Once a minute in the browser: if the signed-in session has been idle too long, rerun the whole
    app so the gate signs the user out (the fragment's own reruns do not count as activity)."""
    if _logged_in() and _idle_expired():
        st.rerun(scope="app")


def sidebar(viewer: Viewer, status) -> None:
    with st.sidebar:
        if viewer.signed_in:
            st.caption(f"Signed in as **{viewer.user}**")
            if st.button("Sign out", key="sign_out"):
                st.logout()
        elif viewer.demo:
            st.caption("Demo mode: synthetic data, no sign-in.")
        st.caption(f"Sessions end after {idle_limit_seconds() / 60:g} minutes without activity.")
