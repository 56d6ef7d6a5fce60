"""Open endpoints: /health and /ready (no key needed, no patient data)."""
from __future__ import annotations

from fastapi import APIRouter, Response, status

from api.deps import OptionalScorerDep
from api.schemas import Health, Ready, feature_schema_hash

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health, summary="Liveness, model version and feature-schema hash")
async def health(scorer: OptionalScorerDep) -> Health:
    return Health(status="ok" if scorer is not None else "loading",
                  model_version=getattr(scorer, "model_version", None), feature_schema_hash=feature_schema_hash())


@router.get("/ready", response_model=Ready, summary="200 once the model is loaded, else 503",
            responses={503: {"model": Ready, "description": "model not loaded yet"}})
async def ready(scorer: OptionalScorerDep, response: Response) -> Ready:
    if scorer is None:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
        return Ready(ready=False)
    return Ready(ready=True, model_version=scorer.model_version)
