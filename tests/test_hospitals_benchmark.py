"""serving.hospitals: every missing ratio, median and count says its own reason (CMS footnote, the ETL's
too-few flag, a missing year), never a blanket "Too few to report"; the previous year's reason too."""
from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.hospitals import MEASURE_LABELS, arrow_schema
from core.warehouse import Warehouse, table_version_path, write_pointer
from serving import hospitals as H

AMI, HF, PN, COPD, CABG, HIP = ("READM-30-AMI-HRRP", "READM-30-HF-HRRP", "READM-30-PN-HRRP", "READM-30-COPD-HRRP",
                                "READM-30-CABG-HRRP", "READM-30-HIP-KNEE-HRRP")


def _row(facility: str, state: str, measure: str, year: int, err=None, discharges=None, too_few=False,
         footnote=None) -> dict:
    return {"facility_id": facility, "facility_name": f"Hospital {facility}", "state": state, "measure": measure,
            "measure_label": MEASURE_LABELS[measure], "fiscal_year": year, "discharges": discharges,
            "excess_readmission_ratio": err, "predicted_rate": None, "expected_rate": None, "readmissions": None,
            "too_few_to_report": too_few, "start_date": dt.date(year - 5, 7, 1), "end_date": dt.date(year - 2, 6, 30),
            "footnote": footnote}


# Hospital 000001 (state AA), one measure per case, as the ETL stores CMS's file:
#   AMI   FY2025 footnote 1 (ratio, discharges N/A)       FY2024 1.05, 300 discharges
#   HF    FY2025 1.10, discharges withheld, flagged        FY2024 footnote 5
#   PN    FY2025 footnote 5                                FY2024 footnote 7
#   COPD  FY2025 footnote 7, 0 discharges                  FY2024 flagged too few, no ratio, no footnote
#   CABG  FY2025 0.95 (no other AA hospital, so no state median)   FY2024 no row at all
#   HIP   FY2025 N/A without footnote or flag              FY2024 0.90
# Hospital 000002 (state AA) and 000003 (state BB) give the medians; no AA hospital has a PN ratio in FY2025.
ROWS = [
    _row("000001", "AA", AMI, 2025, footnote="1"), _row("000001", "AA", AMI, 2024, 1.05, 300),
    _row("000001", "AA", HF, 2025, 1.10, None, too_few=True), _row("000001", "AA", HF, 2024, footnote="5"),
    _row("000001", "AA", PN, 2025, footnote="5"), _row("000001", "AA", PN, 2024, footnote="7"),
    _row("000001", "AA", COPD, 2025, None, 0, footnote="7"), _row("000001", "AA", COPD, 2024, too_few=True),
    _row("000001", "AA", CABG, 2025, 0.95, 120),
    _row("000001", "AA", HIP, 2025), _row("000001", "AA", HIP, 2024, 0.90, 150),
    *[_row("000002", "AA", m, y, 1.0, 200) for m in (AMI, HF, COPD, HIP) for y in (2024, 2025)],
    _row("000002", "AA", PN, 2024, 1.0, 200), _row("000002", "AA", PN, 2025, footnote="5"),
    _row("000002", "AA", CABG, 2025, footnote="1"),
    *[_row("000003", "BB", m, y, 1.2, 200) for m in (AMI, HF, PN, COPD, CABG, HIP) for y in (2024, 2025)],
    _row("000004", "CC", HF, 2025, 0.98, 500),   # one fiscal year only
]


@pytest.fixture(scope="module")
def wh(tmp_path_factory) -> Warehouse:
    root = tmp_path_factory.mktemp("wh_hospitals")
    folder = Path(table_version_path(root, "hospitals", "v1"))
    folder.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(ROWS, schema=arrow_schema()), folder / "part-00000.parquet")
    (folder / "_manifest.json").write_text(json.dumps({"table": "hospitals"}))
    write_pointer(root, {"tables": {"hospitals": "v1"}})
    return Warehouse(str(root))


@pytest.fixture(scope="module")
def bench(wh):
    frame = H.hospital_benchmark(wh, "000001")
    return frame.set_index("measure")


def reason(bench, measure: str, column: str):
    return bench.loc[measure, H.reason_column(column)]


def test_each_missing_ratio_has_its_own_reason(bench):
    now = "ratio FY2025"
    assert reason(bench, AMI, now) == H.TOO_FEW                  # footnote 1: too few cases
    assert reason(bench, PN, now) == H.NOT_THIS_PERIOD           # footnote 5
    assert reason(bench, COPD, now) == H.NO_CASES                # footnote 7
    assert reason(bench, HIP, now) == H.NOT_AVAILABLE            # plain N/A: not "too few"
    assert reason(bench, HF, now) is None and reason(bench, CABG, now) is None
    assert bench.loc[PN, "status"] == H.NOT_THIS_PERIOD and bench.loc[HIP, "status"] == H.NOT_AVAILABLE
    assert bench.loc[HF, "status"].startswith("Above 1.0")


def test_previous_year_reason_is_returned(bench):
    before = "ratio FY2024"
    assert reason(bench, HF, before) == H.NOT_THIS_PERIOD
    assert reason(bench, PN, before) == H.NO_CASES
    assert reason(bench, COPD, before) == H.TOO_FEW              # flagged by the ETL, no footnote
    assert reason(bench, CABG, before) == H.NO_RESULTS           # no FY2024 row
    assert reason(bench, AMI, before) is None and bench.loc[AMI, before] == pytest.approx(1.05)
    assert pd.isna(bench.loc[AMI, "change"]) and pd.isna(bench.loc[HIP, "change"])


def test_median_and_discharge_reasons(bench):
    assert pd.isna(bench.loc[PN, "state median"]) and reason(bench, PN, "state median") == H.NONE_IN_STATE
    assert bench.loc[PN, "national median"] == pytest.approx(1.2) and reason(bench, PN, "national median") is None
    assert bench.loc[CABG, "state median"] == pytest.approx(0.95)   # the other AA CABG row is footnote 1
    assert bench.loc[CABG, "national median"] == pytest.approx((0.95 + 1.2) / 2)
    assert bench.loc[AMI, "state median"] == pytest.approx(1.0) and reason(bench, AMI, "state median") is None
    assert reason(bench, HF, "discharges") == H.TOO_FEW             # ratio published, count withheld (flag)
    assert reason(bench, PN, "discharges") == H.NOT_THIS_PERIOD     # the ratio's own reason
    assert bench.loc[COPD, "discharges"] == 0 and reason(bench, COPD, "discharges") is None


def test_display_ratio_says_the_reason_not_too_few(bench):
    assert H.display_ratio(None) == H.NOT_AVAILABLE
    assert H.display_ratio(float("nan"), H.NOT_THIS_PERIOD) == H.NOT_THIS_PERIOD
    assert H.display_ratio(1.0234, H.TOO_FEW) == "1.023"
    shown = {m: H.display_ratio(bench.loc[m, "ratio FY2025"], reason(bench, m, "ratio FY2025")) for m in bench.index}
    assert shown == {AMI: H.TOO_FEW, HF: "1.100", PN: H.NOT_THIS_PERIOD, COPD: H.NO_CASES, CABG: "0.950",
                     HIP: H.NOT_AVAILABLE}


def test_single_year_hospital_and_short_names(wh, bench):
    one = H.hospital_benchmark(wh, "000004")
    assert one.attrs["previous_year"] is None
    assert one[H.reason_column("ratio (previous)")].tolist() == [H.NO_EARLIER_YEAR]
    assert bench.loc[COPD, "measure_short"] == "COPD"
    assert bench["measure_short"].str.len().max() <= 20
