"""GET /metrics: Prometheus text format (needs a key, like every non-health route)."""
from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import AUTH_ERRORS, PROTECTED, MetricsDep

router = APIRouter(tags=["operations"], dependencies=PROTECTED)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics",
            responses={200: {"content": {"text/plain": {}}, "description": "Prometheus exposition format"},
                       **AUTH_ERRORS})
def metrics(registry: MetricsDep) -> Response:
    body, content_type = registry.exposition()
    return Response(content=body, media_type=content_type)
