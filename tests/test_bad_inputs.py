"""The bad inputs a tester found, as regression tests: the API and the upload refuse each with the same
message naming the same field; nothing is a 500; malformed files lose only their bad rows; wide
headers are refused at once; every CSV the product writes is formula-safe."""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from test_api import EXAMPLE, KEY_A, StandInScorer, auth

from api.main import create_app
from api.security import ApiSettings
from core.errors import RowError, UserError
from core.intake import read_input_file, to_canonical_rows
from core.schema import ENCOUNTER_FIELDS, LIST_SEPARATOR, template_columns
from core.sources.discharges import parse_discharges
from core.spreadsheet import safe_csv
from serving.upload import template_csv

DATE = "must be a date from 1900-01-01 to tomorrow"
NOT_FINITE = "must be a finite number"

# name -> (field, API value, CSV cell, message); a value of None means "as the JSON text of the cell"
CASES: dict[str, tuple[str, Any, str, str]] = {
    "NaN": ("age_years", float("nan"), "nan", NOT_FINITE),
    "Infinity": ("length_of_stay_days", float("inf"), "inf", NOT_FINITE),
    "1e309": ("age_years", 1e309, "1e309", NOT_FINITE),
    "before 1677-09-21": ("admit_time", "1677-09-20T00:00:00", "1677-09-20T00:00:00", DATE),
    "after 2262-04-11": ("discharge_time", "2262-04-12T00:00:00", "2262-04-12T00:00:00", DATE),
    "discharged in 2099": ("discharge_time", "2099-06-01T10:00:00", "2099-06-01T10:00:00", DATE),
    "NUL in an id": ("encounter_id", "E\x00X", "E\x00X", "must not contain control characters (such as NUL or a line break)"),
    "blank id": ("patient_id", "   ", "   ", "a value is required"),
    "1 MB patient id": ("patient_id", "P" * 1_000_000, "P" * 1_000_000, "must be at most 64 characters"),
    "3.9 MB diagnosis code": ("diagnoses", ["4" * 3_900_000], "4" * 3_900_000, "item 1 must be at most 16 characters"),
    "age band [0-10) at 83": ("age_band", "[0-10)", "[0-10)", "must include age_years"),
    "365-day stay, 5-day dates": ("length_of_stay_days", 365, "365", "must match admit_time to discharge_time within a day"),
    "ICD-10 with ICD-9 codes": ("icd_version", 10, "10", "must match the diagnosis codes (item 1 is an ICD-9 code)"),
    "discharge before admission": ("discharge_time", "2026-11-19T00:00:00", "2026-11-19T00:00:00",
                                   "must not be before admit_time"),
}


@pytest.fixture(scope="module")
def client():
    app = create_app(ApiSettings(key=KEY_A), scorer_loader=lambda _d: StandInScorer())
    with TestClient(app) as c:
        yield c


def post(client, path: str, body: Any) -> Any:
    """POST a body as JSON text that may hold NaN, Infinity or a lone surrogate (as a client can send)."""
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content, headers={**auth(), "Content-Type": "application/json"})


def template_row(**cells: str) -> dict[str, str]:
    row = {name: ("" if value is None else LIST_SEPARATOR.join(value) if isinstance(value, list) else
                  str(value).lower() if isinstance(value, bool) else str(value)) for name, value in EXAMPLE.items()}
    return {name: row.get(name, "") for name in template_columns()} | cells


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    lines = [",".join(template_columns())] + [",".join(row[name] for name in template_columns()) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def upload_errors(path: Path) -> tuple[pd.DataFrame, list[RowError]]:
    return to_canonical_rows(*read_input_file(path))


@pytest.mark.parametrize("name", CASES)
def test_the_api_and_the_upload_refuse_alike(client, tmp_path, name):
    field, value, cell, message = CASES[name]
    response = post(client, "/predict", {**EXAMPLE, field: value})
    assert response.status_code == 422, response.text[:300]
    assert {"type": response.json()["detail"][0]["type"], "loc": ["body", field], "msg": message} \
        in response.json()["detail"]
    canonical, errors = upload_errors(write_csv(tmp_path / "up.csv", [template_row(**{field: cell}),
                                                                    template_row(encounter_id="E2")]))
    assert RowError(1, field, message) in errors
    assert list(canonical["encounter_id"]) == ["E2"]  # the good row goes on


def test_a_lone_surrogate_is_refused_alike(client):
    response = post(client, "/predict", {**EXAMPLE, "patient_id": "P\ud800"})
    message = "must be valid unicode text (it contains a lone surrogate)"
    assert response.status_code == 422 and response.json()["detail"][0]["msg"] == message
    _, errors = parse_discharges(pd.DataFrame([template_row(patient_id="P\ud800")], dtype=object))
    assert errors == [RowError(1, "patient_id", message)]


def test_a_batch_names_the_encounter_and_field(client):
    bad = {**EXAMPLE, "encounter_id": "E2", "age_years": float("nan")}
    response = post(client, "/predict/batch", {"encounters": [EXAMPLE, bad]})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "encounters", 1, "age_years"]


