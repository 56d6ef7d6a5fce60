"""API settings and key authentication.

Keys come from `READMIT_API_KEY` (one or more, comma-separated, so a new key can be added before
the old one is removed). A client sends `Authorization: Bearer KEY` or `X-API-Key: KEY`; every
configured key is compared in constant time (`hmac.compare_digest`), all of them on every call.
Settings refuse unsafe values: no key at all (unless the server was started with
`--insecure-no-auth`, loopback only), short keys and well-known placeholder keys.
"""
from __future__ import annotations

import hashlib
import hmac
from typing import Optional

from fastapi import HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_KEY_LENGTH = 16
WEAK_KEYS = frozenset({"changethis", "changeme", "secret", "password", "test", "apikey", "api-key",
                       "readmit", "admin", "default"})


class ApiSettings(BaseSettings):
    """Environment variables `READMIT_API_*` (see docs/api.md)."""
    model_config = SettingsConfigDict(env_prefix="READMIT_API_", env_file=".env", extra="ignore",
                                      hide_input_in_errors=True)  # never echo a key in an error

    key: Optional[SecretStr] = Field(None, description="READMIT_API_KEY: one or more keys, comma-separated")
    max_batch: int = Field(1000, ge=1, le=100_000, description="most records in one /predict/batch call")
    max_body_bytes: int = Field(4_000_000, ge=1024, description="largest request body accepted (413 above)")
    insecure_no_auth: bool = Field(False, description="set by `readmit api --insecure-no-auth` only")

    @field_validator("key")
    @classmethod
    def _keys_are_strong(cls, value: Optional[SecretStr]) -> Optional[SecretStr]:
        if value is None:
            return None
        keys = [k.strip() for k in value.get_secret_value().split(",") if k.strip()]
        for index, k in enumerate(keys, start=1):
            if k.lower() in WEAK_KEYS or "changeme" in k.lower() or "changethis" in k.lower():
                raise ValueError(f"READMIT_API_KEY: key {index} is a well-known placeholder")
            if len(k) < MIN_KEY_LENGTH:
                raise ValueError(f"READMIT_API_KEY: key {index} is shorter than {MIN_KEY_LENGTH} characters")
        return SecretStr(",".join(keys)) if keys else None

    @model_validator(mode="after")
    def _auth_or_explicitly_insecure(self) -> "ApiSettings":
        if self.key is None and not self.insecure_no_auth:
            raise ValueError("READMIT_API_KEY is not set: set one or more keys (comma-separated), or start "
                             "`readmit api --insecure-no-auth` (binds 127.0.0.1 only)")
        return self

    def keys(self) -> tuple[bytes, ...]:
        if self.key is None:
            return ()
        return tuple(k.encode() for k in self.key.get_secret_value().split(","))


def key_fingerprint(key: bytes) -> str:
    """A short, non-reversible name for a key (safe to log: tells which key a client used)."""
    return hashlib.sha256(key).hexdigest()[:8]


def matching_key(candidate: Optional[str], keys: tuple[bytes, ...]) -> Optional[bytes]:
    """The configured key equal to `candidate`, compared in constant time against every key."""
    if not candidate:
        return None
    given = candidate.strip().encode()
    found = None
    for key in keys:  # no early exit: the time does not depend on which key matched
        if hmac.compare_digest(given, key):
            found = key
    return found


_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <READMIT_API_KEY>")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="X-API-Key: <READMIT_API_KEY>")


def require_api_key(request: Request,
                    bearer: Optional[HTTPAuthorizationCredentials] = Security(_bearer),
                    header_key: Optional[str] = Security(_header)) -> Optional[str]:
    """401 unless a configured key is presented; returns the key's fingerprint (None when auth is off)."""
    settings: ApiSettings = request.app.state.api_settings
    if settings.insecure_no_auth and settings.key is None:
        return None
    keys = settings.keys()
    found = matching_key(bearer.credentials if bearer else None, keys) or matching_key(header_key, keys)
    if found is None:
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="missing or invalid API key",
                            headers={"WWW-Authenticate": "Bearer"})
    fingerprint = key_fingerprint(found)
    request.state.key_id = fingerprint
    return fingerprint
