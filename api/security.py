"""API settings, key authentication and the throttle on wrong keys.

Keys come from `READMIT_API_KEY` in the environment only (`core.config` never reads security
settings from a `.env` file): one or more, comma-separated, so a new key can be added before the old
one is removed. Each key needs at least 32 characters and an estimated 128 bits of randomness
(`estimated_bits`); `MAKE_KEY` prints one. Authentication is off only when `readmit api
--insecure-no-auth` builds the app with `ApiSettings(insecure_no_auth=True)`: no variable or file can
turn it off.

A client sends `Authorization: Bearer KEY` or `X-API-Key: KEY`; every configured key is compared in
constant time (`hmac.compare_digest`), all of them on every call. An address that presents
`THROTTLE_LIMIT` wrong keys within `THROTTLE_WINDOW_S` seconds gets 429 with `Retry-After` on every
protected route until the oldest of those failures is a window old (`AuthThrottle`: in memory, per
worker, at most `THROTTLE_MAX_CLIENTS` addresses remembered).
"""
from __future__ import annotations

import hashlib
import hmac
import math
import re
import string
import threading
import time
from collections import OrderedDict, deque
from typing import Annotated, Callable, Optional

from fastapi import HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, SecretStr, field_validator, model_validator

from core.config import Settings

MIN_KEY_LENGTH = 32
MIN_KEY_BITS = 128
MAKE_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'
THROTTLE_LIMIT = 20
THROTTLE_WINDOW_S = 60.0
THROTTLE_MAX_CLIENTS = 10_000
_PRINTABLE = re.compile(r"^[!-~]+$")  # printable ASCII without spaces: what an HTTP header carries safely
_HEX = (frozenset("0123456789abcdef"), frozenset("0123456789ABCDEF"))
_CLASSES = ((frozenset(string.digits), 10), (frozenset(string.ascii_lowercase), 26),
            (frozenset(string.ascii_uppercase), 26), (frozenset(string.punctuation), 32))


# --- key strength ----------------------------------------------------------------------------------

