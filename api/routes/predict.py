"""POST /predict, /predict/batch and /explain."""
from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, HTTPException, Query, status

from api.deps import AUTH_ERRORS, PROTECTED, BatcherDep, MetricsDep, PredictionLogDep, ScorerDep, SettingsDep
from api.schemas import (
    BatchPrediction,
    BatchRequest,
    EncounterRequest,
    Explanation,
    Prediction,
    explanation_from,
    prediction_from_row,
    to_canonical_frame,
)

ERRORS = {**AUTH_ERRORS, 400: {"description": "body is not valid JSON"},
          413: {"description": "request body (or batch) too large"},
          422: {"description": "invalid encounter: field-level messages in `detail`, never the input"},
          503: {"description": "model not loaded"}}

_EXAMPLE = EncounterRequest.model_config["json_schema_extra"]["examples"][0]
# The schema's own example, shown in /docs and sent as is by schemathesis's examples phase.
OneEncounter = Annotated[EncounterRequest, Body(openapi_examples={"typical": {
    "summary": "A typical discharge", "value": _EXAMPLE}})]
Batch = Annotated[BatchRequest, Body(openapi_examples={"two": {
    "summary": "Two discharges", "value": {"encounters": [_EXAMPLE, {**_EXAMPLE, "encounter_id": "E0004568",
                                                                     "prior_inpatient_visits": 0}]}}})]

WithReasons = Annotated[bool, Query(description="Also compute the top reasons (slower: an attribution per "
                                                "encounter); `/explain` gives every group's attribution")]

router = APIRouter(tags=["scoring"], dependencies=PROTECTED, responses=ERRORS)


@router.post("/predict", response_model=Prediction,
             summary="Risk, tier and percentile for one encounter (top reasons with `explain=true`)")
async def predict(encounter: OneEncounter, batcher: BatcherDep, metrics: MetricsDep,
                  explain: WithReasons = False) -> Prediction:
    row = await batcher.score(encounter, explain)  # scored with concurrent requests, exactly as if alone
    out = Prediction(**prediction_from_row(row, batcher.scorer.model_version))
    metrics.observe_risks([out.risk])
    return out


@router.post("/predict/batch", response_model=BatchPrediction,
             summary="Risks for up to READMIT_API_MAX_BATCH encounters (default 1000)")
def predict_batch(batch: Batch, scorer: ScorerDep, settings: SettingsDep, metrics: MetricsDep,
                  log_scored: PredictionLogDep, explain: WithReasons = False) -> BatchPrediction:
    if len(batch.encounters) > settings.max_batch:
        raise HTTPException(status.HTTP_413_CONTENT_TOO_LARGE,
                            detail=f"{len(batch.encounters)} encounters in one batch; the limit is "
                                   f"{settings.max_batch} (READMIT_API_MAX_BATCH)")
    ids = [e.encounter_id for e in batch.encounters]  # unique: BatchRequest checks
    canonical = to_canonical_frame(batch.encounters)
    with_features = getattr(scorer, "score_encounters_with_features", None)
    if with_features is not None:  # the feature rows the model saw, for the log (not built twice)
        scored, features = with_features(canonical, explain=explain, top_reasons=3)
    else:
        scored, features = scorer.score_encounters(canonical, explain=explain, top_reasons=3), None
    pending = log_scored(canonical, scored, features)
    if pending is not None:
        pending.result()  # durable logging: answer once the rows are committed (this runs in a worker thread)
    by_id = {row["encounter_id"]: row for row in scored.to_dict(orient="records")}
    predictions = [Prediction(**prediction_from_row(by_id[i], scorer.model_version)) for i in ids]
    metrics.observe_risks(p.risk for p in predictions)
    return BatchPrediction(model_version=scorer.model_version, count=len(predictions), predictions=predictions)


@router.post("/explain", response_model=Explanation,
             summary="Full attribution for one encounter, grouped by feature")
def explain(encounter: OneEncounter, scorer: ScorerDep, metrics: MetricsDep) -> Explanation:
    """The numbers and reasons the scorer stores for this encounter (the same method in every path)."""
    frame = to_canonical_frame([encounter])
    explained = scorer.explain_one(frame)
    row = explained.get("prediction") or scorer.score_encounters(frame, explain=True, top_reasons=3).iloc[0].to_dict()
    out = Explanation(**explanation_from(row, explained, scorer.model_version))
    metrics.observe_risks([out.risk])
    return out
