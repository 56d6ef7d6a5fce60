"""The Upload page: the discharges template, and scoring an uploaded file."""
from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from core.errors import UserError
from core.schema import template_columns, template_example_row
from core.spreadsheet import safe_csv


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