def _repeating_unit(key: str) -> str:
    """The shortest prefix the key repeats ('abcabcab' -> 'abc'); the key itself when it repeats none."""
    for period in range(1, len(key) // 2 + 1):
        if all(key[i] == key[i % period] for i in range(period, len(key))):
            return key[:period]
    return key


def _continues_run(a: str, b: str, c: str) -> bool:
    """Whether c continues a run of equal or consecutive characters ('aaa', 'abc', '321')."""
    step = ord(b) - ord(a)
    return step in (-1, 0, 1) and ord(c) - ord(b) == step


def _alphabet_size(chars: set[str]) -> int:
    if any(chars <= hex_digits for hex_digits in _HEX):
        return 16
    return sum(size for members, size in _CLASSES if chars & members)


def estimated_bits(key: str) -> float:
    """A conservative estimate of a key's randomness, in bits.

    A repeated pattern counts once ('passwordpassword' as 'password'); characters that continue a run
    ('aaa', '123', 'cba') count nothing from the third on; each other character counts log2 of the
    alphabet its character classes span (16 for hex digits), but no more than log2 of the distinct
    characters used + 0.5, so a long key of few symbols scores low. Random keys score far above 128
    bits (`secrets.token_hex(24)` about 190, `secrets.token_urlsafe(32)` over 200).
    """
    unit = _repeating_unit(key)
    counted = sum(1 for i, c in enumerate(unit) if i < 2 or not _continues_run(unit[i - 2], unit[i - 1], c))
    distinct = set(unit)
    return counted * min(math.log2(_alphabet_size(distinct)), math.log2(len(distinct)) + 0.5)


def key_problem(key: str) -> Optional[str]:
    """Why a key is refused (None: it is strong enough). Never quotes the key."""
    if not _PRINTABLE.match(key):
        return "has characters other than printable ASCII (or spaces)"
    if len(key) < MIN_KEY_LENGTH or estimated_bits(key) < MIN_KEY_BITS:
        return (f"is too weak: a key needs at least {MIN_KEY_LENGTH} characters and about {MIN_KEY_BITS} bits of "
                f"randomness; make one with {MAKE_KEY}")
    return None


# --- settings --------------------------------------------------------------------------------------

_DEFAULTS = Settings.model_fields


class ApiSettings(BaseModel):
    """The API's view of `core.config.Settings` (READMIT_API_*), plus the insecure flag of `readmit api`."""
    model_config = ConfigDict(frozen=True, hide_input_in_errors=True)  # never echo a key in an error

    key: Optional[SecretStr] = None
    max_batch: int = _DEFAULTS["api_max_batch"].default
    max_body_bytes: int = _DEFAULTS["api_max_body_bytes"].default
    insecure_no_auth: bool = False

    @classmethod
    def from_settings(cls, settings: Settings, insecure_no_auth: bool = False) -> "ApiSettings":
        return cls(key=settings.api_key, max_batch=settings.api_max_batch,
                   max_body_bytes=settings.api_max_body_bytes, insecure_no_auth=insecure_no_auth)

    @field_validator("key")
    @classmethod
    def _keys_are_strong(cls, value: Optional[SecretStr]) -> Optional[SecretStr]:
        if value is None:
            return None
        keys = [k.strip() for k in value.get_secret_value().split(",") if k.strip()]
        for index, k in enumerate(keys, start=1):
            problem = key_problem(k)
            if problem:
                raise ValueError(f"READMIT_API_KEY: key {index} {problem}")
        return SecretStr(",".join(keys)) if keys else None

    @model_validator(mode="after")
    def _auth_or_explicitly_insecure(self) -> "ApiSettings":
        if self.key is None and not self.insecure_no_auth:
            raise ValueError("READMIT_API_KEY is not set in the environment (a .env file is never read for keys): "
                             f"set one or more keys, comma-separated (make one with {MAKE_KEY}), or start "
                             "`readmit api --insecure-no-auth` (binds 127.0.0.1 only)")
        return self

    def keys(self) -> tuple[bytes, ...]:
        if self.key is None:
            return ()
        return tuple(k.encode() for k in self.key.get_secret_value().split(","))


# --- throttle --------------------------------------------------------------------------------------

class AuthThrottle:
    """Wrong keys per client address in a sliding window; memory is bounded by `max_clients` addresses
    of `limit` timestamps each (the least recently failing address is forgotten first)."""

    def __init__(self, limit: int = THROTTLE_LIMIT, window_s: float = THROTTLE_WINDOW_S,
                 max_clients: int = THROTTLE_MAX_CLIENTS, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit, self.window_s, self.max_clients, self.clock = limit, window_s, max_clients, clock
        self._failures: OrderedDict[str, deque[float]] = OrderedDict()
        self._lock = threading.Lock()  # safe from any thread (the key check itself runs on the event loop)

    def retry_after(self, client: str) -> int:
        """Whole seconds the client must wait before its key is checked again (0: check it now)."""
        with self._lock:
            failures = self._failures.get(client)
            if failures is None or len(failures) < self.limit:
                return 0
            wait = self.window_s - (self.clock() - failures[0])
        return math.ceil(wait) if wait > 0 else 0

    def failed(self, client: str) -> None:
        with self._lock:
            failures = self._failures.pop(client, None) or deque(maxlen=self.limit)
            failures.append(self.clock())
            self._failures[client] = failures
            while len(self._failures) > self.max_clients:
                self._failures.popitem(last=False)

    def __len__(self) -> int:
        return len(self._failures)


# --- the check -------------------------------------------------------------------------------------

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


async def require_api_key(request: Request,
                          bearer: Annotated[Optional[HTTPAuthorizationCredentials], Security(_bearer)] = None,
                          header_key: Annotated[Optional[str], Security(_header)] = None) -> Optional[str]:
    """401 unless a configured key is presented, 429 while the address is throttled; returns the
    key's fingerprint (None when auth is off). Only presented wrong keys count as failures. `async` although
    it never waits: it runs on the event loop instead of a thread-pool round trip per request."""
    settings: ApiSettings = request.app.state.api_settings
    if settings.insecure_no_auth and settings.key is None:
        return None
    throttle: AuthThrottle = request.app.state.auth_throttle
    metrics = request.app.state.metrics
    client = request.client.host if request.client else "unknown"
    wait = throttle.retry_after(client)
    if wait:
        metrics.auth_throttled.inc()
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, detail="too many wrong API keys from this address; "
                            "retry after the number of seconds in Retry-After", headers={"Retry-After": str(wait)})
    presented = [c for c in (bearer.credentials if bearer else None, header_key) if c]
    keys = settings.keys()
    found = next((key for key in (matching_key(c, keys) for c in presented) if key is not None), None)
    if found is None:
        if presented:
            throttle.failed(client)
            metrics.auth_failures.inc()
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, detail="missing or invalid API key",
                            headers={"WWW-Authenticate": "Bearer"})
    fingerprint = key_fingerprint(found)
    request.state.key_id = fingerprint
    return fingerprint
