"""CMS HRRP adapter on the real FY 2024 and FY 2025 files, and on small hand-written files."""
from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from pyspark.testing import assertDataFrameEqual

from core import hospitals as H
from core.errors import UserError
from etl.sources import cms_hrrp

FY2024 = "FY_2024_Hospital_Readmissions_Reduction_Program_Hospital.csv"
FY2025 = "FY_2025_Hospital_Readmissions_Reduction_Program_Hospital.csv"
HEADER = ("Facility Name,Facility ID,State,Measure Name,Number of Discharges,Footnote,"
          "Excess Readmission Ratio,Predicted Readmission Rate,Expected Readmission Rate,"
          "Number of Readmissions,Start Date,End Date")


@pytest.fixture(scope="module")
def hospitals(spark, cms_dir):
    df = cms_hrrp.read(spark, str(cms_dir))
    return df, df.toPandas()


def raw_rows(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_schema_comes_from_core(hospitals):
    df, _ = hospitals
    assert [f.name for f in df.schema.fields] == list(H.COLUMNS)
    assert df.schema == cms_hrrp.hospitals_struct()


def test_row_counts_equal_csv_lines_and_fiscal_years(hospitals, cms_dir):
    _, pdf = hospitals
    for name, year, end in ((FY2024, 2024, dt.date(2022, 6, 30)), (FY2025, 2025, dt.date(2023, 6, 30))):
        data_lines = sum(1 for _ in (cms_dir / name).open(encoding="utf-8")) - 1
        rows = pdf[pdf.fiscal_year == year]
        assert len(rows) == data_lines == {2024: 18774, 2025: 18510}[year]
        assert set(rows.end_date) == {end} and end.year + H.FISCAL_YEAR_OFFSET == year
    assert len(pdf) == 18774 + 18510


def test_known_hospital_values(hospitals):
    _, pdf = hospitals
    rows = pdf[(pdf.facility_id == "010001")].set_index(["fiscal_year", "measure"])
    hf = rows.loc[(2024, "READM-30-HF-HRRP")]
    assert (hf.facility_name, hf.state, hf.measure_label) == ("SOUTHEAST HEALTH MEDICAL CENTER", "AL",
                                                              "Heart failure")
    assert (hf.discharges, hf.excess_readmission_ratio, hf.predicted_rate, hf.expected_rate,
            hf.readmissions) == (616, 1.1003, 23.1263, 21.0184, 149)
    assert (hf.start_date, hf.end_date, hf.too_few_to_report) == (dt.date(2019, 7, 1), dt.date(2022, 6, 30),
                                                                  False)
    knee = rows.loc[(2025, "READM-30-HIP-KNEE-HRRP")]
    assert knee.excess_readmission_ratio == 0.9654 and knee.too_few_to_report
    assert pd.isna(knee.discharges) and pd.isna(knee.readmissions)  # N/A, Too Few to Report -> null
    assert knee.start_date == dt.date(2020, 7, 1)


def test_not_available_and_too_few_are_null_never_zero(hospitals, cms_dir):
    _, pdf = hospitals
    raw = raw_rows(cms_dir / FY2024) + raw_rows(cms_dir / FY2025)
    for header, column, _ in cms_hrrp.NUMBER_COLUMNS:
        tokens = sum(r[header] in ("N/A", "Too Few to Report") for r in raw)
        zeros = sum(r[header] in ("0", "0.0", "0.0000") for r in raw)
        assert int(pdf[column].isna().sum()) == tokens, column
        assert int((pdf[column] == 0).sum()) == zeros, column
    too_few = sum(any(v == "Too Few to Report" for v in r.values()) for r in raw)
    assert int(pdf.too_few_to_report.sum()) == too_few == 4187 + 3806
    assert pdf.facility_id.str.len().eq(6).all() and pdf.facility_id.str.startswith("0").any()


def test_hand_written_file_without_year_in_name(spark, tmp_path):
    path = tmp_path / "hrrp.csv"
    path.write_text("\n".join([
        HEADER,
        '"GENERAL HOSPITAL, INC",050007,CA,READM-30-PN-HRRP,1234,,1.0123,18.5,18.2756,225,7/1/2021,6/30/2024',
        "SMALL HOSPITAL,010099,AL,READM-30-AMI-HRRP,N/A,1,N/A,N/A,N/A,Too Few to Report,7/1/2021,6/30/2024",
        "NEW HOSPITAL,670300,TX,READM-30-XYZ-HRRP,0,\"1, 5\",0.0,0.0,0.0,0,07/01/2021,06/30/2024",
    ]) + "\n")
    got = cms_hrrp.read(spark, str(path))
    start, end = dt.date(2021, 7, 1), dt.date(2024, 6, 30)
    expected = spark.createDataFrame([
        ("050007", "GENERAL HOSPITAL, INC", "CA", "READM-30-PN-HRRP", "Pneumonia", 2026, 1234, 1.0123, 18.5,
         18.2756, 225, False, start, end, None),
        ("010099", "SMALL HOSPITAL", "AL", "READM-30-AMI-HRRP", "Heart attack (acute myocardial infarction)",
         2026, None, None, None, None, None, True, start, end, "1"),
        ("670300", "NEW HOSPITAL", "TX", "READM-30-XYZ-HRRP", None, 2026, 0, 0.0, 0.0, 0.0, 0, False,
         start, end, "1, 5"),
    ], cms_hrrp.hospitals_struct())
    assertDataFrameEqual(got, expected)


def test_header_and_value_errors_name_the_file(spark, tmp_path):
    bad_header = tmp_path / "FY_2030_missing.csv"
    bad_header.write_text(HEADER.replace(",Excess Readmission Ratio", "") + "\n")
    with pytest.raises(UserError, match=r"FY_2030_missing\.csv: missing required column\(s\) "
                                        r"'Excess Readmission Ratio'"):
        cms_hrrp.read(spark, str(bad_header))
    bad_value = tmp_path / "FY_2030_value.csv"
    bad_value.write_text(HEADER + "\nX,010001,AL,READM-30-HF-HRRP,lots,,1.0,1.0,1.0,5,7/1/2025,6/30/2028\n")
    with pytest.raises(UserError, match=r"FY_2030_value\.csv: not a number or date in column "
                                        r"'Number of Discharges', facility 010001: 'lots'"):
        cms_hrrp.read(spark, str(bad_value))
    latin1 = tmp_path / "FY_2030_latin1.csv"
    latin1.write_bytes(HEADER.replace("Facility Name", "Facilit\xe9 Name").encode("latin-1") + b"\n")
    with pytest.raises(UserError, match=r"FY_2030_latin1\.csv: not a readable UTF-8 CSV file"):
        cms_hrrp.read(spark, str(latin1))
    empty = tmp_path / "FY_2030_empty.csv"
    empty.write_text("")
    with pytest.raises(UserError, match=r"FY_2030_empty\.csv: empty file"):
        cms_hrrp.read(spark, str(empty))
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no CMS HRRP CSV files"):
        cms_hrrp.read(spark, str(tmp_path / "empty"))


def test_fiscal_year_and_footnote_helpers():
    assert cms_hrrp.fiscal_year_from_name(FY2025) == 2025
    assert cms_hrrp.fiscal_year_from_name("hrrp.csv") is None
    assert H.footnote_text("1") == "The number of cases/patients is too few to report."
    assert H.footnote_text("") is None
    assert H.footnote_text("1, 99").endswith("CMS footnote 99.")
