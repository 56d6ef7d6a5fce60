"""Spark transform steps against small hand-written fixtures with documented expected output."""
from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import Row
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from core.encoding import categorical_indices
from core.errors import UserError
from core.features import CATEGORICAL_FEATURES, build_features
from core.schema import COLUMNS
from core.sources.diabetes130 import to_canonical
from core.sources.discharges import parse_discharges
from core.synthetic import generate_chunk
from core.validation import null_invalid_values
from etl.encoding_fit import INDEX_SUFFIX, fit_encoding
from etl.sources import diabetes130 as d130_source
from etl.sources import discharges as discharges_source
from etl.sources import synthetic as synthetic_source
from etl.spark_schema import feature_struct
from etl.transform import (
    _BOUNDS_RULES,
    _numeric_bounds_nulled,
    drop_duplicate_encounters,
    encounters_of,
    features_of,
    map_rows_to_canonical,
    null_out_of_bounds,
    nulled_counts,
    parse_ratios,
    patient_fraction,
    patient_pass,
    patient_splits,
    whole_patient_frames,
    with_split,
)

pytestmark = pytest.mark.spark
FIXTURES = Path(__file__).parent / "fixtures" / "etl"
D130_SMALL = str(FIXTURES / "diabetes130_small.csv")
DISCHARGES = str(FIXTURES / "discharges_dates.csv")


@pytest.fixture(scope="module")
def d130_passed(spark):
    """The small Diabetes 130 fixture through extract, dedup, clean and the patient pass."""
    extracted = d130_source.read(spark, D130_SMALL)
    return patient_pass(drop_duplicate_encounters(extracted), 2).persist()


@pytest.fixture(scope="module")
def d130_encounters(d130_passed):
    return encounters_of(d130_passed)


def test_diabetes130_encounters_expected(d130_encounters):
    # Patient 1001 has three stays in file order 300, 100, 200: history follows encounter id.
    # '?' is missing; a trailing missing diagnosis is dropped, a missing principal one keeps its slot;
    # 400 died (11) and 500 went to hospice (13): ineligible, label null; 600 appears twice, kept once.
    expected = [
        Row(encounter_id="100", patient_id="1001", encounter_seq=1, race="Caucasian", payer="MC",
            diagnoses=["428", "V45", "E878"], readmitted_30d=True, eligible=True, ineligible_reason=None),
        Row(encounter_id="200", patient_id="1001", encounter_seq=2, race=None, payer=None,
            diagnoses=["8", "250.83", "401"], readmitted_30d=False, eligible=True, ineligible_reason=None),
        Row(encounter_id="300", patient_id="1001", encounter_seq=3, race="Caucasian", payer="MC",
            diagnoses=["V57", "E885"], readmitted_30d=False, eligible=True, ineligible_reason=None),
        Row(encounter_id="400", patient_id="1002", encounter_seq=1, race="Caucasian", payer="MC",
            diagnoses=["410", "250.02", "401"], readmitted_30d=None, eligible=False, ineligible_reason="died"),
        Row(encounter_id="500", patient_id="1003", encounter_seq=1, race="Caucasian", payer="MC",
            diagnoses=[None, "486", "401"], readmitted_30d=None, eligible=False, ineligible_reason="hospice"),
        Row(encounter_id="600", patient_id="1004", encounter_seq=1, race="Caucasian", payer="MC",
            diagnoses=["428", "250.02", "401"], readmitted_30d=False, eligible=True, ineligible_reason=None),
    ]
    actual = d130_encounters.select(*expected[0].__fields__)
    assertDataFrameEqual(actual, expected)


