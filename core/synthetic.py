"""Synthetic canonical encounters for demos and scale tests, fitted to aggregates of real data.

Every value is drawn from `core/data/synthetic_profile.json`: marginal and conditional frequencies
and a logistic readmission model estimated on Diabetes 130 by `scripts/fit_synthetic_profile.py`,
with every cell of fewer than 20 encounters suppressed or merged. No real row is ever used.

Determinism and chunking. A stay's random numbers are a hash of (seed, global candidate index,
stream name), never a sequential generator. Each block of `BLOCK_ROWS` output rows is simulated from
its own `CANDIDATE_ROWS` candidate stays (patients are runs of consecutive candidates; a patient never
crosses a block edge); the block's rows are its first `BLOCK_ROWS` candidates that happened before
`end`. So any row range is computed from the whole blocks that cover it and the union of chunks is the
same whatever the chunking. Chunks whose boundaries are multiples of `BLOCK_ROWS` also keep every
patient inside one chunk.

Time, stationary. Discharges lie in a `WINDOW_DAYS` window ending the day before `end` (a fixed default,
so that output never depends on the clock; pass today's date once, on the driver, for a live demo), at a
steady daily volume and case mix. A patient's first admission is uniform over the window widened
backwards by the patient's own span (first admission to last discharge): patients whose whole history
would lie before the window (the burn-in) are never emitted, the earlier stays of those who reach into
it are kept as their history (so `encounter_seq` and `days_since_last_discharge` are in steady state
on the window's first day, as derived from the data itself), and stays not yet discharged by `end`
are dropped. A stay drawn readmitted is never a patient's last (`_settled`): every readmission is in the
data. Scenario "drift" (`SCENARIOS`) changes the data from `drift_start(end)` on: see the `DRIFT_`
constants. A patient's stays are chained: discharge, gap, next admission. Whether a stay is readmitted is drawn
first from the fitted logistic model and the gap then follows it (1-29 days when readmitted, 32 days
or more when not; a readmission is an unplanned admission of known type). The label itself is then
derived from those dates by the project's one rule (`core.labels.labels_from_dates`), the data being
observed up to the day before `end`: a final stay has no readmission in the data, so it is "not
readmitted", or unknown (null) when discharged less than 30 days before that day. Death and hospice
are only drawn for final stays and make the stay ineligible.
"""
from __future__ import annotations

import datetime as dt
import os
from itertools import islice
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from core.labels import PLANNED_ADMISSION_TYPES, labels_from_dates
from core.schema import AGE_BANDS, COLUMNS, LIST_SEPARATOR, template_columns
from core.synthetic_profile import (
    AGE_GROUP_EDGES,
    INPATIENT_BUCKETS,
    STAY_BUCKETS,
    bucket,
    cell_key,
    load_profile,
    readmission_design,
    readmission_probability,
)
from core.synthetic_random import (
    draw,
    draw_by,
    make_ids,
    pick_weighted,
    truncated_exponential,
    uniforms,
)

SOURCE = "synthetic"
BLOCK_ROWS = 32
# Candidate stays simulated per block: a few are dropped (not yet discharged by `end`), so a block
# simulates twice what it emits; a block that still runs short (rare) simulates another round.
CANDIDATE_ROWS = 2 * BLOCK_ROWS
ROUND_STRIDE = 10**9             # candidate numbers of round r start at r * ROUND_STRIDE
SETTLE_ROUNDS = 5                # simulations until every drawn readmission is a stay in the data (`_settled`)
DEFAULT_END = dt.date(2026, 11, 28)
WINDOW_DAYS = 730
SCENARIOS = ("stable", "drift")
# The scenario of a call that names none. An environment variable so that `readmit demo` can turn the
# drift on through the Spark ETL (local Spark workers inherit it); every other caller passes `scenario`.
SCENARIO_VARIABLE = "READMIT_SYNTHETIC_SCENARIO"
# Scenario "drift", from `drift_start(end)` on (assumptions, chosen to be visible in a demo):
DRIFT_DAYS_BEFORE_END = 240      # the shift starts eight months before `end`
DRIFT_OLDER_WEIGHT = 2.0         # new patients: age bands from 70 on twice as frequent
DRIFT_EMERGENCY_SHARE = 0.5      # new patients: half of their other admissions become emergencies...
DRIFT_EMERGENCY_VISITS = 1       # ...and one more emergency visit in the year before each stay
DRIFT_READMISSION_LOGIT = 0.5    # every stay after the date: readmission log-odds up, unexplained by any field
DRIFT_EXTRA_DIAGNOSES = 3        # coding change, every discharge: three more diagnoses recorded...
MAX_DIAGNOSES = 16               # ...up to the most a claim can hold
# Gaps between a discharge and the next admission (assumptions: Diabetes 130 has no dates).
READMIT_GAP_DAYS = (1, 29)       # whole calendar days; times of day keep the float gap under 30
READMIT_GAP_SCALE_DAYS = 10.0    # early readmissions are the most frequent (truncated exponential)
LATER_GAP_MIN_DAYS = 32
LATER_GAP_SCALE_DAYS = 120.0
LATER_GAP_MAX_DAYS = 700
DISCHARGE_MINUTES = (9 * 60, 20 * 60)  # discharges happen between 09:00 and 20:00


