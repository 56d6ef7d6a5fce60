"""Small display helpers shared by the pages (text, not colour, carries every meaning).

Risk tiers are risk bands, never call instructions: who is called is decided by today's call list alone
("Flagged" = on today's call list), so a band's words cannot contradict the list.
"""
from __future__ import annotations

import math
from typing import Any

import streamlit as st

from serving.worklist import count_words

TIER_ICONS = {"Very high": "▲▲", "High": "▲", "Medium": "●", "Low": "▽"}


def pct(value: Any, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "not available"
    return f"{value * 100:.{digits}f}%"


def band(tier: Any) -> str:
    """'▲ High': the band with its symbol (for tables and filters)."""
    if not tier or (isinstance(tier, float) and math.isnan(tier)):
        return "not scored"
    return f"{TIER_ICONS.get(tier, '')} {tier}".strip()


def tier_label(tier: Any) -> str:
    """'▲ Risk band: High'."""
    if not tier or (isinstance(tier, float) and math.isnan(tier)):
        return "not scored"
    return f"{TIER_ICONS.get(tier, '')} Risk band: {tier}".strip()


def days_since(days: int) -> str:
    """'discharged today', '1 day since discharge', '12 days since discharge'."""
    return "discharged today" if days == 0 else f"{count_words(days, 'day')} since discharge"


def call_list_text(day, position) -> str:
    """Where a discharge stands on the day's list, in one sentence (the same words as the Worklist)."""
    when = f"{day.as_of:%Y-%m-%d}"
    if position is None:
        return (f"**Not on the worklist for {when}**: this is not the patient's latest discharge in the "
                f"{count_words(day.window_days, 'day')} before that date.")
    if not position["open"]:
        return f"**Handled** on the worklist for {when}: {position['reason']}."
    if position["flagged"]:
        return (f"**On the call list for {when}**: rank {position['rank']} of "
                f"{count_words(len(day.call_list), 'patient')} to call.")
    return (f"**Not on the call list for {when}**: rank {position['rank']} of "
            f"{count_words(len(day.open), 'open patient')}; the list holds the highest-risk "
            f"{count_words(day.capacity, 'patient')}.")


def synthetic_banner(status) -> None:
    if status.synthetic:
        st.info("**Demo data.** Every patient here is synthetic (generated, not real). "
                "Scores illustrate the product only.", icon=":material/info:")


def friendly_error(what: str) -> None:
    """One calm sentence instead of a stack trace (details stay in the server log)."""
    st.error(f"Sorry, {what} could not be shown. The details were written to the server log; "
             "please try again or contact support.")
