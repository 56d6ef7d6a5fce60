"""Micro-batching of `/predict`: identical requests share a row, requests of one patient share a call when
no history comes from a warehouse, and every request gets exactly the numbers it would get alone.

A real `ScoringService` around a tiny random model (the champion's encoding state) checks the numbers;
a stand-in scorer checks how requests are grouped into calls.
"""
from __future__ import annotations

import asyncio
import math
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from fixtures.tiny_model import champion_preprocessing, make_predictor
from test_api import EXAMPLE, StandInScorer
from test_features import synthetic_rows

from api.deps import MicroBatcher, canonical_record
from api.schemas import EncounterRequest, to_canonical_frame
from core.errors import UserError
from core.sources import diabetes130
from serving.scoring import ScoringService

torch.set_num_threads(1)


class Counting:
    """A scorer that records the rows of every call it passes on."""

    def __init__(self, scorer):
        self.scorer = scorer
        self.model_version = scorer.model_version
        self.warehouse = scorer.warehouse
        self.calls: list[tuple[str, list[str]]] = []

    def score_records(self, records):
        self.calls.append(("records", [r["encounter_id"] for r in records]))
        return self.scorer.score_records(records)

    def score_encounters(self, canonical, explain=True, top_reasons=3):
        self.calls.append(("encounters", list(canonical["encounter_id"])))
        return self.scorer.score_encounters(canonical, explain=explain, top_reasons=top_reasons)


def request(**values) -> EncounterRequest:
    return EncounterRequest.model_validate({**EXAMPLE, **values})


def batched(scorer, requests, explain=False) -> list[dict]:
    """Every request sent at once, as concurrent clients do."""
    async def run():
        batcher = MicroBatcher(scorer)
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.score(r, explain) for r in requests), return_exceptions=True)
        finally:
            await batcher.stop()
    return asyncio.run(run())


@pytest.fixture(scope="module")
def service() -> ScoringService:
    return ScoringService.from_predictor(make_predictor(champion_preprocessing()), explain=False)


def alone(service: ScoringService, encounter: EncounterRequest) -> dict:
    """The general path: the request's canonical frame through `score_encounters`, on its own."""
    return service.score_encounters(to_canonical_frame([encounter]), explain=False).iloc[0].to_dict()


def same_prediction(fast: dict, general: dict) -> bool:
    def clean(value):
        return None if value is None or (isinstance(value, float) and math.isnan(value)) else value
    return all(clean(fast[k]) == clean(general[k]) for k in general)


# --- grouping (stand-in scorer) ------------------------------------------------------------------

def test_identical_requests_share_one_row():
    scorer = Counting(StandInScorer())
    requests = [request() for _ in range(20)] + [request(encounter_id="E2", patient_id="P2")]
    rows = batched(scorer, requests)
    assert scorer.calls == [("records", ["E0004567", "E2"])]
    assert all(row == rows[0] for row in rows[:20])


def test_requests_of_one_patient_share_a_call_without_warehouse_history():
    scorer = Counting(StandInScorer())
    requests = [request(encounter_id=f"E{i}", prior_inpatient_visits=i) for i in range(5)]  # one patient
    rows = batched(scorer, requests)
    assert scorer.calls == [("records", [f"E{i}" for i in range(5)])]
    assert [row["risk"] for row in rows] == pytest.approx([0.05, 0.15, 0.25, 0.35, 0.45])


def test_with_warehouse_history_one_patient_never_twice_in_a_call():
    stand_in = StandInScorer()
    stand_in.warehouse = "data/warehouse"
    scorer = Counting(stand_in)
    requests = [request(encounter_id=f"E{i}", patient_id=f"P{i}", prior_inpatient_visits=i) for i in range(5)]
    requests += [request(encounter_id="E9", patient_id="P1"), request(encounter_id="E9", patient_id="P1")]
    rows = batched(scorer, requests)
    assert [row["encounter_id"] for row in rows] == ["E0", "E1", "E2", "E3", "E4", "E9", "E9"]
    assert scorer.calls == [("encounters", ["E0", "E1", "E2", "E3", "E4"]), ("encounters", ["E9"])]


