"""core.validation and core.sources.discharges: pure pandas, no Spark."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest

from core.errors import RowError
from core.schema import ENCOUNTER_FIELDS, FIELDS_BY_NAME, RULES_BY_NAME, template_columns, template_example_row
from core.sources.discharges import RULES, derive_labels, parse_discharges, rows_to_canonical
from core.validation import (
    ColumnRule,
    check_header,
    icd_shape_version,
    null_invalid_values,
    parse_list,
    parse_text,
    row_problems,
    rules_from_fields,
    validate_frame,
    value_problem,
)

FIXTURES = Path(__file__).parent / "fixtures" / "etl"


def _frame(**columns) -> pd.DataFrame:
    return pd.DataFrame(columns, dtype=object)


def test_header_names_missing_and_unknown_columns():
    rules = (ColumnRule("a", required=True), ColumnRule("b"))
    assert check_header(["b", "zz"], rules, known=["a", "b"]) == [
        RowError(None, None, "required column 'a' is missing"), RowError(None, None, "unknown column 'zz'")]


def test_cell_errors_name_row_and_column_in_row_order_never_the_value():
    rules = (ColumnRule("n", "int", bounds=(0, 10)), ColumnRule("s", allowed=("x", "y"), nullable=False),
             ColumnRule("t", "timestamp"), ColumnRule("b", "bool"))
    raw = _frame(n=["1", "1.5", "11", ""], s=["x", "z", "y", " "], t=["2024-01-02", "", "soon", "2024-01-02T10:00:00"],
                 b=["true", "no", "maybe", ""])
    assert validate_frame(raw, rules) == [
        RowError(2, "n", "must be a whole number"),
        RowError(2, "s", "must be one of: x, y"),
        RowError(3, "b", "must be true or false"),
        RowError(3, "n", "must be between 0 and 10"),
        RowError(3, "t", "must be a date-time (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS)"),
        RowError(4, "s", "a value is required"),
    ]


def test_missing_tokens_are_missing_not_wrong_and_bounds_optional():
    rules = (ColumnRule("n", "int", bounds=(0, 10)),)
    raw = _frame(n=["?", "99"])
    assert validate_frame(raw, rules, missing_tokens=("?",), check_bounds=False) == []
    assert [e.row for e in validate_frame(raw, rules, missing_tokens=("?",))] == [2]
    assert [e.row for e in validate_frame(raw, rules)] == [1, 2]  # '?' is not a number for the template


def test_unclean_text_is_reported_in_every_column_with_first_row_offset():
    raw = pd.DataFrame({"name": ["ok", "caf\ufffd", "a\x00b", "x\ud800"]}, index=[10, 11, 12, 13])
    assert [(e.row, e.problem) for e in validate_frame(raw, (), first_row=11)] == [
        (12, "must be valid UTF-8 text"), (13, "must not contain control characters (such as NUL or a line break)"),
        (14, "must be valid unicode text (it contains a lone surrogate)")]


def test_list_cells_keep_positions():
    assert parse_list("428.0;;V45.81") == ["428.0", None, "V45.81"]


@pytest.mark.parametrize("text", ["nan", "inf", "-Infinity", "1e309"])
def test_non_finite_numbers_parse_and_are_then_refused(text):
    value = parse_text("float", text)
    assert value_problem(RULES_BY_NAME["age_years"], value) == "must be a finite number"


def test_value_rules_for_text_lists_and_dates():
    ids, codes, discharge = RULES_BY_NAME["patient_id"], RULES_BY_NAME["diagnoses"], RULES_BY_NAME["discharge_time"]
    assert value_problem(ids, "P" * 64) is None and value_problem(ids, "P" * 65) == "must be at most 64 characters"
    assert value_problem(ids, "  ") == "a value is required" and value_problem(ids, None) == "a value is required"
    assert value_problem(codes, ["428.0", "x" * 17]) == "item 2 must be at most 16 characters"
    assert value_problem(codes, ["428.0"] * 51) == "must have at most 50 items"
    assert value_problem(codes, [None, "428.0"]) == "the first item (the principal diagnosis) is required"
    tomorrow = dt.datetime.combine(dt.date.today() + dt.timedelta(days=1), dt.time(23, 59))
    assert value_problem(discharge, tomorrow) is None
    for outside in (tomorrow + dt.timedelta(minutes=1), dt.datetime(1899, 12, 31), dt.datetime(1, 1, 1)):
        assert value_problem(discharge, outside) == "must be a date from 1900-01-01 to tomorrow"
    far_east = dt.datetime(9999, 12, 31, 23, 0, tzinfo=dt.timezone(dt.timedelta(hours=-14)))
    assert value_problem(discharge, far_east) == "must be a date from 1900-01-01 to tomorrow"  # no OverflowError
    assert value_problem(discharge, far_east, plausible=False) is None


def test_row_rules():
    admit, discharge = dt.datetime(2024, 1, 1, 8), dt.datetime(2024, 1, 5, 12)  # 4.17 days
    base = {"admit_time": admit, "discharge_time": discharge, "length_of_stay_days": 5, "age_years": 67,
            "age_band": "[60-70)", "icd_version": 9, "diagnoses": ["428.0", "V45.81", "E879.0"]}
    assert row_problems(base) == []
    assert row_problems({**base, "discharge_time": admit - dt.timedelta(hours=1)}) == [
        ("discharge_time", "must not be before admit_time")]
    assert row_problems({**base, "length_of_stay_days": 365}) == [
        ("length_of_stay_days", "must match admit_time to discharge_time within a day")]
    assert row_problems({**base, "length_of_stay_days": 3.2}) == []  # rounding: within a day
    assert row_problems({**base, "age_years": 83, "age_band": "[0-10)"}) == [("age_band", "must include age_years")]
    assert row_problems({**base, "age_years": 104, "age_band": "[90-100)"}) == []  # the last band is open-ended
    assert row_problems({**base, "icd_version": 10}) == [
        ("icd_version", "must match the diagnosis codes (item 1 is an ICD-9 code)")]
    assert row_problems({**base, "icd_version": 9, "diagnoses": ["V45.81", "I50.9"]}) == [
        ("icd_version", "must match the diagnosis codes (item 2 is an ICD-10 code)")]
    assert row_problems({"length_of_stay_days": 365}) == []  # a rule whose fields are missing does not apply


def test_icd_shapes():
    assert [icd_shape_version(c) for c in ("428.0", "4280", "250.02", "E879.0", "V57", "I50.9", "E11.65", "s72.001a",
                                           "V45.81", "free text")] == [9, 9, 9, 9, None, 10, 10, 10, None, None]


def test_icd_shapes_of_the_real_diabetes130_codes(diabetes_csv):
    raw = pd.read_csv(diabetes_csv, dtype=str, usecols=["diag_1", "diag_2", "diag_3"], keep_default_na=False)
    codes = set(raw.to_numpy().ravel()) - {"?"}
    assert {code for code in codes if icd_shape_version(code) == 10} == set()


def test_template_example_row_is_valid():
    raw = pd.DataFrame([template_example_row()], dtype=object)
    canonical, errors = parse_discharges(raw)
    assert errors == []
    assert canonical.loc[0, "diagnoses"] == ["428.0", "250.02", "401.9"]
    assert canonical.loc[0, "medication_changes"] == ["insulin:up", "metformin:steady"]
    assert bool(canonical.loc[0, "eligible"]) and canonical.loc[0, "source"] == "discharges"
    assert list(raw.columns) == template_columns()


def _discharges() -> pd.DataFrame:
    """The dates fixture. Its stay lengths (5 days for every stay) contradict its dates for E2, E3, E4
    and E8, which the stay-length rule refuses; the labels come from the dates, so they are blanked."""
    raw = pd.read_csv(FIXTURES / "discharges_dates.csv", dtype=str, keep_default_na=False)
    return raw.assign(length_of_stay_days="")


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
    raw.loc[6, "age_band"] = "[0-10)"  # E7, aged 67
    canonical, errors = parse_discharges(raw)
    assert [e.as_text("up.csv") for e in errors] == [
        "up.csv, row 2, column 'num_procedures': must be a whole number",
        "up.csv, row 5, column 'encounter_id': repeats the encounter_id of row 1",
        "up.csv, row 7, column 'age_band': must include age_years"]
    assert sorted(canonical["encounter_id"]) == ["E1", "E3", "E4", "E6", "E8"]


def test_a_subset_keeps_the_row_numbers_of_the_file():
    raw = _discharges()
    raw.loc[5, "num_procedures"] = "x"
    _, errors = parse_discharges(raw.drop(index=[1, 2]))
    assert [(e.row, e.column) for e in errors] == [(6, "num_procedures")]


def test_header_problem_returns_no_rows():
    canonical, errors = parse_discharges(_discharges().drop(columns=["diagnoses"]))
    assert canonical.empty and errors == [RowError(None, None, "required column 'diagnoses' is missing")]


def test_rules_follow_the_canonical_fields():
    rules = {r.name: r for r in rules_from_fields(ENCOUNTER_FIELDS)}
    assert "encounter_seq" not in rules and rules["patient_id"].required and not rules["patient_id"].nullable
    assert rules["age_years"].bounds == FIELDS_BY_NAME["age_years"].bounds == (0, 120)
    assert rules["patient_id"].max_length == 64 and rules["diagnoses"].max_length == 16


def test_derive_labels_on_empty_frame():
    empty, _ = parse_discharges(_discharges().iloc[0:0])
    assert derive_labels(empty).empty


def test_the_etl_nulls_what_uploads_refuse_and_keeps_the_encounter():
    raw = _discharges()
    raw.loc[0, "length_of_stay_days"] = "300"     # E1: 4 days by its dates
    raw.loc[1, "discharge_time"] = "1850-01-01T00:00:00"
    raw.loc[2, "payer"] = "M" * 65
    cleaned, nulled = null_invalid_values(rows_to_canonical(raw), RULES)
    assert nulled.sum()[lambda counts: counts > 0].to_dict() == {
        "discharge_time": 1, "length_of_stay_days": 1, "payer": 1}
    assert len(cleaned) == len(raw) and cleaned["length_of_stay_days"].isna().iloc[0]
    assert pd.isna(cleaned["discharge_time"].iloc[1]) and cleaned["payer"].iloc[2] is None