# --- ~200 hand-made bad requests: not one 500 ------------------------------------------------------

BAD_VALUES: tuple[Any, ...] = (float("nan"), float("inf"), float("-inf"), 1e309, 10 ** 30, -1, "", "x" * 70_000,
                               "\ud800", "a\x00b", [], {}, [None], [1], "1677-01-01T00:00:00",
                               "9999-12-31T23:59:59-14:00")


def bad_requests() -> Iterator[tuple[str, bytes]]:
    """(path, body) pairs: each canonical field given half of BAD_VALUES (wrong kinds, out of range,
    unclean text; a few are fine for some fields, such as "" for a free-text field), and malformed
    bodies, spread over the three scoring routes."""
    paths = ("/predict", "/explain", "/predict/batch")
    fields = [f.name for f in ENCOUNTER_FIELDS if not f.derived]
    number = 0
    for field in fields:
        for value in BAD_VALUES[number % 2::2]:
            path = paths[number % 3]
            record = {**EXAMPLE, field: value}
            body = {"encounters": [record]} if path == "/predict/batch" else record
            yield path, json.dumps(body).encode("utf-8", "surrogatepass")
            number += 1
    for body in (b"", b"{", b"null", b"[]", b'{"encounters": 5}', b'"text"', b"\xff\xfe", b"NaN",
                 b'{"age_years": 1' + b"0" * 5000 + b"}", json.dumps({**EXAMPLE, "\ud800": 1}).encode()):
        for path in paths:
            yield path, body


def test_two_hundred_bad_requests_never_get_a_500(client):
    statuses = pd.Series([post(client, path, body).status_code for path, body in bad_requests()])
    print(f"{len(statuses)} bad requests: statuses {statuses.value_counts().to_dict()}")
    assert len(statuses) >= 200 and (statuses < 500).all()
    assert statuses.between(400, 499).mean() > 0.9


# --- files --------------------------------------------------------------------------------------------

def test_malformed_rows_are_reported_by_row_and_the_others_kept(tmp_path):
    good = [",".join(template_row(encounter_id=f"E{i}")[n] for n in template_columns()) for i in range(6)]
    lines = [",".join(template_columns()), good[0], good[1] + ",extra", good[2].replace("P000123", '"P000123'),
             good[3].replace("P000123", '"P0"00123"'), "", good[4], "P9,E9", good[5]]
    (tmp_path / "m.csv").write_text("\n".join(lines) + "\n")
    canonical, errors = upload_errors(tmp_path / "m.csv")
    width = len(template_columns())
    assert [e.as_text() for e in errors] == [
        f"row 2: the row has {width + 1} cells; the header has {width}",
        "row 3: the row is not valid CSV (unexpected end of data)",
        "row 4: the row is not valid CSV (',' expected after '\"')",
        f"row 6: the row has 2 cells; the header has {width}"]
    assert list(canonical["encounter_id"]) == ["E0", "E4", "E5"]


def test_a_missing_required_column_is_named(tmp_path):
    row = template_row()
    columns = [c for c in template_columns() if c != "sex"]
    (tmp_path / "no_sex.csv").write_text(",".join(columns) + "\n" + ",".join(row[c] for c in columns) + "\n")
    canonical, errors = upload_errors(tmp_path / "no_sex.csv")
    assert canonical.empty and errors == [RowError(None, None, "required column 'sex' is missing")]


@pytest.mark.parametrize("columns", [100_000, 1_000_000])
def test_wide_headers_are_refused_before_parsing(tmp_path, columns):
    path = tmp_path / "wide.csv"
    path.write_bytes(b",".join(b"c%d" % i for i in range(columns)) + b"\n" + b"1," * (columns - 1) + b"1\n")
    started = time.perf_counter()
    with pytest.raises(UserError, match=f"the header has {columns:,} columns; at most 500"):
        read_input_file(path)
    assert time.perf_counter() - started < 2.0


def test_every_csv_is_formula_safe():
    frame = pd.DataFrame({"encounter_id": ["=1+2", "+1", "-2", "@SUM(A1)", "\tx", "\rx", "ok"],
                          "risk": [-0.5, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6], "count": [-1, 2, 3, 4, 5, 6, 7]})
    text = safe_csv(frame).decode()
    assert text.splitlines()[1:4] == ["'=1+2,-0.5,-1", "'+1,0.1,2", "'-2,0.2,3"]  # negative numbers stay numbers
    assert "'@SUM(A1)" in text and "'\tx" in text and "'\rx" in text
    assert template_csv().decode().splitlines()[0] == ",".join(template_columns())


def test_a_file_without_its_header_row_is_refused_without_showing_its_first_row(tmp_path):
    row = template_row(patient_id="PFIRSTROW1", encounter_id="EFIRSTROW1")
    (tmp_path / "no_header.csv").write_text("\n".join(",".join(row[c] for c in template_columns()) for _ in range(2)))
    with pytest.raises(UserError, match="unrecognised header") as refused:
        read_input_file(tmp_path / "no_header.csv")
    assert "FIRSTROW" not in str(refused.value)
