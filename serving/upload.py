"""The Upload page: the discharges template, scoring an uploaded file, and adding its discharges to the worklist.

`score_upload` stores nothing. `add_to_worklist` stores the valid rows (uploaded_discharge, one per
(source, encounter id): the same file twice changes nothing) with their scores and reasons (uploaded_score);
`uploaded_rows` gives them to the worklist in its row columns. Invalid rows are never stored. The scores
of the stored rows also go to the prediction log (channel "upload", with the feature rows the model saw).
"""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np
import pandas as pd
from sqlalchemy import Engine, func, select
from sqlalchemy.exc import IntegrityError

from core import icd
from core.errors import UserError
from core.intake import canonical_frame, impossible_values, read_input_file, to_canonical_rows
from core.schema import COLUMNS, template_columns, template_example_row
from core.spreadsheet import safe_csv
from serving.database import session_scope
from serving.db_tables import SOURCE_LEN, USER_LEN, UploadedDischarge, UploadedScore
from serving.prediction_log import log_predictions, with_context
from serving.worklist import ROW_COLUMNS, empty_rows


@dataclass
class UploadResult:
    rows: int
    predictions: pd.DataFrame
    errors: pd.DataFrame             # row, column, problem


def template_csv() -> bytes:
    """The discharges template with its example row, formula-safe like every CSV the product writes."""
    return safe_csv(pd.DataFrame([template_example_row()], columns=template_columns()))