# --- patients: runs of rows inside fixed blocks ---------------------------------------------------

def _stop_hazard(table: dict[str, Any]) -> np.ndarray:
    """hazard[k] = P(a patient has exactly k stays | at least k), stays capped at BLOCK_ROWS."""
    pmf = np.zeros(BLOCK_ROWS + 1)
    for value, count in zip(table["values"], table["counts"]):
        pmf[min(int(value), BLOCK_ROWS)] += count
    at_least = np.cumsum(pmf[::-1])[::-1]
    return np.divide(pmf, at_least, out=np.ones_like(pmf), where=at_least > 0)


def patient_starts(seed: int, candidates: np.ndarray, profile: dict[str, Any]) -> np.ndarray:
    """For every candidate of a [blocks, width] array of candidate numbers, whether a new patient starts
    there (the first candidate of a block always), flattened."""
    hazard = _stop_hazard(profile["encounters_per_patient"])
    blocks, width = candidates.shape
    u = uniforms(seed, candidates.ravel(), "patient_break").reshape(blocks, width)
    starts = np.zeros((blocks, width), dtype=bool)
    starts[:, 0] = True
    run = np.ones(blocks, dtype=np.int64)
    for position in range(1, width):
        starts[:, position] = u[:, position] < hazard[run]
        run = np.where(starts[:, position], 1, run + 1)
    return starts.ravel()


# --- the generator --------------------------------------------------------------------------------


def _medication_lists(seed: int, rows: np.ndarray, profile: dict[str, Any]) -> list[list[str]]:
    """Per row, the diabetes drugs given as drug:status (drugs drawn independently, "no" left out)."""
    labels, level_index, offset = [], [], 0
    for drug, table in profile["medications"].items():
        labels += [f"{drug}:{level}" for level in table["levels"]]
        level_index.append(offset + pick_weighted(uniforms(seed, rows, f"drug:{drug}"), table["counts"]))
        offset += len(table["levels"])
    chosen = np.column_stack(level_index)
    given = ~np.isin(chosen, [i for i, label in enumerate(labels) if label.endswith(":no")])
    items = iter(np.asarray(labels, dtype=object)[chosen[given]].tolist())  # row by row, in drug order
    return [list(islice(items, k)) for k in given.sum(axis=1).tolist()]


def _cells(tables: dict[str, dict[str, Any]], buckets: int) -> list[dict[str, Any]]:
    return [tables[str(k)] for k in range(buckets)]


def _prior_visits(u, position: np.ndarray, tables: dict[str, Any]) -> dict[str, np.ndarray]:
    """Visits in the year before: inpatient stays first, the other kinds given their bucket, from the
    tables of first stays or of later stays of a patient."""
    out = {}
    for history, rows in (("first", position == 0), ("later", position > 0)):
        table = tables[history]
        inpatient = draw(u("prior_inpatient_visits")[rows], table["prior_inpatient_visits"])
        cell = bucket(inpatient, INPATIENT_BUCKETS)
        drawn = {"prior_inpatient_visits": inpatient}
        for name in ("prior_emergency_visits", "prior_outpatient_visits"):
            drawn[name] = draw_by(u(name)[rows], cell, _cells(table[name], len(INPATIENT_BUCKETS)))
        for name, values in drawn.items():
            out.setdefault(name, np.zeros(len(position), dtype=np.int64))[rows] = values
    return out


