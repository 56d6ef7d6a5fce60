"""The Model quality page: the model folder's card and metrics, and quality on labelled encounters."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pandas as pd

from core import metrics
from core.lace import lace_score
from core.warehouse import Warehouse
from models.evaluate import TRANSFORMER
from serving.figures import all_figures


def labelled_scores(wh: Warehouse, test_only: bool = True) -> pd.DataFrame:
    """Scored eligible encounters with a known 30-day outcome (the test split when there is one)."""
    if not wh.has_table("encounters"):
        return pd.DataFrame(columns=["encounter_id", "patient_id", "risk", "y"])
    split_join, split_where = "", ""
    if test_only and wh.has_table("features"):
        has_split = "split" in wh.query("SELECT * FROM features LIMIT 0").columns
        if has_split and int(wh.query("SELECT count(*) AS n FROM features WHERE split = 'test'")["n"].iloc[0]):
            split_join = " JOIN features f ON f.encounter_id = p.encounter_id"
            split_where = " AND f.split = 'test'"
    return wh.query(
        "SELECT p.encounter_id, p.patient_id, p.risk, e.readmitted_30d::INTEGER AS y, e.race, e.sex, e.age_band "
        f"FROM predictions p JOIN encounters e ON e.encounter_id = p.encounter_id{split_join} "
        f"WHERE p.risk IS NOT NULL AND e.readmitted_30d IS NOT NULL AND coalesce(e.eligible, true){split_where}")


@dataclass
class ModelInfo:
    folder: str
    metrics: dict[str, Any]
    thresholds: dict[str, Any]
    card: str
    figures: dict[str, Any]          # name -> plotly Figure, drawn from metrics.json
    problem: Optional[str] = None


def model_info(model_dir: str) -> ModelInfo:
    folder = Path(model_dir)
    if not folder.is_dir():
        return ModelInfo(str(folder), {}, {}, "", {},
                         problem=f"No model folder at {folder}: train one with `readmit train` or set READMIT_MODEL_DIR.")

    def load(name):
        path = folder / name
        try:
            return json.loads(path.read_text()) if path.exists() else {}
        except ValueError:
            return {}
    card = (folder / "README.md").read_text() if (folder / "README.md").exists() else ""
    metrics_report = load("metrics.json")
    figures = all_figures(metrics_report["models"], primary=TRANSFORMER, threshold="best_f1") \
        if metrics_report.get("models") else {}
    return ModelInfo(str(folder), metrics_report, load("thresholds.json"), card, figures)


@dataclass
class QualityView:
    n: int
    positives: int
    auroc: float
    lace_auroc: float
    capacity_curve: pd.DataFrame      # fraction, n_flagged, cutoff, ppv, sensitivity
    confusion: dict[str, Any]         # at the capacity threshold
    subgroups: pd.DataFrame           # grouping, level, n, positives, auroc, flagged, ppv, sensitivity, gap
    roc: dict[str, list[float]] = field(default_factory=dict)
    lace_roc: dict[str, list[float]] = field(default_factory=dict)

    def as_results(self) -> dict[str, dict[str, Any]]:
        """The view in the shape `core.metric_report.evaluate_predictions` returns, for `serving.figures`."""
        prevalence = self.positives / self.n if self.n else float("nan")
        results = {"transformer": {"overall": {"auroc": self.auroc, "prevalence": prevalence},
                                   "curves": {"roc": self.roc,
                                              "capacity": self.capacity_curve.to_dict("records")}}}
        if self.lace_roc:
            results["LACE index"] = {"overall": {"auroc": self.lace_auroc, "prevalence": prevalence},
                                     "curves": {"roc": self.lace_roc, "capacity": []}}
        return results


def quality_view(wh: Warehouse, threshold: float, gap_tolerance: float = 0.05) -> Optional[QualityView]:
    """Discrimination, capacity trade-off, confusion and subgroup table on the labelled (test) encounters."""
    labelled = labelled_scores(wh)
    if labelled.empty or labelled["y"].nunique() < 2:
        return None
    y, p = labelled["y"].to_numpy(dtype=float), labelled["risk"].to_numpy(dtype=float)
    lace_auc, lace_roc = float("nan"), {}
    if wh.has_table("features"):
        extra = wh.query(
            "SELECT e.encounter_id, e.length_of_stay_days, e.admission_type, e.admission_source, e.prior_emergency_visits, "
            "f.charlson_index FROM encounters e JOIN features f ON f.encounter_id = e.encounter_id "
            "WHERE e.encounter_id IN (SELECT unnest(?))", [labelled["encounter_id"].tolist()])
        merged = labelled[["encounter_id"]].merge(extra, on="encounter_id", how="left")
        lace = lace_score(merged).astype(float)
        lace_auc, lace_roc = metrics.auroc(y, lace), metrics.roc_points(y, lace)
    curve = pd.DataFrame(metrics.capacity_curve(y, p))
    confusion = metrics.threshold_metrics(y, p, threshold)
    rows = []
    overall_sens = confusion["recall"]
    for grouping in ("race", "sex", "age_band"):
        for level, part in labelled.groupby(labelled[grouping].fillna("(missing)")):
            yy, pp = part["y"].to_numpy(dtype=float), part["risk"].to_numpy(dtype=float)
            tm = metrics.threshold_metrics(yy, pp, threshold)
            auc = metrics.auroc(yy, pp) if 0 < yy.sum() < len(yy) else float("nan")
            gap = tm["recall"] - overall_sens if not math.isnan(tm["recall"]) else float("nan")
            small = len(yy) < metrics.SMALL_GROUP_ROWS or yy.sum() < metrics.SMALL_GROUP_POSITIVES
            rows.append({"grouping": grouping, "level": level, "n": len(yy), "positives": int(yy.sum()),
                         "auroc": auc, "flagged": tm["flagged_fraction"], "ppv": tm["precision"],
                         "sensitivity": tm["recall"], "sensitivity gap": gap,
                         "note": ("too few to judge" if small else
                                  "GAP: sensitivity differs by more than "
                                  f"{gap_tolerance:.0%}" if not math.isnan(gap) and abs(gap) > gap_tolerance else "")})
    return QualityView(len(y), int(y.sum()), metrics.auroc(y, p), lace_auc, curve, confusion, pd.DataFrame(rows),
                       metrics.roc_points(y, p), lace_roc)
