"""core.validation and core.sources.discharges: pure pandas, no Spark."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from core.errors import RowError
from core.schema import template_columns, template_example_row
from core.sources.discharges import derive_labels, parse_discharges
from core.validation import ColumnRule, check_header, parse_list, rules_from_fields, validate_frame

FIXTURES = Path(__file__).parent / "fixtures" / "etl"


def _frame(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns, dtype=object)


def test_header_names_missing_and_unknown_columns():
    rules = (ColumnRule("a", required=True), ColumnRule("b"))
    assert check_header(["b", "zz"], rules, known=["a", "b"]) == [
        RowError(None, "a", "required column is missing"), RowError(None, "zz", "unknown column")]


def test_cell_errors_name_row_and_column_in_row_order():
    rules = (ColumnRule("n", "int", bounds=(0, 10)), ColumnRule("s", allowed=("x", "y"), nullable=False),
             ColumnRule("t", "timestamp"), ColumnRule("b", "bool"))
    raw = _frame(n=["1", "1.5", "11", ""], s=["x", "z", "y", " "], t=["2024-01-02", "", "soon", "2024-01-02T10:00:00"],
                 b=["true", "no", "maybe", ""])
    assert validate_frame(raw, rules) == [
        RowError(2, "n", "'1.5' is not a valid whole number"),
        RowError(2, "s", "'z' is not one of: x, y"),
        RowError(3, "b", "'maybe' is not a valid true/false value"),
        RowError(3, "n", "11 is outside the plausible range 0 to 10"),
        RowError(3, "t", "'soon' is not a valid date-time (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)"),
        RowError(4, "s", "a value is required"),
    ]


def test_missing_tokens_are_missing_not_wrong_and_bounds_optional():
    rules = (ColumnRule("n", "int", bounds=(0, 10)),)
    raw = _frame(n=["?", "99"])
    assert validate_frame(raw, rules, missing_tokens=("?",), check_bounds=False) == []
    assert [e.row for e in validate_frame(raw, rules, missing_tokens=("?",))] == [2]
    assert [e.row for e in validate_frame(raw, rules)] == [1, 2]  # '?' is not a number for the template


def test_non_utf8_text_is_reported_with_first_row_offset():
    raw = pd.DataFrame({"name": ["ok", "caf\ufffd"]}, index=[10, 11])
    assert validate_frame(raw, (), first_row=11) == [RowError(12, "name", "text is not valid UTF-8")]


def test_list_cells_keep_positions():
    assert parse_list("428.0;;V45.81") == ["428.0", None, "V45.81"]


def test_template_example_row_is_valid():
    raw = pd.DataFrame([template_example_row()], dtype=object)
    canonical, errors = parse_discharges(raw)
    assert errors == []
    assert canonical.loc[0, "diagnoses"] == ["428.0", "250.02", "401.9"]
    assert canonical.loc[0, "medication_changes"] == ["insulin:up", "metformin:steady"]
    assert bool(canonical.loc[0, "eligible"]) and canonical.loc[0, "source"] == "discharges"
    assert list(raw.columns) == template_columns()


def _discharges() -> pd.DataFrame:
    return pd.read_csv(FIXTURES / "discharges_dates.csv", dtype=str, keep_default_na=False)


def test_labels_from_dates_day_29_30_count_31_does_not_death_is_unknown():
    canonical, errors = parse_discharges(_discharges())
    assert errors == []
    labels = dict(zip(canonical["encounter_id"], canonical["readmitted_30d"]))
    # E1 -> E2 after 29 days, E2 -> E3 after 30 days, E3 -> E4 after 31 days; E4 died in hospital.
    assert labels["E1"] is True and labels["E2"] is True and labels["E3"] is False
    assert labels["E4"] is None
    reason = dict(zip(canonical["encounter_id"], canonical["ineligible_reason"]))
    assert reason["E4"] == "died" and reason["E1"] is None
    # No later admission: observed 91 days past discharge -> False; only 11 days -> unknown.
    assert labels["E5"] is False and labels["E6"] is None
    # A planned (elective) admission 5 days later is not a readmission.
    assert labels["E7"] is False


def test_a_given_label_wins_over_dates():
    raw = _discharges()
    raw.loc[raw["encounter_id"] == "E3", "readmitted_30d"] = "true"
    canonical, _ = parse_discharges(raw)
    assert canonical.set_index("encounter_id").loc["E3", "readmitted_30d"] is True


def test_stay_length_from_dates_when_blank():
    canonical, _ = parse_discharges(_discharges())
    assert canonical.set_index("encounter_id").loc["E5", "length_of_stay_days"] == pytest.approx(2.0)


def test_bad_rows_are_reported_and_left_out_good_rows_kept():
    raw = _discharges()
    raw.loc[1, "num_procedures"] = "x"
    raw.loc[4, "encounter_id"] = "E1"
    canonical, errors = parse_discharges(raw)
    assert [e.as_text("up.csv") for e in errors] == [
        "up.csv, row 2, column 'num_procedures': 'x' is not a valid whole number",
        "up.csv, row 5, column 'encounter_id': duplicate encounter_id 'E1'"]
    assert sorted(canonical["encounter_id"]) == ["E1", "E3", "E4", "E6", "E7", "E8"]


def test_header_problem_returns_no_rows():
    canonical, errors = parse_discharges(_discharges().drop(columns=["diagnoses"]))
    assert canonical.empty and errors == [RowError(None, "diagnoses", "required column is missing")]


def test_rules_follow_the_canonical_fields():
    rules = {r.name: r for r in rules_from_fields()}
    assert "encounter_seq" not in rules and rules["patient_id"].required and not rules["patient_id"].nullable
    assert rules["age_years"].bounds == (0, 120)


def test_derive_labels_on_empty_frame():
    empty, _ = parse_discharges(_discharges().iloc[0:0])
    assert derive_labels(empty).empty
