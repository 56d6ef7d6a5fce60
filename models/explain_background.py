"""The explanation background: a few weighted medoid rows of the training encodings that the
attributions (`models.explain`) are measured against, how it is built (`build_background`), stored in
the model folder (`explain_background.safetensors`, sealed in the manifest) and read back."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
from safetensors.numpy import load_file, save_file

from core.encoding import CODE_OFFSET, EncodedBatch, Preprocessing, encode
from core.errors import UserError
from core.features import CATEGORICAL_NAMES, CODE_FEATURES, NUMERIC_NAMES, OUTPUT_COLUMNS
from core.warehouse import Warehouse
from models.manifest import sealed_update

BACKGROUND_FILE = "explain_background.safetensors"
DEFAULT_BACKGROUND_SIZE = 32


@dataclass(frozen=True)
class Background:
    """Summarized training encodings: a few real rows with weights summing to 1."""
    batch: EncodedBatch
    weights: np.ndarray  # float64 [k]

    def __len__(self) -> int:
        return len(self.batch)


def _embed_for_clustering(batch: EncodedBatch) -> np.ndarray:
    """Numbers for k-means: standardized numerics, missing flags, one-hot-ish categorical ids."""
    parts = [batch.numeric.astype(np.float64), batch.numeric_missing.astype(np.float64)]
    for j in range(batch.categorical.shape[1]):
        column = batch.categorical[:, j]
        levels = np.unique(column)
        parts.append((column[:, None] == levels[None, :]).astype(np.float64) * 0.7)
    chapters = batch.codes[:, :, 2]
    for p in range(chapters.shape[1]):
        levels = np.unique(chapters[:, p])
        parts.append((chapters[:, p][:, None] == levels[None, :]).astype(np.float64) * 0.7)
    return np.concatenate(parts, axis=1)


def build_background(batch: EncodedBatch, k: int = DEFAULT_BACKGROUND_SIZE, seed: int = 0,
                     max_rows: int = 20000, iterations: int = 25) -> Background:
    """k weighted medoids of training encodings (k-means on a numeric view, then the real row nearest
    each centre, weighted by its cluster's size). Medoids are real rows, so every id stays valid."""
    rng = np.random.default_rng(seed)
    n = len(batch)
    if n == 0:
        raise ValueError("cannot build an explanation background from zero rows")
    if n > max_rows:
        batch = batch.take(np.sort(rng.choice(n, max_rows, replace=False)))
        n = max_rows
    k = min(k, n)
    points = _embed_for_clustering(batch)
    squared = (points ** 2).sum(1)

    def distances_to(centres: np.ndarray) -> np.ndarray:  # squared Euclidean, [n, k], no [n, k, d] temporary
        return np.maximum(squared[:, None] - 2.0 * points @ centres.T + (centres ** 2).sum(1)[None, :], 0.0)

    centres = points[rng.choice(n, k, replace=False)]
    for _ in range(iterations):
        assignment = distances_to(centres).argmin(1)
        new = np.stack([points[assignment == c].mean(0) if np.any(assignment == c) else centres[c]
                        for c in range(k)])
        if np.allclose(new, centres):
            break
        centres = new
    distances = distances_to(centres)
    assignment = distances.argmin(1)
    medoids, weights = [], []
    for c in range(k):
        members = np.flatnonzero(assignment == c)
        if len(members) == 0:
            continue
        medoids.append(members[distances[members, c].argmin()])
        weights.append(len(members))
    weights_array = np.asarray(weights, dtype=np.float64)
    return Background(batch.take(np.asarray(medoids)), weights_array / weights_array.sum())


def fallback_background(prep: Preprocessing) -> Background:
    """One neutral row when no stored background exists: numerics at their training mean (0 after
    standardization), each category at its most frequent training level (index 0: the ETL's
    StringIndexer orders labels by frequency), each diagnosis position at its most frequent code."""
    n_num, n_cat = len(NUMERIC_NAMES), len(CATEGORICAL_NAMES)
    codes = np.full((1, len(CODE_FEATURES), 3), CODE_OFFSET, dtype=np.int64)
    return Background(EncodedBatch(np.zeros((1, n_num), np.float32), np.zeros((1, n_num), bool),
                                   np.zeros((1, n_cat), np.int64), codes), np.ones(1))


def save_background(folder: str | Path, background: Background) -> Path:
    """Write the background into a model folder (safetensors, no pickles)."""
    path = Path(folder) / BACKGROUND_FILE
    b = background.batch
    with sealed_update(folder):
        _write_background(path, b, background.weights)
    return path


def _write_background(path: Path, b: EncodedBatch, weights: np.ndarray) -> None:
    save_file({"numeric": np.ascontiguousarray(b.numeric, dtype=np.float32),
               "numeric_missing": np.ascontiguousarray(b.numeric_missing, dtype=np.uint8),
               "categorical": np.ascontiguousarray(b.categorical, dtype=np.int64),
               "codes": np.ascontiguousarray(b.codes, dtype=np.int64),
               "weights": np.ascontiguousarray(weights, dtype=np.float64)},
              str(path), metadata={"format": "readmit-explain-background", "version": "1"})
    path.chmod(0o644)  # safetensors writes 0600; a model folder is meant to be read by the serving user


def load_background(folder: str | Path) -> Optional[Background]:
    path = Path(folder) / BACKGROUND_FILE
    if not path.exists():
        return None
    t = load_file(str(path))
    batch = EncodedBatch(t["numeric"].astype(np.float32), t["numeric_missing"].astype(bool),
                         t["categorical"].astype(np.int64), t["codes"].astype(np.int64))
    weights = t["weights"].astype(np.float64)
    return Background(batch, weights / weights.sum())


def background_from_warehouse(root: str | Path, prep: Preprocessing, k: int = DEFAULT_BACKGROUND_SIZE,
                              seed: int = 0, sample: int = 20000) -> Background:
    """Background from the warehouse `features` table's training split (eligible rows), encoded with
    the model's own preprocessing. A fixed pseudo-random sample keeps it quick and reproducible."""
    warehouse = Warehouse(str(root))
    if not warehouse.has_table("features"):
        raise UserError(f"warehouse {root} has no 'features' table: run `readmit etl` first")
    columns = ", ".join(f'"{c}"' for c in OUTPUT_COLUMNS)
    frame = warehouse.query(f"SELECT {columns} FROM features WHERE split = ? AND eligible "
                            "ORDER BY hash(encounter_id || ?) LIMIT ?", ["train", str(seed), int(sample)])
    if frame.empty:
        raise UserError(f"warehouse {root} has no eligible training rows to summarize")
    for name in frame.columns:
        if frame[name].dtype == object:
            frame[name] = frame[name].where(frame[name].notna(), None)
    return build_background(encode(frame, prep), k=k, seed=seed)
