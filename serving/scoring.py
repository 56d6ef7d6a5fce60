"""One scoring service for the CLI, the API and the dashboard: a row gets the same score everywhere.

    service = ScoringService.load("models/champion")          # load once, share (immutable)
    predictions = service.score_encounters(canonical_df)      # canonical encounters -> predictions
    predictions, errors = service.score_file("upload.csv")    # Diabetes 130 CSV or discharges template

Steps, identical for every caller:
1. patient history: `core.features.build_features` over the input's encounters plus, when a warehouse
   is given, the same patients' other encounters from its `encounters` table (one parameterized DuckDB
   query); rows are emitted for input encounters only;
2. ineligible encounters (died, hospice) get no risk and say why; encounters with impossible values
   (outside `core.schema` bounds) get no risk and name the problem;
3. the per-batch pipeline of `models.batch_scoring.BatchScorer.score`, the same code the Spark job
   (`etl.score`) runs: encoding with the model's fitted preprocessing (`core.encoding.encode`: unknown
   categories as in training), one forward pass, calibration, tier and percentile from the predictor,
   optionally explanations (`models.explain.two_sided_shapley`: grouped Shapley values, no random
   numbers, so an encounter gets the same numbers in every path) and plain-language reasons
   (`core.reasons`).

A service loaded with `warehouse=W` takes every call's patient history from W unless the call names
another: the API and the dashboard then see the same features as `readmit score --warehouse W`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from core import reasons as reason_text
from core.config import get_settings
from core.encoding import EncodedBatch, Preprocessing, encode
from core.errors import RowError, UserError
from core.features import build_features, first_stay_features
from core.intake import canonical_frame, impossible_values, read_input_file, to_canonical_rows, warehouse_history
from core.predictions import PREDICTION_COLUMNS
from core.schema import ENCOUNTER_FIELDS, INELIGIBLE_DISPOSITIONS
from core.validation import bounds_message
from models.batch_scoring import SCORE_COLUMNS, BatchScorer, not_scored_reason
from models.explain import FIELD_GROUPS
from models.explain_background import Background


@dataclass(frozen=True)
class ScoringService:
    """The scoring steps (`models.batch_scoring.BatchScorer`: encode -> risk -> tier and percentile ->
    attributions -> reasons, the code the Spark job runs) plus what only a service does: patient history,
    eligibility and impossible values, files. Build once (`load`), share freely across threads: the scorer
    runs one model call at a time and mutates nothing but a memo of numbers that are the same whether
    remembered or computed again."""
    scorer: BatchScorer
    model_dir: Optional[str] = None
    warehouse: Optional[str] = None                       # default patient-history source of every call

    # --- construction ---------------------------------------------------------------------
    @classmethod
    def load(cls, model_dir: str | Path, explain: bool = True, threads: Optional[int] = None,
             warehouse: Optional[str] = None) -> "ScoringService":
        """Load a model folder (`BatchScorer.load`: manifest checked, background from the folder)."""
        scorer = BatchScorer.load(model_dir, explain=explain, threads=threads or get_settings().torch_threads)
        return cls(scorer=scorer, model_dir=str(Path(model_dir)), warehouse=None if warehouse is None else str(warehouse))

    @classmethod
    def from_predictor(cls, predictor: Any, model_dir: Optional[str | Path] = None, explain: bool = True,
                       background: Optional[Background] = None, warehouse: Optional[str] = None
                       ) -> "ScoringService":
        """A service around a loaded predictor (`BatchScorer.from_predictor` chooses the background)."""
        scorer = BatchScorer.from_predictor(predictor, model_dir, explain=explain, background=background)
        return cls(scorer=scorer, model_dir=None if model_dir is None else str(model_dir),
                   warehouse=None if warehouse is None else str(warehouse))

    # --- the scorer's state, for callers and reports -----------------------------------------
    @property
    def background(self) -> Optional[Background]:
        """The explanation background (None: loaded without explanations)."""
        return self.scorer.background

    @property
    def background_risk(self) -> Optional[np.ndarray]:
        return self.scorer.background_risk

    @property
    def background_source(self) -> str:
        return self.scorer.background_source

    @property
    def model_version(self) -> str:
        return self.scorer.model_version

    @property
    def preprocessing(self) -> Preprocessing:
        return self.scorer.preprocessing

    def risk(self, batch: EncodedBatch) -> np.ndarray:
        """Calibrated risk: the number every caller shows (a row's risk does not depend on its batch)."""
        return self.scorer.risk(batch)

    # --- encounters -----------------------------------------------------------------------
    def features_for(self, encounters: pd.DataFrame, warehouse: Optional[str] = None) -> pd.DataFrame:
        """Feature rows of the input encounters (input order), history from the input and the warehouse
        (`warehouse`, else the service's)."""
        warehouse = warehouse or self.warehouse
        frame = canonical_frame(encounters)
        history = warehouse_history(warehouse, frame) if warehouse else None
        combined = frame if history is None or history.empty else pd.concat([history, frame], ignore_index=True)
        features = build_features(combined)
        features = features.drop_duplicates("encounter_id", keep="last").set_index("encounter_id", drop=False)
        return features.loc[frame["encounter_id"].tolist()].reset_index(drop=True)

    def score_encounters(self, encounters: pd.DataFrame, explain: bool = True, top_reasons: int = 3,
                         warehouse: Optional[str] = None) -> pd.DataFrame:
        """Canonical encounters -> one prediction row each, in input order (see PREDICTION_COLUMNS);
        patient history from `warehouse`, else the service's warehouse."""
        return self.score_encounters_with_features(encounters, explain, top_reasons, warehouse)[0]

    def score_encounters_with_features(self, encounters: pd.DataFrame, explain: bool = True, top_reasons: int = 3,
                                       warehouse: Optional[str] = None
                                       ) -> tuple[pd.DataFrame, Optional[pd.DataFrame]]:
        """`score_encounters` plus the feature rows the model saw (`features_for`, input order; None for no
        input), so a caller that logs them need not build them again."""
        frame = canonical_frame(encounters)
        features = self.features_for(frame, warehouse) if len(frame) else None
        return self._predictions(frame, features, explain, top_reasons), features

    def _predictions(self, frame: pd.DataFrame, features: Optional[pd.DataFrame], explain: bool,
                     top_reasons: int) -> pd.DataFrame:
        """Prediction rows of canonical encounters whose feature rows (`features_for`) are given."""
        n = len(frame)
        out = pd.DataFrame({"encounter_id": frame["encounter_id"].astype(str).to_numpy(),
                            "patient_id": frame["patient_id"].astype(str).to_numpy()})
        for column in PREDICTION_COLUMNS[2:]:
            out[column] = None
        out["model_version"] = self.model_version
        if n == 0:
            return _typed_predictions(out)
        eligible = features["eligible"].astype(bool).to_numpy()
        reason = frame["ineligible_reason"].astype(object).where(frame["ineligible_reason"].notna(), None).to_numpy()
        problems = impossible_values(frame)
        scorable = eligible & np.array([p is None for p in problems])
        out["eligible"] = eligible
        out["ineligible_reason"] = reason
        out["problem"] = problems
        out["reason_1"] = [not_scored_reason(e, r, p) for e, r, p in zip(eligible, reason, problems)]
        rows = np.flatnonzero(scorable)
        if len(rows) == 0:
            return _typed_predictions(out)
        scored = self.scorer.score(features.iloc[rows], explain=explain, top_reasons=top_reasons)
        for column in SCORE_COLUMNS:
            values = out[column].to_numpy(dtype=object)
            values[rows] = scored[column].to_numpy(dtype=object)
            out[column] = values
        if explain and self.scorer.base_risk is not None:
            out["base_risk"] = self.scorer.base_risk   # unscored rows too, as the Spark job writes them
        return _typed_predictions(out)

    def explain_one(self, encounters: pd.DataFrame, warehouse: Optional[str] = None) -> dict[str, Any]:
        """The last encounter's risk, base risk, reasons and every group's attribution with its sentence: the
        numbers and reasons `score_encounters` stores for it (same method, no random numbers), plus its whole
        prediction row (`prediction`). `encounters` may hold the patient's earlier encounters first, for
        history."""
        if self.background is None:
            raise UserError("explanations are not available for this model (loaded without explanations)")
        frame = canonical_frame(encounters)
        all_features = self.features_for(frame, warehouse)
        row = self._predictions(frame, all_features, explain=True, top_reasons=3).iloc[-1]
        features = all_features.iloc[-1].to_dict()
        attributions = json.loads(row["attributions"]) if row["attributions"] else {}
        reasons = [row[f"reason_{k}"] for k in (1, 2, 3) if isinstance(row[f"reason_{k}"], str)]
        return {"encounter_id": row["encounter_id"], "risk": row["risk"], "base_risk": row["base_risk"],
                "reasons": reasons, "prediction": row.to_dict(),
                "groups": [{"group": g, "label": lbl, "points": attributions.get(g),
                            "sentence": reason_text.sentence(g, features, attributions.get(g, 0.0))}
                           for g, lbl in ((grp.name, grp.label) for grp in FIELD_GROUPS)]}

    # --- independent records (the API's fast path) ----------------------------------------------
    def score_records(self, records: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Prediction rows (PREDICTION_COLUMNS, no reasons) of canonical records, each scored from its own
        record only: what `score_encounters` gives each record scored alone without a warehouse.

        The path for many small calls: features and encoding with numpy on the records themselves
        (`core.features.first_stay_features`, no DataFrame), then one model call. Records of one
        patient do not see each other, so any records can share a call. Reasons come from
        `score_encounters(explain=True)` or `explain_one`. A service that reads patient history from a
        warehouse refuses: its records are not independent."""
        return self.score_records_with_features(records)[0]

    def score_records_with_features(self, records: Sequence[Mapping[str, Any]]
                                    ) -> tuple[list[dict[str, Any]], list[int], dict[str, np.ndarray]]:
        """`score_records` plus what the model saw: the positions (in `records`) of the records it scored
        and their feature columns (`first_stay_features`, one value per scored record, in that order).
        Ineligible records and records with impossible values are not scored, so have no features here."""
        if self.warehouse is not None:
            raise UserError("score_records uses no patient history; this service reads it from a warehouse")
        out = [_unscored_row(record, self.model_version) for record in records]
        rows = [i for i, row in enumerate(out) if row["eligible"] and row["problem"] is None]
        if not rows:
            return out, rows, {}
        features = first_stay_features([records[i] for i in rows])
        risk = self.risk(encode(features, self.preprocessing))
        for i, value, tier, percentile in zip(rows, risk, *self.scorer.grade(risk)):
            out[i].update(risk=float(value), risk_tier=tier, risk_percentile=float(percentile))
        return out, rows, features

    # --- files ----------------------------------------------------------------------------
    def score_file(self, path: str | Path, fmt: Optional[str] = None, explain: bool = True,
                   warehouse: Optional[str] = None, include_invalid: bool = False
                   ) -> tuple[pd.DataFrame, list[RowError]]:
        """Score a Diabetes 130 CSV or a discharges-template CSV.

        Returns (predictions, row errors). Predictions cover every valid row in file order; with
        `include_invalid` also the invalid rows, in their place, with no risk and the problem named.
        The file as a whole is refused (UserError, one line) when it is empty, header-only, not UTF-8
        text, not CSV or of an unknown format.
        """
        raw, detected = read_input_file(path, fmt)
        canonical, errors = to_canonical_rows(raw, detected)
        header_errors = [e for e in errors if not e.row]
        if header_errors and canonical.empty:
            raise UserError(f"{path}: " + "; ".join(e.as_text() for e in header_errors[:5]))
        predictions = self.score_encounters(canonical, explain=explain, warehouse=warehouse)
        if include_invalid:
            predictions = _with_invalid_rows(predictions, raw, detected, errors)
        return predictions, errors


def _with_invalid_rows(predictions: pd.DataFrame, raw: pd.DataFrame, fmt: str,
                       errors: Sequence[RowError]) -> pd.DataFrame:
    """Predictions of the valid rows plus one unscored row per invalid row, in file order."""
    problems: dict[int, list[str]] = {}
    for error in errors:
        if error.row:
            problems.setdefault(error.row, []).append(
                f"{error.column}: {error.problem}" if error.column else error.problem)
    if not problems:
        return predictions
    id_column, patient_column = ("encounter_id", "patient_nbr") if fmt == "diabetes130" else \
        ("encounter_id", "patient_id")
    valid_rows = [i + 1 for i in range(len(raw)) if (i + 1) not in problems]
    valid = predictions.assign(_row=valid_rows[:len(predictions)])
    invalid_rows = sorted(problems)
    invalid = pd.DataFrame({
        "encounter_id": [str(raw[id_column].iloc[r - 1]).strip() if id_column in raw else "" for r in invalid_rows],
        "patient_id": [str(raw[patient_column].iloc[r - 1]).strip() if patient_column in raw else ""
                       for r in invalid_rows],
        "problem": ["; ".join(problems[r]) for r in invalid_rows],
        "reason_1": ["Not scored: invalid input (" + "; ".join(problems[r]) + ")" for r in invalid_rows],
        "model_version": predictions["model_version"].iloc[0] if len(predictions) else None,
        "_row": invalid_rows})
    combined = pd.concat([valid, invalid], ignore_index=True).sort_values("_row", kind="mergesort")
    return _typed_predictions(combined.drop(columns="_row").reset_index(drop=True))


# --- helpers -------------------------------------------------------------------------------

_BOUNDED = tuple(f for f in ENCOUNTER_FIELDS if f.bounds is not None and f.name != "icd_version")


def _unscored_row(record: Mapping[str, Any], model_version: str) -> dict[str, Any]:
    """One record's prediction row before the model: eligibility as `canonical_frame` derives it, the
    impossible values `impossible_values` names, and the "Not scored" reason `_predictions` gives."""
    derived = INELIGIBLE_DISPOSITIONS.get(record.get("discharge_disposition"))
    given = record.get("eligible")
    eligible = bool(given if given is not None else True) and derived is None
    reason = None if eligible else (record.get("ineligible_reason") or derived)
    problems = [f"{f.name} {bounds_message(f.bounds)}" for f in _BOUNDED
                if isinstance(value := record.get(f.name), (int, float)) and (value < f.bounds[0] or value > f.bounds[1])]
    problem = "; ".join(problems) or None
    row: dict[str, Any] = dict.fromkeys(PREDICTION_COLUMNS)
    row.update(encounter_id=str(record["encounter_id"]), patient_id=str(record["patient_id"]), risk=np.nan,
               risk_percentile=np.nan, model_version=model_version, eligible=eligible, ineligible_reason=reason,
               problem=problem)
    row["reason_1"] = not_scored_reason(eligible, reason, problem)
    return row


def _typed_predictions(out: pd.DataFrame) -> pd.DataFrame:
    out = out[list(PREDICTION_COLUMNS)].copy()
    for column in ("risk", "risk_percentile", "base_risk"):
        out[column] = pd.to_numeric(out[column], errors="coerce").astype("float64")
    out["eligible"] = out["eligible"].astype("boolean")
    return out
