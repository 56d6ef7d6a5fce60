"""PPV and sensitivity for a capacity, by replaying the policy ("call the top N open patients each day")
day by day over past discharges whose 30-day outcome is known (`replay_policy`, pure)."""
from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
import pandas as pd

from serving.worklist.day import count_words, percent
from serving.worklist.index import WorklistIndex

REPLAY_DAYS = 180
# The replay ends this many days before the as-of date, so that every discharge it ranks has had its
# 30 days: its outcome is known.
OUTCOME_DAYS = 31


@dataclass(frozen=True)
class ReplayResult:
    capacity: int
    window_days: int
    first_day: Optional[dt.date]
    last_day: Optional[dt.date]
    days: int
    called: int                 # called discharges with a known outcome (counted ones)
    called_readmitted: int
    outcomes: int               # discharges on the open list on some replayed day, with a known outcome
    readmitted: int
    test_split_only: bool = False

    @property
    def ppv(self) -> float:
        return self.called_readmitted / self.called if self.called else float("nan")

    @property
    def sensitivity(self) -> float:
        return self.called_readmitted / self.readmitted if self.readmitted else float("nan")

    @property
    def basis(self) -> str:
        """Where the numbers come from, in one or two sentences."""
        if not self.days:
            return "No past days to replay: PPV and sensitivity cannot be estimated yet."
        split = " (test split)" if self.test_split_only else ""
        verb = "was" if self.capacity == 1 else "were"
        return (f"Replayed over {count_words(self.days, 'past day')} ({self.first_day:%Y-%m-%d} to "
                f"{self.last_day:%Y-%m-%d}): each day the {count_words(self.capacity, 'highest-risk open patient')} "
                f"{verb} called and left the list. Outcomes used: {count_words(self.outcomes, 'discharge')} with a "
                f"known 30-day outcome{split}, {self.readmitted:,} of them readmitted; {self.called:,} called.")


def replay_policy(discharges: pd.DataFrame, days: Sequence[dt.date], capacity: int, window_days: int,
                  test_split_only: bool = False) -> ReplayResult:
    """Replay "call the top `capacity` open patients each day" over `days`. Pure.

    `discharges`: one row per discharge with `encounter_id`, `discharge_time`, `readmitted_at` (the next
    admission, NaT if none), `risk` (NaN: not scored, never listed), `y` (1 readmitted within 30 days,
    0 not, NaN unknown) and `counted` (True: its outcome enters the figures).
    Each day D, a discharge is open when discharged on D or the `window_days - 1` days before, not
    readmitted by the end of D, scored, and not called on an earlier day; the `capacity` open ones with the
    highest risk (ties: the later discharge, then the encounter id) are called. PPV: the share of called
    discharges readmitted within 30 days; sensitivity: the share of readmitted discharges (that were open
    on some replayed day) that were called.
    """
    capacity = max(1, int(capacity))
    days = sorted(days)
    if not days or discharges.empty:
        return ReplayResult(capacity, window_days, days[0] if days else None, days[-1] if days else None,
                            len(days), 0, 0, 0, 0, test_split_only)
    ordered = discharges.sort_values(["risk", "discharge_time", "encounter_id"], ascending=[False, False, True],
                                     kind="mergesort")
    day_number = np.datetime64("1970-01-01", "D")
    discharged = (pd.to_datetime(ordered["discharge_time"]).to_numpy(dtype="datetime64[D]") - day_number).astype(int)
    readmitted_at = pd.to_datetime(ordered["readmitted_at"]).to_numpy(dtype="datetime64[D]")
    never = np.iinfo(np.int64).max
    readmitted_day = np.where(np.isnat(readmitted_at), never, (readmitted_at - day_number).astype(np.int64))
    scored = ordered["risk"].notna().to_numpy()
    called = np.zeros(len(ordered), dtype=bool)
    listed = np.zeros(len(ordered), dtype=bool)
    for day in days:
        d = (np.datetime64(day, "D") - day_number).astype(int)
        open_now = scored & (discharged <= d) & (discharged > d - window_days) & (readmitted_day > d)
        listed |= open_now
        chosen = np.flatnonzero(open_now & ~called)[:capacity]
        called[chosen] = True
    y = ordered["y"].to_numpy(dtype=float)
    counted = ordered["counted"].to_numpy(dtype=bool) & ~np.isnan(y) & listed
    return ReplayResult(capacity, int(window_days), days[0], days[-1], len(days),
                        called=int((called & counted).sum()),
                        called_readmitted=int((called & counted & (y == 1)).sum()),
                        outcomes=int(counted.sum()), readmitted=int((counted & (y == 1)).sum()),
                        test_split_only=test_split_only)


