"""Counter-based random numbers for the synthetic generator: every number is a pure function of (seed, row
index, stream name), never of a sequential generator, so any chunk of rows is the same whatever the
chunking (`core.synthetic`); and the inverse-CDF draws built on them."""
from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

_MASK64 = (1 << 64) - 1
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def uniforms(seed: int, rows: np.ndarray, stream: str) -> np.ndarray:
    """Uniform [0, 1) numbers, a pure function of (seed, row index, stream name)."""
    key = int.from_bytes(hashlib.blake2b(f"{seed}/{stream}".encode(), digest_size=8).digest(), "little")
    mixed = _splitmix(np.asarray(rows, dtype=np.int64).astype(np.uint64) * _GOLDEN + np.uint64(key & _MASK64))
    return (mixed >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def pick_weighted(u: np.ndarray, counts: list[int]) -> np.ndarray:
    """Indices drawn with probabilities proportional to `counts` (inverse CDF)."""
    cdf = np.cumsum(np.asarray(counts, dtype=np.float64))
    return np.minimum(np.searchsorted(cdf / cdf[-1], u, side="right"), len(counts) - 1)


def table_values(table: dict[str, Any]) -> np.ndarray:
    """Integer "values" of a binned table, or "levels" (objects; a null level stays None)."""
    if "values" in table:
        return np.asarray(table["values"], dtype=np.int64)
    return np.asarray(table["levels"], dtype=object)


def draw(u: np.ndarray, table: dict[str, Any]) -> np.ndarray:
    """Values of a {"levels" | "values", "counts"} table, drawn with probabilities proportional to counts."""
    return table_values(table)[pick_weighted(u, table["counts"])]


def draw_by(u: np.ndarray, key_index: np.ndarray, tables: list[dict[str, Any]]) -> np.ndarray:
    """Like `draw`, from `tables[key_index]` of each row."""
    out = np.empty(len(u), dtype=table_values(tables[0]).dtype)
    for key, table in enumerate(tables):
        mask = key_index == key
        if mask.any():
            out[mask] = draw(u[mask], table)
    return out


def make_ids(prefix: str, numbers: np.ndarray, width: int = 10) -> np.ndarray:
    """'SP0000000042'-style ids, built digit by digit (np.char.mod is far slower)."""
    digits = (numbers[:, None] // 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)) % 10 + ord("0")
    text = np.concatenate([np.tile(np.frombuffer(prefix.encode(), np.uint8), (len(numbers), 1)),
                           digits.astype(np.uint8)], axis=1)
    return np.ascontiguousarray(text).view(f"S{len(prefix) + width}").ravel().astype(str).astype(object)


def truncated_exponential(u: np.ndarray, scale: float, width: float) -> np.ndarray:
    """Exponential(scale) restricted to [0, width), by inverse CDF."""
    return -scale * np.log1p(-u * (1.0 - np.exp(-width / scale)))
