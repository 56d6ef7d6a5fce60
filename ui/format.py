"""Small display helpers shared by the pages (text, not colour, carries every meaning)."""
from __future__ import annotations

import math
from typing import Any

import streamlit as st

from serving.worklist import TIER_MEANING

TIER_ICONS = {"Very high": "▲▲", "High": "▲", "Medium": "●", "Low": "▽"}


def pct(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not available"
    return f"{value * 100:.{digits}f}%"


def tier_label(tier: Any) -> str:
    if not tier:
        return "not scored"
    return f"{TIER_ICONS.get(tier, '')} {TIER_MEANING.get(tier, tier)}".strip()


def synthetic_banner(status) -> None:
    if status.synthetic:
        st.info("**Demo data.** Every patient here is synthetic (generated, not real). "
                "Scores illustrate the product only.", icon=":material/info:")


def friendly_error(what: str) -> None:
    """One calm sentence instead of a stack trace (details stay in the server log)."""
    st.error(f"Sorry, {what} could not be shown. The details were written to the server log; "
             "please try again or contact support.")
