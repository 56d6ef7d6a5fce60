"""The access audit log: who looked at which patient, when. Kept apart from the application log.

One JSON object per line in an append-only file (default `data/audit/audit.jsonl`, or the path in
`READMIT_AUDIT_LOG`). Each write is a single `O_APPEND` write of one line under an exclusive lock,
so concurrent sessions never interleave records. Nothing here goes through `logging`: a patient
identifier must never reach the application log.
"""
from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
from pathlib import Path
from typing import Any, Iterator, Optional

from core.config import Settings


def audit_log_path(path: Optional[str | Path] = None) -> Path:
    """The audit file: the argument, else the setting `READMIT_AUDIT_LOG` (default data/audit/audit.jsonl)."""
    return Path(path or Settings().audit_log)  # read per call: the environment is the configuration


def record_access(user: str, action: str, patient_id: Optional[str], encounter_id: Optional[str] = None,
                  *, page: str = "", path: Optional[str | Path] = None, **extra: Any) -> dict[str, Any]:
    """Append one access record and return it.

    `user` is the signed-in identity (e-mail or subject), or the literal demo marker in demo mode.
    """
    record = {"time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "user": user,
              "action": action, "patient_id": patient_id, "encounter_id": encounter_id, "page": page, **extra}
    target = audit_log_path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    fd = os.open(target, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    return record


def read_records(path: Optional[str | Path] = None) -> Iterator[dict[str, Any]]:
    """Every record of the audit file, oldest first (none if the file does not exist)."""
    target = audit_log_path(path)
    if not target.exists():
        return
    with target.open() as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)