def test_diabetes130_features_expected(spark, d130_passed):
    # History counts only earlier stays: 200 follows 100 (5 days, readmitted <30), 300 follows both.
    # Codes are normalized ('8' -> '008'); V codes are 'supplementary', E codes 'external'.
    expected = [
        Row(encounter_id="100", encounter_seq=1.0, prior_stays_los_days=0.0, prior_readmissions_30d=0.0,
            dx_1="428", dx_1_chapter="circulatory", dx_2="V45", dx_2_chapter="supplementary",
            dx_3="E878", dx_3_chapter="external", insulin="no", glucose_result=None, admission_type="emergency"),
        Row(encounter_id="200", encounter_seq=2.0, prior_stays_los_days=5.0, prior_readmissions_30d=1.0,
            dx_1="008", dx_1_chapter="infectious", dx_2="250.83", dx_2_chapter="endocrine",
            dx_3="401", dx_3_chapter="circulatory", insulin="no", glucose_result=None, admission_type="emergency"),
        Row(encounter_id="300", encounter_seq=3.0, prior_stays_los_days=9.0, prior_readmissions_30d=1.0,
            dx_1="V57", dx_1_chapter="supplementary", dx_2="E885", dx_2_chapter="external",
            dx_3=None, dx_3_chapter=None, insulin="up", glucose_result=None, admission_type="emergency"),
        Row(encounter_id="600", encounter_seq=1.0, prior_stays_los_days=0.0, prior_readmissions_30d=0.0,
            dx_1="428", dx_1_chapter="circulatory", dx_2="250.02", dx_2_chapter="endocrine",
            dx_3="401", dx_3_chapter="circulatory", insulin="no", glucose_result=">300", admission_type=None),
    ]
    features = features_of(d130_passed)
    assertDataFrameEqual(features.filter(F.col("eligible")).select(*expected[0].__fields__), expected)
    # ... and every column equals core.features.build_features on the whole (deduplicated) pandas frame
    raw = pd.read_csv(D130_SMALL, dtype=str, keep_default_na=False).drop_duplicates("encounter_id")
    _assert_same_features(features.toPandas(), build_features(to_canonical(raw)))