def _admissions(u: np.ndarray, unplanned: np.ndarray, table: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Admission type and source, drawn jointly; a readmission (`unplanned`) is of a known, unplanned
    type, as the label rule counts only those (an unknown type would make its label unknown)."""
    types, sources = (np.array(side, dtype=object) for side in zip(*table["levels"]))
    counts = np.asarray(table["counts"])
    known_types = pd.Series(types)
    readmission_types = np.flatnonzero(known_types.notna() & ~known_types.isin(PLANNED_ADMISSION_TYPES))
    pair = np.where(unplanned, readmission_types[pick_weighted(u, counts[readmission_types])], pick_weighted(u, counts))
    return types[pair], sources[pair]


def _timeline(u, starts: np.ndarray, los: np.ndarray, readmitted: np.ndarray, end: dt.date,
              first_admit: Optional[np.ndarray] = None) -> tuple[np.ndarray, ...]:
    """Admission day, admission minute and discharge minute (since the epoch) of every stay, and the
    first admission day of every patient.

    A patient's stays are chained (admission, stay, gap that follows the label, next admission). The
    first admission is uniform over [window start - span, end - 1 day], span being the patient's first
    admission to last discharge: each stay then falls on any day of the window with the same chance,
    so the window sees a steady stream of stays at every position of a history (a stationary process).
    `first_admit` (one per patient) keeps the placement of an earlier pass.
    """
    patient = np.cumsum(starts) - 1
    first_index = np.flatnonzero(starts)[patient]
    is_last = np.append(starts[1:], True)
    gap_u = u("gap")
    gap = np.where(readmitted,
                   READMIT_GAP_DAYS[0] + np.floor(truncated_exponential(
                       gap_u, READMIT_GAP_SCALE_DAYS, READMIT_GAP_DAYS[1] - READMIT_GAP_DAYS[0] + 1)),
                   LATER_GAP_MIN_DAYS + np.floor(truncated_exponential(
                       gap_u, LATER_GAP_SCALE_DAYS, LATER_GAP_MAX_DAYS - LATER_GAP_MIN_DAYS))).astype(np.int64)
    advance = los + np.where(is_last, 0, gap)
    before = np.cumsum(advance) - advance
    admit_offset = before - before[first_index]          # days from the patient's first admission
    if first_admit is None:
        span = (admit_offset + los)[is_last]              # first admission to last discharge, per patient
        window_start = _day_number(end) - WINDOW_DAYS
        first_admit = window_start - span + np.floor(u("placement")[is_last] * (WINDOW_DAYS + span)).astype(np.int64)
    admit_day = first_admit[patient] + admit_offset
    admit_minute = admit_day * 1440 + np.floor(u("admit_minute") * 1440).astype(np.int64)
    discharge_minute = (admit_day + los) * 1440 + DISCHARGE_MINUTES[0] + np.floor(
        u("discharge_minute") * (DISCHARGE_MINUTES[1] - DISCHARGE_MINUTES[0])).astype(np.int64)
    return admit_day, admit_minute, discharge_minute, first_admit


def _day_number(day: dt.date) -> int:
    return int(np.datetime64(day, "D").astype(np.int64))


def window_start(end: dt.date = DEFAULT_END) -> dt.date:
    """First day of the window of discharges (earlier stays are only the history of later ones)."""
    return end - dt.timedelta(days=WINDOW_DAYS)


def drift_start(end: dt.date = DEFAULT_END) -> dt.date:
    """First day of the changes of scenario "drift"."""
    return end - dt.timedelta(days=DRIFT_DAYS_BEFORE_END)


# --- scenario "drift" ------------------------------------------------------------------------------

def _older(table: dict[str, Any]) -> dict[str, Any]:
    """The age band table with bands from 70 on `DRIFT_OLDER_WEIGHT` times as frequent."""
    weights = [DRIFT_OLDER_WEIGHT if int(level[1:level.index("-")]) >= 70 else 1.0 for level in table["levels"]]
    return {"levels": table["levels"], "counts": [c * w for c, w in zip(table["counts"], weights)]}


def _more_emergencies(u, shifted: np.ndarray, unplanned: np.ndarray, types: np.ndarray, sources: np.ndarray,
                      table: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Turn `DRIFT_EMERGENCY_SHARE` of the shifted rows' admissions into emergencies (type and source drawn
    together from the emergency pairs); a readmission keeps the pair drawn for it."""
    pair_types, pair_sources = (np.array(side, dtype=object) for side in zip(*table["levels"]))
    emergency = np.flatnonzero(pair_types == "emergency")
    pick = emergency[pick_weighted(u("drift_admission"), np.asarray(table["counts"])[emergency])]
    change = shifted & ~unplanned & (u("drift_emergency") < DRIFT_EMERGENCY_SHARE)
    return np.where(change, pair_types[pick], types), np.where(change, pair_sources[pick], sources)


def _raised(probability: np.ndarray, shifted: np.ndarray) -> np.ndarray:
    """Readmission probability with `DRIFT_READMISSION_LOGIT` added to the log-odds of the `shifted` stays."""
    logit = np.log(probability) - np.log1p(-probability)
    return np.where(shifted, 1.0 / (1.0 + np.exp(-(logit + DRIFT_READMISSION_LOGIT))), probability)


def _recoded(frame: pd.DataFrame, end: dt.date) -> pd.DataFrame:
    """The coding change: from `drift_start(end)` on, every discharge records more diagnoses."""
    after = (frame["discharge_time"] >= pd.Timestamp(drift_start(end))).to_numpy()
    counts = frame["number_diagnoses"].to_numpy(dtype=np.int64)
    frame["number_diagnoses"] = pd.array(np.where(after, np.minimum(counts + DRIFT_EXTRA_DIAGNOSES, MAX_DIAGNOSES),
                                                  counts), dtype="Int64")
    return frame


# --- the generator, block by block ---------------------------------------------------------------

def _stays(candidates: np.ndarray, starts: np.ndarray, seed: int, end: dt.date,
           shifted: Optional[np.ndarray] = None, first_admit: Optional[np.ndarray] = None,
           raised: Optional[np.ndarray] = None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Every candidate stay (flat candidate numbers, patients starting at `starts`), without encounter ids
    and labels, each patient's first admission day and whether each stay was drawn readmitted. For scenario
    "drift": `shifted` (one per patient) gives those patients the new case mix, `first_admit` keeps their
    placement, and `raised` (one per stay) raises those stays' readmission risk."""
    p = load_profile()
    rows = candidates
    n = len(rows)
    first_index = np.flatnonzero(starts)[np.cumsum(starts) - 1]   # index of the patient's first row
    position = np.arange(n) - first_index
    is_last = np.append(starts[1:], True)
    first_row = rows[first_index]
    shifted_row = np.zeros(n, dtype=bool) if shifted is None else shifted[np.cumsum(starts) - 1]

    def u(stream: str, per_patient: bool = False) -> np.ndarray:
        return uniforms(seed, first_row if per_patient else rows, stream)

    cat = p["categorical"]
    groups = cat["principal_group"]["levels"]
    group_index = pick_weighted(u("principal_group"), cat["principal_group"]["counts"])
    group = np.asarray(groups, dtype=object)[group_index]

    def by_group(stream: str, tables: dict[str, dict[str, Any]]) -> np.ndarray:
        return draw_by(u(stream), group_index, [tables[g] for g in groups])

    los = by_group("length_of_stay_days", p["length_of_stay_days"])
    stay_cell = group_index * len(STAY_BUCKETS) + bucket(los, STAY_BUCKETS)
    stay_keys = [cell_key(g, k) for g in groups for k in range(len(STAY_BUCKETS))]
    numeric = {name: draw_by(u(name), stay_cell, [tables[key] for key in stay_keys])
               for name, tables in p["stay_numeric"].items()}
    prior = _prior_visits(u, position, p["prior_visits"])
    prior["prior_emergency_visits"] = prior["prior_emergency_visits"] + DRIFT_EMERGENCY_VISITS * shifted_row
    n_codes = draw(u("diagnosis_count"), p["diagnosis_count"])
    diagnoses = np.column_stack([by_group(f"dx_{i}", p["codes"][f"dx_{i}"]) for i in (1, 2, 3)]).tolist()
    for i in np.flatnonzero(n_codes < 3):
        diagnoses[i] = diagnoses[i][:n_codes[i]]
    band_u = u("age_band", True)
    bands = np.where(shifted_row, draw(band_u, _older(cat["age_band"])), draw(band_u, cat["age_band"]))
    band_index = np.searchsorted(np.asarray(AGE_BANDS), bands.astype(str))
    first_age = band_index * 10 + np.floor(u("age_offset", True) * 10)
    age_group = bucket(first_age, AGE_GROUP_EDGES)
    disposition = np.where(
        is_last, draw_by(u("disposition"), age_group, _cells(p["disposition"]["last"], len(AGE_GROUP_EDGES))),
        draw_by(u("disposition"), age_group, _cells(p["disposition"]["not_last"], len(AGE_GROUP_EDGES))))
    medications = _medication_lists(seed, rows, p)

    frame = pd.DataFrame({
        "patient_id": make_ids("SP", first_row),
        "source": SOURCE,
        "encounter_seq": pd.array(position + 1, dtype="Int64"),
        "sex": draw(u("sex", True), cat["sex"]),
        "race": draw(u("race", True), cat["race"]),
        "discharge_disposition": disposition,
        "length_of_stay_days": los.astype(np.float64),
        "diagnoses": diagnoses,
        "icd_version": pd.array(np.full(n, 9), dtype="Int64"),
        "number_diagnoses": pd.array(np.maximum(numeric["number_diagnoses"], n_codes), dtype="Int64"),
        "num_procedures": pd.array(numeric["num_procedures"], dtype="Int64"),
        "num_lab_procedures": pd.array(numeric["num_lab_procedures"], dtype="Int64"),
        "num_medications": pd.array(numeric["num_medications"], dtype="Int64"),
        "medication_changes": medications,
        "diabetes_med": np.array([bool(m) for m in medications]),
        "a1c_result": draw(u("a1c_result"), cat["a1c_result"]),
        "glucose_result": draw(u("glucose_result"), cat["glucose_result"]),
        **{name: pd.array(values, dtype="Int64") for name, values in prior.items()},
        "payer": draw(u("payer", True), cat["payer"]),
        "admitting_specialty": draw(u("admitting_specialty"), cat["admitting_specialty"]),
    })
    frame["age_band"] = np.asarray(AGE_BANDS)[band_index]  # provisional, for the readmission model

    probability = readmission_probability(readmission_design(frame, pd.Series(group)), p["readmission"])
    readmitted = u("readmitted") < (probability if raised is None else _raised(probability, raised))

    follows_readmission = (position > 0) & np.roll(readmitted, 1)
    frame["admission_type"], frame["admission_source"] = _more_emergencies(
        u, shifted_row, follows_readmission, *_admissions(u("admission"), follows_readmission, p["admission"]),
        p["admission"])
    admit_day, admit_minute, discharge_minute, first_admit = _timeline(u, starts, los, readmitted, end,
                                                                       first_admit)
    previous_discharge = np.roll(discharge_minute, 1)
    frame["admit_time"] = admit_minute.astype("datetime64[m]").astype("datetime64[us]")
    frame["discharge_time"] = discharge_minute.astype("datetime64[m]").astype("datetime64[us]")
    frame["days_since_last_discharge"] = np.where(position > 0, (admit_minute - previous_discharge) / 1440.0, np.nan)

    age = np.minimum(first_age + np.floor((admit_day - admit_day[first_index]) / 365.25), 99)
    frame["age_years"] = age
    frame["age_band"] = np.asarray(AGE_BANDS)[(age // 10).astype(np.int64)]
    return frame, first_admit, readmitted


def _settled(candidates: np.ndarray, starts: np.ndarray, seed: int, end: dt.date,
             shifted_row: Optional[np.ndarray] = None, first_admit_row: Optional[np.ndarray] = None,
             raised: Optional[np.ndarray] = None) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """`_stays`, with every readmission in the data: a patient whose last stay is drawn readmitted goes on
    into the next candidate stay (the next patient's becomes its own), and the blocks where that happened
    are simulated again, until none is left (or `SETTLE_ROUNDS`; a block's last candidate has no next
    one). `shifted_row` and `first_admit_row` (per stay) carry a patient's scenario and placement into its
    new stays; a readmission takes the `raised` risk of the stay it follows. Returns the stays in candidate
    order, the patient starts and each stay's patient's first admission day."""
    starts, width = starts.copy(), CANDIDATE_ROWS
    placed = np.zeros(candidates.size, dtype=np.int64)
    todo, parts = np.arange(candidates.size // width), []
    for round_ in range(SETTLE_ROUNDS):
        rows = (todo[:, None] * width + np.arange(width)).ravel()
        firsts = np.flatnonzero(starts[rows])
        frame, first_admit, readmitted = _stays(
            candidates[rows], starts[rows], seed, end, None if shifted_row is None else shifted_row[rows][firsts],
            None if first_admit_row is None else first_admit_row[rows][firsts], None if raised is None else raised[rows])
        placed[rows] = first_admit[np.cumsum(starts[rows]) - 1]
        open_end = readmitted & np.append(starts[rows][1:], True) & (np.arange(rows.size) % width != width - 1)
        reopened = np.unique(rows[open_end] // width) if round_ < SETTLE_ROUNDS - 1 else np.array([], dtype=np.int64)
        frame["_block"] = np.repeat(todo, width)
        parts.append(frame[~np.isin(frame["_block"], reopened)])
        if not reopened.size:
            break
        starts[rows[open_end] + 1] = False
        if raised is not None:
            raised = raised.copy()
            raised[rows[open_end] + 1] = raised[rows[open_end]]
        if first_admit_row is not None:
            first_admit_row = first_admit_row.copy()
            first_admit_row[rows] = placed[rows]
        todo = reopened
    frame = pd.concat(parts, ignore_index=True).sort_values("_block", kind="mergesort")
    return frame.drop(columns="_block").reset_index(drop=True), starts, placed


def _candidate_stays(blocks: np.ndarray, round_: int, seed: int, end: dt.date, scenario: str) -> pd.DataFrame:
    """The candidate stays of one round of the given blocks that were discharged before `end`, in order,
    with their block (`_block`) and place among the block's candidates (`_order`)."""
    candidates = (round_ * ROUND_STRIDE + blocks[:, None] * CANDIDATE_ROWS
                  + np.arange(CANDIDATE_ROWS)[None, :]).astype(np.int64)
    flat = candidates.ravel()
    frame, starts, first_admit = _settled(flat, patient_starts(seed, candidates, load_profile()), seed, end)
    if scenario == "drift":  # again: new case mix for patients first admitted after the shift, more risk after it
        day = _day_number(drift_start(end))
        after = (frame["admit_time"] >= pd.Timestamp(drift_start(end))).to_numpy()
        frame, _, _ = _settled(flat, starts, seed, end, first_admit >= day, first_admit, after)
        frame = _recoded(frame, end)
    frame["_block"] = np.repeat(blocks, CANDIDATE_ROWS)
    frame["_order"] = round_ * CANDIDATE_ROWS + np.tile(np.arange(CANDIDATE_ROWS), len(blocks))
    return frame[(frame["discharge_time"] < pd.Timestamp(end)).to_numpy()]


def scenario_or_default(scenario: Optional[str] = None) -> str:
    """`scenario`, else `READMIT_SYNTHETIC_SCENARIO`, else "stable"; ValueError for an unknown one."""
    chosen = scenario or os.environ.get(SCENARIO_VARIABLE) or "stable"
    if chosen not in SCENARIOS:
        raise ValueError(f"unknown scenario {chosen!r} (choose from {', '.join(SCENARIOS)})")
    return chosen


def _generate_blocks(first_block: int, blocks: int, seed: int, end: dt.date, scenario: str = "stable") -> pd.DataFrame:
    """Canonical encounters of whole blocks: each block's first `BLOCK_ROWS` stays discharged before `end`
    among its candidates (a block short of them simulates more, round after round)."""
    numbers = np.arange(first_block, first_block + blocks, dtype=np.int64)
    parts = [_candidate_stays(numbers, 0, seed, end, scenario)]
    found = parts[0]["_block"].value_counts().reindex(numbers, fill_value=0)
    round_ = 1
    while (short := found.index[found < BLOCK_ROWS].to_numpy()).size:
        parts.append(_candidate_stays(short, round_, seed, end, scenario))
        found = found.add(parts[-1]["_block"].value_counts(), fill_value=0)
        round_ += 1
    frame = pd.concat(parts, ignore_index=True).sort_values(["_block", "_order"], kind="mergesort")
    frame = frame[(frame.groupby("_block").cumcount() < BLOCK_ROWS).to_numpy()].reset_index(drop=True)
    frame["encounter_id"] = make_ids("SE", first_block * BLOCK_ROWS + np.arange(len(frame), dtype=np.int64))
    frame = frame.drop(columns=["_block", "_order"])

    frame["readmitted_30d"] = None
    return labels_from_dates(frame, observed_until=pd.Timestamp(end) - pd.Timedelta(days=1))[list(COLUMNS)]


def generate_chunk(start_row: int, rows: int, seed: int, *, end: dt.date = DEFAULT_END,
                   scenario: Optional[str] = None) -> pd.DataFrame:
    """Canonical encounters for global rows [start_row, start_row + rows): identical for the same
    arguments (and scenario), and the same rows whatever the chunking. `scenario` is one of `SCENARIOS`
    (default: `scenario_or_default`)."""
    scenario = scenario_or_default(scenario)
    if start_row < 0 or rows < 0:
        raise ValueError(f"start_row and rows must be >= 0, got {start_row} and {rows}")
    if rows == 0:
        return _generate_blocks(0, 1, seed, end, scenario).iloc[:0].reset_index(drop=True)
    first_block = start_row // BLOCK_ROWS
    last_block = (start_row + rows - 1) // BLOCK_ROWS
    frame = _generate_blocks(first_block, last_block - first_block + 1, seed, end, scenario)
    offset = start_row - first_block * BLOCK_ROWS
    return frame.iloc[offset:offset + rows].reset_index(drop=True)


# --- the upload template --------------------------------------------------------------------------

def _csv_bool(values: pd.Series) -> pd.Series:
    return values.map({True: "true", False: "false"}).astype("object")


def to_template_frame(encounters: pd.DataFrame) -> pd.DataFrame:
    """Canonical encounters as upload-template text: lists joined, booleans true/false, ISO times."""
    out = encounters[template_columns()].copy()
    for name in ("admit_time", "discharge_time"):
        stamps = out[name].to_numpy(dtype="datetime64[s]")
        out[name] = np.where(np.isnat(stamps), "", np.datetime_as_string(stamps))
    for name in ("diagnoses", "medication_changes"):
        out[name] = [LIST_SEPARATOR.join(items) for items in out[name]]
    for name in ("diabetes_med", "readmitted_30d"):
        out[name] = _csv_bool(out[name])
    for name in ("age_years", "length_of_stay_days"):  # whole numbers here: written without ".0"
        out[name] = pd.array(out[name].round(), dtype="Int64")
    return out


def write_template_csv(path: str | Path, rows: int, seed: int, chunk_rows: int = 100_000,
                       *, end: dt.date = DEFAULT_END, scenario: Optional[str] = None) -> int:
    """Write `rows` synthetic discharges as an upload-template CSV, one chunk in memory at a time.
    Returns the number of rows written."""
    if chunk_rows <= 0:
        raise ValueError(f"chunk_rows must be positive, got {chunk_rows}")
    written = 0
    with open(path, "w", newline="", encoding="utf-8") as handle:
        handle.write(",".join(template_columns()) + "\n")
        for start in range(0, rows, chunk_rows):
            chunk = to_template_frame(generate_chunk(start, min(chunk_rows, rows - start), seed, end=end,
                                                     scenario=scenario))
            chunk.to_csv(handle, header=False, index=False)
            written += len(chunk)
    return written