def replay_days(index: WorklistIndex, as_of: dt.date, days: int = REPLAY_DAYS) -> list[dt.date]:
    """The past days to replay: up to `days` days ending OUTCOME_DAYS before `as_of`, none before the first
    discharge."""
    last = as_of - dt.timedelta(days=OUTCOME_DAYS)
    first = last - dt.timedelta(days=int(days) - 1)
    if index.first_discharge is not None:
        first = max(first, index.first_discharge)
    if index.first_discharge is None or last < first:
        return []
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def replay_discharges(index: WorklistIndex, first_day: dt.date, last_day: dt.date, window_days: int) -> pd.DataFrame:
    """The warehouse discharges a replay over [first_day, last_day] can list, in `replay_policy`'s columns.
    Counted: the test split when the features have one, else every discharge. `readmitted_at` counts only
    admissions up to the end of `last_day` (a later one cannot take a discharge off a replayed day's list),
    so that only the replayed span is read, not all history."""
    lo = dt.datetime.combine(first_day, dt.time()) - dt.timedelta(days=int(window_days))
    hi = dt.datetime.combine(last_day + dt.timedelta(days=1), dt.time())
    rows = index.query(
        "WITH span AS MATERIALIZED (SELECT patient_id, encounter_id, admit_time, discharge_time, risk, "
        "readmitted_30d, split, eligible FROM worklist WHERE (discharge_time >= ? AND discharge_time < ?) "
        "OR (admit_time >= ? AND admit_time < ?)) "
        "SELECT w.encounter_id, w.discharge_time, w.risk, w.readmitted_30d::DOUBLE AS y, w.split, "
        "(SELECT min(a.admit_time) FROM span a WHERE a.patient_id = w.patient_id AND a.admit_time >= ? "
        "AND a.admit_time < ? AND a.admit_time > w.discharge_time) AS readmitted_at "
        "FROM span w WHERE w.discharge_time >= ? AND w.discharge_time < ? AND w.eligible", [lo, hi] * 4)
    test_only = bool((rows["split"] == "test").any())
    rows["counted"] = (rows["split"] == "test") if test_only else True
    rows.attrs["test_split_only"] = test_only
    return rows


@dataclass(frozen=True)
class CapacityResult:
    """A capacity's replayed PPV and sensitivity, and the single risk cut-off that would call the same share
    of those past discharges (for threshold-based views such as the Model quality page)."""
    calls_per_day: int
    replay: ReplayResult
    threshold: float
    flagged_fraction: float

    @property
    def ppv(self) -> float:
        return self.replay.ppv

    @property
    def sensitivity(self) -> float:
        return self.replay.sensitivity

    @property
    def basis(self) -> str:
        if self.threshold != self.threshold:  # nan: nothing replayed
            return self.replay.basis
        return (f"{self.replay.basis} That is {self.flagged_fraction:.1%} of those discharges, the share a single "
                f"risk cut-off of {percent(self.threshold)} would call.")


def capacity_tradeoff(index: WorklistIndex, as_of: dt.date, window_days: int, capacity: int,
                      days: int = REPLAY_DAYS) -> CapacityResult:
    """PPV and sensitivity of calling `capacity` patients a day, replayed over the past days before `as_of`,
    with the equivalent single risk cut-off."""
    chosen = replay_days(index, as_of, days)
    discharges = replay_discharges(index, chosen[0], chosen[-1], window_days) if chosen else pd.DataFrame()
    return capacity_result(discharges, chosen, window_days, capacity)


def capacity_result(discharges: pd.DataFrame, days: Sequence[dt.date], window_days: int,
                    capacity: int) -> CapacityResult:
    """`capacity_tradeoff` from the replay's discharges (`replay_discharges`) and days (`replay_days`), so
    that a caller trying several capacities reads the discharges once. Pure."""
    if not days:
        return CapacityResult(int(capacity), replay_policy(pd.DataFrame(), [], capacity, window_days),
                              float("nan"), float("nan"))
    replay = replay_policy(discharges, days, capacity, window_days, discharges.attrs["test_split_only"])
    fraction = replay.called / replay.outcomes if replay.outcomes else float("nan")
    risks = discharges.loc[discharges["counted"] & discharges["y"].notna(), "risk"].dropna()
    threshold = float(risks.quantile(1 - fraction)) if len(risks) and fraction == fraction else float("nan")
    return CapacityResult(int(capacity), replay, threshold, fraction)
