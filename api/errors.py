"""The 422 body: every problem with its field, in `core.validation`'s words, never the input.

FastAPI's default 422 echoes each invalid `input`: a whole record can land in a client's logs, and a
value JSON cannot encode (NaN, a lone surrogate) turns the 422 into a 500. Here each error keeps
`type`, `loc` and `msg` only. A row rule's error (`type` "row_rule") names the field it blames in
`ctx.field`, which is appended to `loc`; pydantic's words for a missing or unknown field become the
ones uploads use.
"""
from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from core.validation import REQUIRED

UNKNOWN_FIELD = "unknown field"
_MESSAGES = {"missing": REQUIRED, "extra_forbidden": UNKNOWN_FIELD, "json_invalid": "body is not valid JSON"}
_MAX_LOC_TEXT = 64


def _loc_part(part: Any) -> int | str:
    """A `loc` item as JSON can carry it: an unknown field's name is the client's text (it may hold a
    lone surrogate, or be a megabyte long)."""
    if isinstance(part, int):
        return part
    text = str(part).encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= _MAX_LOC_TEXT else text[:_MAX_LOC_TEXT] + "..."


def _blamed(error: dict[str, Any]) -> tuple[Any, ...]:
    field = (error.get("ctx") or {}).get("field") if error["type"] == "row_rule" else None
    return () if field is None else (field,) if isinstance(field, str) else tuple(field)


def public_error(error: dict[str, Any]) -> dict[str, Any]:
    """One pydantic error as the API shows it: type, loc, msg; no input, no context."""
    return {"type": error["type"], "loc": [_loc_part(p) for p in (*error["loc"], *_blamed(error))],
            "msg": _MESSAGES.get(error["type"], error["msg"])}


async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
    return JSONResponse({"detail": [public_error(e) for e in exc.errors()]}, status_code=422)