def _assert_same_features(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    actual = actual.sort_values("encounter_id").reset_index(drop=True)[list(expected.columns)]
    expected = expected.sort_values("encounter_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(actual.astype(object).where(actual.notna(), None),
                                  expected.astype(object).where(expected.notna(), None), check_dtype=False)


def test_duplicates_keep_the_first_in_file_order(spark):
    df = spark.createDataFrame(
        [("E1", "P1", "first", 0), ("E1", "P1", "second", 1), ("E2", "P2", "only", 2)],
        "encounter_id string, patient_id string, payer string, _row long")
    df = df.select("*", *[F.lit(None).cast("string").alias(c) for c in _other_columns(df.columns)])
    kept = drop_duplicate_encounters(df).select("encounter_id", "payer", "_copies")
    assertDataFrameEqual(kept, [Row(encounter_id="E1", payer="first", _copies=2),
                                Row(encounter_id="E2", payer="only", _copies=1)])


def _other_columns(present):
    return [c for c in COLUMNS if c not in present]


def test_out_of_range_numbers_become_null_and_are_counted(spark):
    extracted = d130_source.read(spark, D130_SMALL)
    tampered = extracted.withColumn("length_of_stay_days", F.when(F.col("encounter_id") == "300", F.lit(900.0))
                                    .otherwise(F.col("length_of_stay_days")))
    for cleaned, rows in ((null_out_of_bounds(tampered), 7), (patient_pass(drop_duplicate_encounters(tampered), 2), 6)):
        counts = cleaned.agg(F.count(F.lit(1)).alias("rows"), *nulled_counts()).collect()[0].asDict()
        assert counts.pop("rows") == rows
        assert {name: n for name, n in counts.items() if n} == {"nulled:length_of_stay_days": 1}
        stays = {r["encounter_id"]: r["length_of_stay_days"] for r in cleaned.collect()}
        assert stays["300"] is None and stays["100"] == 5.0


def test_whole_patient_frames_never_split_a_patient():
    ids = ["a", "a", "b", "b", "b", "c", "d", "d"]
    frames = [pd.DataFrame({"patient_id": ids[i:i + 3]}) for i in range(0, len(ids), 3)]
    out = list(whole_patient_frames(iter(frames)))
    assert [list(f["patient_id"]) for f in out] == [["a", "a"], ["b", "b", "b"], ["c"], ["d", "d"]]
    assert list(whole_patient_frames(iter([]))) == []


def test_features_equal_pandas_on_a_real_slice_with_tiny_batches(spark, diabetes_csv):
    """Spark (hash partitions, batches of 37 rows: patients cross batch borders) == pandas on the whole frame."""
    raw = pd.read_csv(diabetes_csv, dtype=str, keep_default_na=False, nrows=1500)
    expected = build_features(to_canonical(raw))
    spark.conf.set("spark.sql.execution.arrow.maxRecordsPerBatch", "37")
    try:
        encounters = spark.createDataFrame(raw).withColumn("_row", F.monotonically_increasing_id())
        canonical = map_rows_to_canonical(encounters, to_canonical)
        actual = features_of(patient_pass(canonical, 3)).toPandas()
    finally:
        spark.conf.unset("spark.sql.execution.arrow.maxRecordsPerBatch")
    assert len(actual) == 1500
    _assert_same_features(actual, expected)


def test_patient_split_is_the_salted_sha256_and_keeps_patients_whole(spark, d130_encounters):
    splits = patient_splits(d130_encounters, "patient", (0.5, 0.25, 0.25), salt="s").collect()
    for row in splits:
        u = int(hashlib.sha256(("s" + row["patient_id"]).encode()).hexdigest()[:13], 16) / 16 ** 13
        assert row["split"] == ("train" if u < 0.5 else "validation" if u < 0.75 else "test")
    assert len({r["patient_id"] for r in splits}) == len(splits) == 4
    fraction = d130_encounters.select(patient_fraction("s").alias("u")).collect()
    assert all(0 <= r["u"] < 1 for r in fraction)
    columns = with_split(d130_encounters, "patient", (0.5, 0.25, 0.25), salt="s").select("patient_id", "split")
    assert {tuple(r) for r in columns.collect()} == {tuple(r) for r in splits}


def test_time_split_orders_patients_by_last_discharge(spark):
    encounters = discharges_source.read(spark, DISCHARGES)
    splits = {r["patient_id"]: r["split"] for r in patient_splits(encounters, "time", (0.5, 0.25, 0.25)).collect()}
    # last discharges: D2 Jan 12, D4 Jan 27, D3 Apr 1, D1 Apr 12
    assert splits == {"D2": "train", "D4": "train", "D3": "validation", "D1": "test"}
    with pytest.raises(UserError, match="needs a discharge date"):
        patient_splits(d130_source.read(spark, D130_SMALL), "time", (0.7, 0.15, 0.15)).collect()


def test_discharges_labels_from_dates_in_spark(spark):
    encounters = discharges_source.read(spark, DISCHARGES)
    step = discharges_source.patient_step(encounters)
    completed = encounters_of(patient_pass(encounters, 2, step)).select(
        "encounter_id", "readmitted_30d", "encounter_seq", "days_since_last_discharge")
    expected_pandas, _ = parse_discharges(pd.read_csv(DISCHARGES, dtype=str, keep_default_na=False))
    labels = {r["encounter_id"]: r["readmitted_30d"] for r in completed.collect()}
    assert labels == dict(zip(expected_pandas["encounter_id"], expected_pandas["readmitted_30d"]))
    assert labels["E1"] is True and labels["E2"] is True and labels["E3"] is False and labels["E4"] is None
    gaps = {r["encounter_id"]: r["days_since_last_discharge"] for r in completed.collect()}
    assert gaps["E1"] is None and gaps["E2"] == pytest.approx(29 + 11 / 24)


def test_ratios_are_checked():
    assert parse_ratios("0.8,0.1,0.1") == (0.8, 0.1, 0.1)
    for bad in ("0.5,0.5", "a,b,c", "0.7,0.2,0.2", "0,0.5,0.5"):
        with pytest.raises(UserError):
            parse_ratios(bad)


def test_core_categorical_indices_equal_spark_string_indexer(spark, diabetes_csv):
    raw = pd.read_csv(diabetes_csv, dtype=str, keep_default_na=False, nrows=3000)
    features = build_features(to_canonical(raw))
    assert features["sex"].iloc[:2000].notna().all()
    features.loc[features.index[-1], "sex"] = None  # missing never seen in train: the "keep" bucket
    train = spark.createDataFrame(features.iloc[:2000], feature_struct())
    prep, model = fit_encoding(train)
    # Rows the indexer never saw (the last 1000) must map the same way too (rare -> other, unseen -> keep).
    scored = model.transform(spark.createDataFrame(features, feature_struct())).toPandas()
    scored = scored.set_index("encounter_id").loc[features["encounter_id"]]
    spark_indices = np.stack([scored[f"{spec.name}{INDEX_SUFFIX}"].to_numpy(dtype=np.int64)
                              for spec in CATEGORICAL_FEATURES], axis=1)
    np.testing.assert_array_equal(categorical_indices(features, prep), spark_indices)
    assert spark_indices[-1, 0] == len(prep.categorical["sex"])


def test_synthetic_source_streams_chunks_equal_to_one_generated_frame(spark):
    spark_rows = synthetic_source.read(spark, rows=100, seed=3, chunk_rows=64).drop("_row").toPandas()
    expected = generate_chunk(0, 100, 3)
    assert len(spark_rows) == 100
    assert list(spark_rows.sort_values("encounter_id")["encounter_id"]) == sorted(expected["encounter_id"])
    assert (spark_rows.set_index("encounter_id").loc[expected["encounter_id"], "patient_id"].tolist()
            == expected["patient_id"].tolist())


def test_diabetes130_input_may_be_the_zip(tmp_path):
    archive = tmp_path / "dataset_diabetes.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.write(D130_SMALL, "dataset_diabetes/diabetic_data.csv")
    assert Path(d130_source.csv_path(str(archive))).read_text() == Path(D130_SMALL).read_text()
    assert d130_source.csv_path(D130_SMALL) == D130_SMALL
    (tmp_path / "broken.zip").write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a valid zip archive"):
        d130_source.csv_path(str(tmp_path / "broken.zip"))


def test_numpy_bounds_null_the_cells_the_value_rule_nulls():
    """`_null_implausible`'s numpy path nulls exactly what `core.validation.null_invalid_values` with the
    bounds rules nulls: edges kept, just outside, not finite, not whole for an int, missing left alone."""
    rng = np.random.default_rng(3)
    n = 400
    frame = pd.DataFrame({"source": "synthetic"}, index=np.arange(n) * 3)
    for rule in _BOUNDS_RULES:
        low, high = rule.bounds
        edges = np.array([low, high, low - 1, high + 1, low - 0.5, high + 0.5, np.nan, np.inf, -np.inf, low + 0.5])
        values = np.where(rng.random(n) < 0.5, rng.choice(edges, n), rng.uniform(low - 5, high + 5, n).round())
        if rule.kind == "int":
            whole = np.isfinite(values) & (values == np.floor(values))
            frame[rule.name] = pd.array(np.where(whole, values, 0), dtype="Int64")
            frame.loc[~whole & ~np.isnan(values), rule.name] = pd.NA if rule.name != "icd_version" else 99
        else:
            frame[rule.name] = values
    frame.loc[frame.index[::7], "length_of_stay_days"] = 2.5  # a fraction in a float column is fine
    expected_frame, expected = null_invalid_values(frame, _BOUNDS_RULES, row_rules=False)
    actual = _numeric_bounds_nulled(frame)
    pd.testing.assert_frame_equal(actual, expected)
    assert actual.to_numpy().sum() > n  # many cells of every kind were nulled
    floats = frame.astype({"num_procedures": "float64"})  # an int rule over a float column: 2.5 is not whole
    floats.loc[floats.index[::5], "num_procedures"] = 2.5
    pd.testing.assert_frame_equal(_numeric_bounds_nulled(floats), null_invalid_values(floats, _BOUNDS_RULES, False)[1])
    assert _numeric_bounds_nulled(frame.astype({"age_years": object})) is None  # not numeric: the value rule
