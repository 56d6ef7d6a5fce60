"""Today's worklist: the open follow-up work as of a date, today's call list, and the replayed PPV.

The day's list (`window_rows`, then `build_day_list`) for an as-of date D and a follow-up window of W days:
- candidates: every discharge (warehouse encounters and uploaded discharges) on D or the W - 1 days
  before it, one row per patient: the patient's latest such discharge;
- handled, with the reason: died in hospital, discharged to hospice, readmitted (an admission after the
  discharge, up to the end of D), outreach closed (the latest event has a closing status), not scored;
- open: the rest, ranked by risk, highest first (ties: the later discharge, then the encounter id);
- today's call list: the first `capacity` open patients. "Flagged" means exactly that, on every screen.

Outreach statuses are the latest recorded, whatever D (a look-back shows today's statuses).

PPV and sensitivity for a capacity come from replaying the same policy day by day over past discharges
(`replay_policy`, pure): each day, the top N of that day's open list are called and leave the list.

Every query goes through DuckDB with bound parameters: user input (filters, search text, ids) is never
formatted into SQL.

The package: `index` (the warehouse rows), `day` (the day's list, filters, pages, search), `call_list`
(CSV and storage), `replay` (replayed PPV and sensitivity). Import from `serving.worklist`.
"""
from __future__ import annotations

from serving.worklist.call_list import (
    CALL_LIST_COLUMNS,
    StoredCallList,
    call_list_csv,
    call_list_frame,
    store_call_list,
    stored_call_lists,
)
from serving.worklist.day import (
    DEFAULT_PAGE_SIZE,
    FILTER_LABELS,
    DayList,
    SearchResult,
    WorklistFilters,
    WorklistPage,
    apply_filters,
    build_day_list,
    count_words,
    current_of,
    default_as_of,
    handled_reasons,
    hiding_filters,
    history_text,
    id_examples,
    page_of,
    percent,
    position,
    search,
    today_in,
)
from serving.worklist.index import (
    FILTER_COLUMNS,
    RISK_TIERS,
    ROW_COLUMNS,
    WorklistIndex,
    empty_rows,
    encounter_keys,
    filter_options,
    window_rows,
)
from serving.worklist.replay import (
    OUTCOME_DAYS,
    REPLAY_DAYS,
    CapacityResult,
    ReplayResult,
    capacity_result,
    capacity_tradeoff,
    replay_days,
    replay_discharges,
    replay_policy,
)

__all__ = [
    "RISK_TIERS",
    "ROW_COLUMNS",
    "FILTER_COLUMNS",
    "filter_options",
    "empty_rows",
    "WorklistIndex",
    "window_rows",
    "encounter_keys",
    "DEFAULT_PAGE_SIZE",
    "FILTER_LABELS",
    "count_words",
    "today_in",
    "default_as_of",
    "WorklistFilters",
    "DayList",
    "handled_reasons",
    "current_of",
    "history_text",
    "build_day_list",
    "apply_filters",
    "hiding_filters",
    "WorklistPage",
    "page_of",
    "SearchResult",
    "search",
    "id_examples",
    "position",
    "percent",
    "CALL_LIST_COLUMNS",
    "call_list_frame",
    "call_list_csv",
    "StoredCallList",
    "store_call_list",
    "stored_call_lists",
    "REPLAY_DAYS",
    "OUTCOME_DAYS",
    "ReplayResult",
    "replay_policy",
    "replay_days",
    "replay_discharges",
    "CapacityResult",
    "capacity_tradeoff",
    "capacity_result",
]
