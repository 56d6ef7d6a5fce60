"""From warehouse rows to model tensors: the one bridge between `core.encoding` and torch.

    batch = encode(features, preprocessing)        # core.encoding.EncodedBatch (numpy)
    outputs = model(**to_tensors(batch))           # torch tensors with the model's argument names
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import torch

from core.encoding import EncodedBatch, Preprocessing, encode
from core.errors import UserError
from core.features import OUTPUT_COLUMNS
from core.warehouse import Warehouse, WarehouseError, preprocessing_path

SPLITS = ("train", "validation", "test")
MODEL_INPUTS = ("numeric_values", "numeric_missing", "categorical_ids", "code_ids")


def to_tensors(batch: EncodedBatch, labels: Optional[np.ndarray] = None) -> dict[str, torch.Tensor]:
    """An `EncodedBatch` as the keyword arguments of `ReadmitTransformerForSequenceClassification.forward`."""
    tensors = {"numeric_values": torch.from_numpy(np.ascontiguousarray(batch.numeric, dtype=np.float32)),
               "numeric_missing": torch.from_numpy(np.ascontiguousarray(batch.numeric_missing, dtype=bool)),
               "categorical_ids": torch.from_numpy(np.ascontiguousarray(batch.categorical, dtype=np.int64)),
               "code_ids": torch.from_numpy(np.ascontiguousarray(batch.codes, dtype=np.int64))}
    if labels is not None:
        tensors["labels"] = torch.from_numpy(np.asarray(labels, dtype=np.int64))
    return tensors


class EncodedDataset(torch.utils.data.Dataset):
    """A map-style dataset over an `EncodedBatch` that fetches whole batches at once (`__getitems__`),
    so the DataLoader slices arrays instead of collating thousands of per-row dicts."""

    def __init__(self, batch: EncodedBatch, labels: Optional[np.ndarray] = None):
        self.batch = batch
        self.labels = None if labels is None else np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.batch)

    def __getitems__(self, indices) -> dict[str, torch.Tensor]:
        rows = np.asarray(indices, dtype=np.int64)
        return to_tensors(self.batch.take(rows), None if self.labels is None else self.labels[rows])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.__getitems__([index])
        return {key: value[0] for key, value in item.items()}


def collate(items: Any) -> dict[str, torch.Tensor]:
    """Data collator: passes through a batch already built by `__getitems__`, or stacks single items."""
    if isinstance(items, dict):
        return items
    return {key: torch.stack([item[key] for item in items]) for key in items[0]}


@dataclass(frozen=True)
class SplitData:
    """One split: identifiers, labels and encoded inputs, row-aligned."""
    name: str
    frame: pd.DataFrame          # encounter_id, patient_id, readmitted_30d, eligible (+ features)
    batch: EncodedBatch
    labels: np.ndarray           # int64 0/1

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def patient_ids(self) -> np.ndarray:
        return self.frame["patient_id"].astype(str).to_numpy()

    @property
    def prevalence(self) -> float:
        return float(self.labels.mean()) if len(self.labels) else float("nan")


def load_preprocessing(warehouse: str | Path) -> tuple[Preprocessing, Path]:
    try:
        folder = preprocessing_path(warehouse)
    except WarehouseError as error:
        raise UserError(str(error)) from error
    if not (folder / "preprocessing.json").exists():
        raise UserError(f"no preprocessing.json in {folder}: rerun `readmit etl`")
    return Preprocessing.load(folder), folder


def read_split(warehouse: Warehouse, split: str) -> pd.DataFrame:
    """Eligible rows with a known label of one split, in a fixed order (by encounter id)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}")
    if not warehouse.has_table("features"):
        raise UserError(f"warehouse {warehouse.root} has no 'features' table: run `readmit etl` first")
    columns = ", ".join(f'"{c}"' for c in OUTPUT_COLUMNS)
    frame = warehouse.query(
        f"SELECT {columns} FROM features WHERE split = ? AND eligible AND readmitted_30d IS NOT NULL "
        "ORDER BY encounter_id", [split])
    for name in frame.columns:  # DuckDB returns NaN/NA for nulls; the encoder expects None in object columns
        if frame[name].dtype == object:
            frame[name] = frame[name].where(frame[name].notna(), None)
    return frame


def load_split(warehouse: Warehouse, split: str, preprocessing: Preprocessing) -> SplitData:
    frame = read_split(warehouse, split)
    labels = frame["readmitted_30d"].astype(bool).to_numpy().astype(np.int64)
    return SplitData(split, frame, encode(frame, preprocessing), labels)


def load_splits(warehouse_root: str | Path, preprocessing: Preprocessing) -> dict[str, SplitData]:
    warehouse = Warehouse(str(warehouse_root))
    splits = {name: load_split(warehouse, name, preprocessing) for name in SPLITS}
    for name in ("train", "validation"):
        if len(splits[name]) == 0 or splits[name].labels.min() == splits[name].labels.max():
            raise UserError(f"split '{name}' of {warehouse_root} has {len(splits[name])} labelled eligible rows "
                            "and needs both classes")
    return splits
