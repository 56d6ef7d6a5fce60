"""The model folder's manifest: SHA-256 and size of every file that can change a score, and a version.

    write_manifest(folder)      # after training, recalibration or `readmit seal`: writes manifest.json
    verify_manifest(folder)     # on every load (`ReadmitPredictor.load`): the version, or ModelFolderError

Covered: every file in the folder (weights, config, preprocessing, calibration, thresholds, the explanation
background, and anything else that appears there), except the records that describe the model without
changing a score — the card README.md, metrics.json, training.json, figures/ — and hidden files (Hub and
editor clutter). A file not listed is refused like a changed one: an extra weights file must not slip in.

The version is the first 12 hex digits of the SHA-256 of the sorted file list with its hashes, so it
changes exactly when a covered file changes; `metrics.json` and the card carry it.

This catches corruption, partial copies and unreviewed edits; it is not a signature (whoever can edit the
files can also rewrite the manifest, which `readmit seal` does on purpose after a deliberate change).
"""
from __future__ import annotations

import hashlib
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from core.errors import UserError

MANIFEST_FILE = "manifest.json"
MANIFEST_FORMAT = 1
# Files that describe the model or its data but never change a score: the card, the evaluation, the
# training log and the drift-monitoring reference (validation-data summaries).
NOT_COVERED = frozenset({MANIFEST_FILE, "README.md", "metrics.json", "training.json", "monitoring_reference.json"})
NOT_COVERED_DIRS = frozenset({"figures"})
VERSION_LENGTH = 12


class ModelFolderError(UserError):
    """A model folder that fails its integrity or content checks; the message names the file."""


def _hint(folder: Path) -> str:
    return f"restore it, or after a deliberate change run `readmit seal --model {folder}`"


def read_json(path: Path) -> Any:
    """A model folder's JSON file, or ModelFolderError naming it (broken JSON must not become a traceback)."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as error:
        raise ModelFolderError(f"{path}: not valid JSON ({error.msg}: line {error.lineno}, "
                               f"column {error.colno})") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ModelFolderError(f"{path}: cannot be read ({error})") from error


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def is_covered(relative: str) -> bool:
    parts = relative.split("/")
    return not (relative in NOT_COVERED or parts[0] in NOT_COVERED_DIRS
                or any(part.startswith(".") for part in parts))


def covered_files(folder: Path) -> list[str]:
    """Folder-relative POSIX paths of the files the manifest must list, sorted."""
    folder = Path(folder)
    names = (path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
    return sorted(name for name in names if is_covered(name))


def file_entry(path: Path) -> dict[str, Any]:
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def manifest_version(files: dict[str, dict[str, Any]]) -> str:
    canonical = json.dumps(files, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:VERSION_LENGTH]


def version_label(model_type: str, version: str) -> str:
    """What predictions, metrics.json and the card carry: `readmit-transformer@<manifest version>`."""
    return f"{model_type}@{version}"


def build_manifest(folder: Path) -> dict[str, Any]:
    folder = Path(folder)
    files = {name: file_entry(folder / name) for name in covered_files(folder)}
    return {"format": MANIFEST_FORMAT, "version": manifest_version(files), "algorithm": "sha256",
            "covers": "every file except " + ", ".join(sorted(NOT_COVERED - {MANIFEST_FILE})) + ", figures/ and hidden files",
            "files": files}


def write_manifest(folder: str | Path) -> dict[str, Any]:
    """Seal the folder as it is now: (re)write manifest.json atomically; returns the manifest."""
    folder = Path(folder)
    manifest = build_manifest(folder)
    tmp = folder / f".{MANIFEST_FILE}.tmp"
    tmp.write_text(json.dumps(manifest, indent=1) + "\n")
    os.replace(tmp, folder / MANIFEST_FILE)
    return manifest


def read_manifest(folder: Path) -> dict[str, Any]:
    path = Path(folder) / MANIFEST_FILE
    if not path.exists():
        raise ModelFolderError(f"{path}: missing, so nothing proves the weights, calibration and thresholds are "
                               f"the ones evaluated; if they are, run `readmit seal --model {folder}`")
    manifest = read_json(path)
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(isinstance(entry, dict) and isinstance(entry.get("sha256"), str)
                                              and isinstance(entry.get("bytes"), int) for entry in files.values()):
        raise ModelFolderError(f"{path}: not a model manifest (no \"files\" with sha256 and bytes per file)")
    if manifest.get("version") != manifest_version(files):
        raise ModelFolderError(f"{path}: version {manifest.get('version')!r} does not match its file list "
                               f"(edited by hand?); {_hint(folder)}")
    return manifest


def manifest_problems(folder: Path, files: dict[str, dict[str, Any]]) -> list[str]:
    """One line per listed file that is missing or differs, and per covered file that is not listed."""
    problems = []
    for name, entry in sorted(files.items()):
        path = folder / name
        if not path.is_file():
            problems.append(f"{path}: listed in {MANIFEST_FILE} but missing")
        elif path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            problems.append(f"{path}: differs from {MANIFEST_FILE} (changed after the model was sealed)")
    problems += [f"{folder / name}: not listed in {MANIFEST_FILE} (a file that can change a score must be sealed)"
                 for name in covered_files(folder) if name not in files]
    return problems


def verify_manifest(folder: str | Path) -> str:
    """The folder's version if every covered file matches manifest.json; else ModelFolderError (one line)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    problems = manifest_problems(folder, manifest["files"])
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ModelFolderError(f"{problems[0]}{more}; {_hint(folder)}")
    return manifest["version"]


@contextmanager
def sealed_update(folder: str | Path) -> Iterator[None]:
    """Change files of a model folder in the `with` block, keeping it loadable.

    A sealed folder is verified first, so a deliberate edit never seals earlier tampering, and resealed
    after the block. A folder without a manifest is still being assembled: whoever finishes it seals it.
    """
    folder = Path(folder)
    sealed = (folder / MANIFEST_FILE).exists()
    if sealed:
        verify_manifest(folder)
    yield
    if sealed:
        write_manifest(folder)
