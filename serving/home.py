"""The Home page: what the configured warehouse holds, and a summary of the scored cohort."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Optional

import pandas as pd

from core.warehouse import Warehouse, read_pointer
from serving.worklist import RISK_TIERS


@dataclass(frozen=True)
class DataStatus:
    """What the configured warehouse holds, and whether it is synthetic demo data."""
    root: str
    tables: tuple[str, ...]
    synthetic: bool
    sources: tuple[str, ...] = ()
    version: str = ""
    problem: Optional[str] = None   # a sentence for the user when the warehouse cannot be used

    @property
    def usable(self) -> bool:
        return self.problem is None


def data_status(root: str) -> DataStatus:
    """Inspect the warehouse at `root`. Synthetic only when every encounter says source='synthetic'
    (or, lacking an encounters table, when the predictions manifest says so); anything else counts
    as real patient data."""
    try:
        pointer = read_pointer(root)
    except (OSError, ValueError) as error:
        return DataStatus(str(root), (), False, problem=f"The warehouse pointer cannot be read: {error}")
    tables = tuple(sorted(pointer.get("tables", {})))
    version = json.dumps(pointer.get("tables", {}), sort_keys=True)
    stale = Warehouse(str(root)).predictions_problem
    if stale:  # never show risks next to encounters they were not computed from
        return DataStatus(str(root), tables, False, version=version, problem=stale)
    if "predictions" not in tables:
        return DataStatus(str(root), tables, False, version=version,
                          problem=(f"No scored patients in the warehouse at {root}. Build one with "
                                   "`readmit demo` (synthetic) or `readmit etl` then `readmit score`, or "
                                   "point READMIT_WAREHOUSE at an existing warehouse."))
    wh = Warehouse(str(root))
    sources: tuple[str, ...] = ()
    synthetic = False
    if "encounters" in tables:
        counts = wh.query("SELECT coalesce(source, '(none)') AS source, count(*) AS n FROM encounters "
                          "GROUP BY ALL ORDER BY n DESC")
        sources = tuple(counts["source"].tolist())
        synthetic = sources == ("synthetic",)
    else:
        manifest = wh.manifest("predictions")
        synthetic = manifest.get("source") == "synthetic" or manifest.get("synthetic") is True
        sources = (str(manifest.get("source")),) if manifest.get("source") else ()
    return DataStatus(str(root), tables, synthetic, sources, version)


@dataclass
class CohortSummary:
    encounters: int
    patients: int
    eligible: int
    scored: int
    tier_counts: dict[str, int]
    risk_histogram: pd.DataFrame          # columns: bin_start, bin_end, count
    first_discharge: Optional[pd.Timestamp]
    last_discharge: Optional[pd.Timestamp]
    scored_at: Optional[pd.Timestamp]
    model_versions: list[str]


def cohort_summary(wh: Warehouse, bins: int = 20) -> CohortSummary:
    has_enc = wh.has_table("encounters")
    stats = wh.query(
        "SELECT count(*) AS encounters, count(DISTINCT patient_id) FILTER (WHERE coalesce(eligible, true)) AS patients, "
        "count(*) FILTER (WHERE coalesce(eligible, true)) AS eligible, "
        "count(risk) AS scored, max(scored_at) AS scored_at FROM predictions").iloc[0]
    tiers = wh.query("SELECT risk_tier, count(*) AS n FROM predictions WHERE risk IS NOT NULL GROUP BY ALL")
    tier_counts = {tier: 0 for tier in RISK_TIERS} | dict(zip(tiers["risk_tier"], tiers["n"].astype(int)))
    hist = wh.query(
        "SELECT least(floor(risk * ?)::INTEGER, ? - 1) AS b, count(*) AS count FROM predictions "
        "WHERE risk IS NOT NULL GROUP BY ALL ORDER BY b", [bins, bins])
    hist = pd.DataFrame({"b": range(bins)}).merge(hist, on="b", how="left").fillna({"count": 0})
    hist["bin_start"], hist["bin_end"] = hist["b"] / bins, (hist["b"] + 1) / bins
    versions = wh.query("SELECT DISTINCT model_version FROM predictions WHERE model_version IS NOT NULL")
    first = last = None
    if has_enc:
        dates = wh.query("SELECT min(discharge_time) AS first, max(discharge_time) AS last FROM encounters").iloc[0]
        first, last = _ts(dates["first"]), _ts(dates["last"])
    return CohortSummary(int(stats["encounters"]), int(stats["patients"]), int(stats["eligible"]),
                         int(stats["scored"]), tier_counts, hist[["bin_start", "bin_end", "count"]],
                         first, last, _ts(stats["scored_at"]), sorted(versions["model_version"].astype(str)))


def _ts(value) -> Optional[pd.Timestamp]:
    return None if value is None or pd.isna(value) else pd.Timestamp(value)