def test_reasons_go_through_score_encounters_one_patient_per_call():
    scorer = Counting(StandInScorer())
    requests = [request(encounter_id="E1"), request(encounter_id="E2"), request(encounter_id="E3", patient_id="P3")]
    rows = batched(scorer, requests, explain=True)
    assert scorer.calls == [("encounters", ["E1", "E3"]), ("encounters", ["E2"])]
    assert all(row["reason_1"] for row in rows)


def test_a_failing_request_does_not_fail_its_neighbours():
    class Fussy(StandInScorer):
        def score_encounters(self, canonical, explain=True, top_reasons=3):
            if "EBAD" in set(canonical["encounter_id"]):
                raise RuntimeError("cannot score EBAD")
            return super().score_encounters(canonical, explain, top_reasons)

    ok, failed = batched(Fussy(), [request(encounter_id="EGOOD"), request(encounter_id="EBAD")])
    assert ok["encounter_id"] == "EGOOD" and isinstance(failed, RuntimeError)


# --- numbers (real scoring service) --------------------------------------------------------------

def test_identical_inputs_score_identically_batched_or_alone(service):
    requests = [request(encounter_id=f"E{i}", patient_id=f"P{i}", prior_inpatient_visits=i % 4,
                        age_years=float(60 + i % 10)) for i in range(30)]
    requests += [request() for _ in range(10)]
    counting = Counting(service)
    rows = batched(counting, requests)
    assert len(counting.calls) == 1 and len(counting.calls[0][1]) == 31
    for encounter, row in zip(requests, rows):
        assert row["risk"] == alone(service, encounter)["risk"]  # exactly: no batch-size rounding
        assert row["risk"] == service.score_records([canonical_record(encounter)])[0]["risk"]


def test_same_patient_requests_batched_without_history_equal_their_solo_scores(service):
    requests = [request(encounter_id=f"E{i}", num_medications=5 + i, length_of_stay_days=1 + i % 9,
                        admit_time="2026-11-01T08:00:00", discharge_time=f"2026-11-{2 + i % 9:02d}T08:00:00")
                for i in range(12)]  # one patient, twelve discharges
    counting = Counting(service)
    rows = batched(counting, requests)
    assert [kind for kind, _ in counting.calls] == ["records"]
    solo = [alone(service, encounter) for encounter in requests]
    assert [row["risk"] for row in rows] == [row["risk"] for row in solo]
    assert [row["risk_tier"] for row in rows] == [row["risk_tier"] for row in solo]
    assert len({row["risk"] for row in rows}) > 1


def test_fast_path_equals_the_general_path_on_real_rows(service, diabetes_csv):
    raw = pd.read_csv(diabetes_csv, dtype=str, keep_default_na=False, nrows=3000)
    canonical = diabetes130.to_canonical(raw).drop_duplicates("patient_id").reset_index(drop=True)
    general = service.score_encounters(canonical, explain=False).to_dict(orient="records")
    records = canonical.to_dict(orient="records")
    fast = [row for start in range(0, len(records), 25) for row in service.score_records(records[start:start + 25])]
    assert len(fast) == len(general) > 2000
    assert all(same_prediction(f, g) for f, g in zip(fast, general))
    assert sum(not g["eligible"] for g in general) > 10  # died / hospice: not scored, same reason


def test_fast_path_equals_the_general_path_on_synthetic_rows(service):
    records = [{**row, "patient_id": f"S{i}"} for i, row in enumerate(synthetic_rows(600, seed=3))]
    records[0].update(age_years=150.0, num_lab_procedures=2000)  # impossible: named, not scored
    records[1].update(eligible=False, ineligible_reason=None)
    for record in records[2:]:
        del record["eligible"]  # derived from the disposition, as for API records
    general = service.score_encounters(pd.DataFrame(records), explain=False).to_dict(orient="records")
    fast = service.score_records(records)
    assert fast[0]["problem"] == general[0]["problem"] and general[0]["problem"]
    assert all(same_prediction(f, g) for f, g in zip(fast, general))
    assert np.isfinite([row["risk"] for row in fast if row["eligible"] and not row["problem"]]).all()


def test_fast_path_refuses_a_service_with_warehouse_history(service):
    with pytest.raises(UserError):
        replace(service, warehouse="data/warehouse").score_records([canonical_record(request())])