def score_upload(service, data: bytes, filename: str = "upload.csv", warehouse: Optional[str] = None) -> UploadResult:
    """Score an uploaded file with a loaded `core.scoring.ScoringService`. The bytes live in a private
    temporary file only while they are read, and are deleted afterwards: nothing is stored."""
    suffix = Path(filename).suffix.lower() or ".csv"
    fd, path = tempfile.mkstemp(prefix="readmit-upload-", suffix=suffix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        kwargs = {"warehouse": warehouse} if warehouse else {}
        try:
            predictions, errors = service.score_file(path, **kwargs)
        except UserError as error:  # name the user's file, not our temporary copy
            raise UserError(str(error).replace(path, Path(filename).name)) from None
    finally:
        os.unlink(path)
    error_rows = [{"row": getattr(e, "row", None), "column": getattr(e, "column", None),
                   "problem": getattr(e, "problem", str(e))} for e in (errors or [])]
    errors_df = pd.DataFrame(error_rows, columns=["row", "column", "problem"])
    predictions = predictions if predictions is not None else pd.DataFrame()
    if "risk" in predictions.columns:
        predictions = predictions.sort_values("risk", ascending=False, na_position="last").reset_index(drop=True)
        predictions.insert(0, "rank", np.arange(1, len(predictions) + 1))
    total = len(predictions) + len({e["row"] for e in error_rows if e["row"] is not None})
    return UploadResult(total, predictions, errors_df)


# --- adding uploaded discharges to the worklist ---------------------------------------------------------

KEYS_PER_QUERY = 400


@dataclass
class AddResult:
    added: int                 # discharges stored by this upload
    already: int               # valid rows stored before (same source and encounter id): left as they were
    errors: pd.DataFrame       # row, column, problem: the invalid rows, never stored


@contextmanager
def _private_copy(data: bytes, filename: str) -> Iterator[str]:
    """The bytes in a private temporary file while the block runs; errors name the user's file, not the copy."""
    fd, path = tempfile.mkstemp(prefix="readmit-upload-", suffix=Path(filename).suffix.lower() or ".csv")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        try:
            yield path
        except UserError as error:
            raise UserError(str(error).replace(path, Path(filename).name)) from None
    finally:
        os.unlink(path)


def valid_discharges(data: bytes, filename: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The file's valid rows as canonical encounters, and every invalid row (row, column, problem): rows the
    parser refuses and rows with values outside the schema's bounds."""
    with _private_copy(data, filename) as path:
        raw, fmt = read_input_file(path)
        canonical, errors = to_canonical_rows(raw, fmt)
        header_errors = [e for e in errors if not e.row]
        if header_errors and canonical.empty:
            raise UserError(f"{path}: " + "; ".join(e.as_text() for e in header_errors[:5]))
    bad_rows = {e.row for e in errors if e.row}
    file_rows = [i for i in range(1, len(raw) + 1) if i not in bad_rows][:len(canonical)]
    canonical = canonical_frame(canonical)
    problems = impossible_values(canonical)
    rows = [{"row": e.row, "column": e.column, "problem": e.problem} for e in errors]
    rows += [{"row": file_rows[i], "column": None, "problem": problem}
             for i, problem in enumerate(problems) if problem]
    keep = [problem is None for problem in problems]
    error_frame = pd.DataFrame(rows, columns=["row", "column", "problem"]).sort_values("row", kind="mergesort")
    return canonical[keep].reset_index(drop=True), error_frame.reset_index(drop=True)


def add_to_worklist(engine: Engine, service, data: bytes, filename: str, *, by: str,
                    warehouse: Optional[str] = None) -> AddResult:
    """Store the valid rows of an uploaded file, scored with reasons, for the worklist. A row whose
    (source, encounter id) is stored already is left as it was; only new rows are stored (scored with the
    whole file as history, plus the warehouse's stays of the same patients when `warehouse` is given)."""
    encounters, errors = valid_discharges(data, filename)
    new = encounters[~_stored(engine, encounters)]
    if new.empty:
        return AddResult(0, len(encounters), errors)
    predictions = service.score_encounters(encounters, explain=True, warehouse=warehouse)
    predictions = predictions.set_index("encounter_id", drop=False).loc[new["encounter_id"].astype(str)]
    try:
        _insert(engine, new, predictions, by, filename, str(service.model_version))
    except IntegrityError:  # someone stored some of these rows meanwhile: store the rest
        new = encounters[~_stored(engine, encounters)]
        predictions = predictions.loc[new["encounter_id"].astype(str)]
        _insert(engine, new, predictions, by, filename, str(service.model_version))
    if len(new):  # the stored rows' scores, as served, into the prediction log (channel "upload")
        features = with_context(service.features_for(encounters, warehouse), encounters)
        log_predictions(engine, "upload", predictions.reset_index(drop=True), features, str(service.model_version))
    return AddResult(len(new), len(encounters) - len(new), errors)


def _stored(engine: Engine, encounters: pd.DataFrame) -> np.ndarray:
    """Per row: is its (source, encounter id) stored already?"""
    keys = list(zip(encounters["source"].astype(str), encounters["encounter_id"].astype(str)))
    found: set[tuple[str, str]] = set()
    with session_scope(engine) as session:
        for source in sorted({source for source, _ in keys}):
            ids = [encounter for s, encounter in keys if s == source]
            for start in range(0, len(ids), KEYS_PER_QUERY):
                query = select(UploadedDischarge.encounter_id).where(
                    UploadedDischarge.source == source,
                    UploadedDischarge.encounter_id.in_(ids[start:start + KEYS_PER_QUERY]))
                found.update((source, encounter) for encounter in session.scalars(query))
    return np.array([key in found for key in keys], dtype=bool)


def _insert(engine: Engine, encounters: pd.DataFrame, predictions: pd.DataFrame, by: str, filename: str,
            model_version: str) -> None:
    """One transaction: the discharges (one batched INSERT), then their scores."""
    name = Path(filename).name[:USER_LEN]
    records = [_json_record(r) for r in encounters.to_dict("records")]
    discharges = [UploadedDischarge(source=str(record["source"])[:SOURCE_LEN], encounter_id=str(record["encounter_id"]),
                                    patient_id=str(record["patient_id"]), record=record, uploaded_by=by[:USER_LEN],
                                    upload_name=name) for record in records]
    with session_scope(engine) as session:
        session.add_all(discharges)
        session.flush()
        for discharge, prediction in zip(discharges, predictions.to_dict("records")):
            session.add(UploadedScore(
                uploaded_discharge_id=discharge.id, model_version=model_version[:128],
                risk=_number(prediction["risk"]), risk_tier=prediction["risk_tier"] or None,
                risk_percentile=_number(prediction["risk_percentile"]),
                reasons=[str(prediction[f"reason_{k}"]) for k in (1, 2, 3) if _text(prediction[f"reason_{k}"])],
                contributions={"base_risk": _number(prediction["base_risk"]),
                               "points": json.loads(prediction["attributions"]) if _text(prediction["attributions"])
                               else {}}))


def _number(value: Any) -> Optional[float]:
    return None if value is None or pd.isna(value) else float(value)


def _text(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, (list, tuple, np.ndarray)):
        return [str(v) for v in value]
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NaT:
        return None
    if isinstance(value, (pd.Timestamp, dt.datetime)):
        return pd.Timestamp(value).isoformat()
    if isinstance(value, np.generic):
        return value.item()
    return value


def _json_record(row: dict[str, Any]) -> dict[str, Any]:
    """A canonical encounter as JSON values: times as ISO text, lists of text, nulls as None."""
    return {name: _json_value(row.get(name)) for name in COLUMNS}


def latest_upload_id(engine: Engine) -> int:
    """The newest score id (0 when none): changes whenever discharges are added, so callers can key caches."""
    with session_scope(engine) as session:
        return int(session.scalar(select(func.max(UploadedScore.id))) or 0)


def uploaded_rows(engine: Engine) -> pd.DataFrame:
    """Every uploaded discharge with its latest score, in the worklist's row columns
    (`serving.worklist.ROW_COLUMNS`)."""
    newest = select(func.max(UploadedScore.id)).group_by(UploadedScore.uploaded_discharge_id)
    query = (select(UploadedDischarge, UploadedScore)
             .join(UploadedScore, UploadedScore.uploaded_discharge_id == UploadedDischarge.id)
             .where(UploadedScore.id.in_(newest)).order_by(UploadedDischarge.id))
    with session_scope(engine) as session:
        rows = [uploaded_row(discharge, score) for discharge, score in session.execute(query)]
    if not rows:
        return empty_rows()
    frame = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
    for column in ("admit_time", "discharge_time", "uploaded_at"):
        frame[column] = pd.to_datetime(frame[column]).astype("datetime64[us]")
    return frame


def uploaded_row(discharge: UploadedDischarge, score: Optional[UploadedScore]) -> dict[str, Any]:
    """One uploaded discharge as a worklist row (ROW_COLUMNS)."""
    record = discharge.record
    reasons = list(score.reasons) if score is not None else []
    codes = record.get("diagnoses") or []
    version = int(record.get("icd_version") or 9)
    return {
        "source": discharge.source, "encounter_id": discharge.encounter_id, "patient_id": discharge.patient_id,
        "admit_time": record.get("admit_time"), "discharge_time": record.get("discharge_time"),
        "risk": score.risk if score else None, "risk_tier": score.risk_tier if score else None,
        "risk_percentile": score.risk_percentile if score else None,
        **{f"reason_{k}": reasons[k - 1] if len(reasons) >= k else None for k in (1, 2, 3)},
        "eligible": record.get("eligible", True), "ineligible_reason": record.get("ineligible_reason"),
        "problem": None, "age_band": record.get("age_band"), "sex": record.get("sex"), "race": record.get("race"),
        "principal_group": icd.clinical_group(icd.normalize_code(codes[0], version), version) if codes else None,
        "discharge_disposition": record.get("discharge_disposition"), "payer": record.get("payer"),
        "length_of_stay_days": record.get("length_of_stay_days"), "readmitted_30d": record.get("readmitted_30d"),
        "split": None, "model_version": score.model_version if score else None,
        "uploaded_by": discharge.uploaded_by,
        "uploaded_at": discharge.uploaded_at.astimezone(dt.timezone.utc).replace(tzinfo=None),
        "upload_name": discharge.upload_name,
    }


def problem_summary(errors: pd.DataFrame, shown: int = 5) -> str:
    """The first problems as Markdown bullets a reader (and a screen reader) can read without the
    table: "Row 3, length_of_stay_days: must be at most 365"; the count of the rest after them."""
    lines = [f"- Row {int(e.row)}, {e.column}: {e.problem}" if pd.notna(e.row) and e.column else f"- {e.problem}"
             for e in errors.head(shown).itertuples()]
    if len(errors) > shown:
        rest = len(errors) - shown
        lines.append(f"- and {rest:,} more problem{'s' if rest != 1 else ''}, all in the table below")
    return "\n".join(lines)
