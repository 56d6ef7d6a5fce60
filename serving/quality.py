"""The Model quality page: the model folder's card and metrics, and quality on labelled encounters.

Two kinds of evidence, always named with their data and size: the held-out test set the model folder's
`metrics.json` was measured on, and the labelled encounters of this warehouse. The page shows one
operating point everywhere: the call list at the team's capacity, as a risk cut-off (`quality_view`).
Everything here returns plain values and display-ready tables; nothing draws to a screen.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np
import pandas as pd

from core import metric_report, metrics, vocabulary
from core.lace import lace_score
from core.warehouse import Warehouse
from models.evaluate import TRANSFORMER
from models.manifest import MANIFEST_FILE, version_label
from serving.figures import reliability_figure, roc_figure, subgroup_figure

NOT_AVAILABLE = "not available"
GAP_TOLERANCE = 0.05          # a group's sensitivity this far from the overall one is marked GAP
WAREHOUSE_BOOTSTRAP = 200     # patient-cluster replicates for the warehouse AUROC interval
MODEL_NAMES = {TRANSFORMER: "Transformer (shipped model)", "lace": "LACE index",
               "mllib_logistic": "Logistic regression (Spark MLlib)",
               "mllib_gbt": "Gradient-boosted trees (Spark MLlib)", "lightgbm_tuned": "LightGBM, tuned"}
GROUP_NAMES = {"race": "Race", "sex": "Sex", "age_band": "Age band"}


# --- formatting: one rounding rule for the whole page ------------------------------------------

def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def number(value: Any, digits: int = 3) -> str:
    """AUROC, Brier score and the like: 3 decimals; "not available" when there is no value."""
    return NOT_AVAILABLE if _missing(value) else f"{float(value):.{digits}f}"


def percent(value: Any, digits: int = 1) -> str:
    return NOT_AVAILABLE if _missing(value) else f"{100 * float(value):.{digits}f}%"


def interval(ci: Any) -> str:
    """'0.657 to 0.689', or "" when there is no interval."""
    if isinstance(ci, (list, tuple)) and len(ci) == 2 and not any(_missing(v) for v in ci):
        return f"{ci[0]:.3f} to {ci[1]:.3f}"
    return ""


def plain_model_name(name: str) -> str:
    return MODEL_NAMES.get(name, name.replace("_", " "))


def strip_front_matter(card: str) -> str:
    """The card without its YAML header: the Hub reads that header; Markdown would draw it as bullets."""
    if card.startswith("---\n"):
        end = card.find("\n---\n", 4)
        if end != -1:
            return card[end + len("\n---\n"):].lstrip("\n")
    return card


# --- the model folder ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Headline:
    """The shipped model's AUROC on the held-out set metrics.json was measured on."""
    auroc: float
    auroc_ci: Optional[list[float]]
    n: Optional[int]
    split: str

    @property
    def data_text(self) -> str:
        """'the 12,767 held-out test encounters in metrics.json'."""
        size = f"the {self.n:,} held-out {self.split} encounters" if self.n else f"the held-out {self.split} split"
        return f"{size} in metrics.json"

    @property
    def text(self) -> str:
        ci = interval(self.auroc_ci)
        return f"AUROC {number(self.auroc)}" + (f" (95% interval {ci})" if ci else "") + f" on {self.data_text}"


@dataclass
class ModelInfo:
    folder: str
    metrics: dict[str, Any]
    thresholds: dict[str, Any]
    card: str
    figures: dict[str, Any]          # name -> plotly Figure, drawn from metrics.json
    problem: Optional[str] = None
    version: Optional[str] = None    # the folder's sealed version (manifest.json)

    @property
    def stale(self) -> Optional[str]:
        """One sentence when metrics.json measured another version than the folder's, else None."""
        measured = self.metrics.get("model_version")
        if not self.metrics.get("models") or not self.version or measured == self.version:
            return None
        return (f"These held-out numbers were measured on model version {measured or 'unknown'}; the model folder "
                f"is now version {self.version}. Rerun `readmit evaluate` to measure this version.")

    @property
    def card_body(self) -> str:
        return strip_front_matter(self.card)

    @property
    def headline(self) -> Optional[Headline]:
        overall = ((self.metrics.get("models") or {}).get(TRANSFORMER) or {}).get("overall") or {}
        if _missing(overall.get("auroc")):
            return None
        return Headline(float(overall["auroc"]), overall.get("auroc_ci"), overall.get("n"),
                        str(self.metrics.get("split", "test")))

    @property
    def comparison(self) -> pd.DataFrame:
        return comparison_table(self.metrics.get("comparison") or [])


COMPARISON_COLUMNS = {"auprc": "AUPRC", "brier": "Brier score", "ece": "Calibration error (ECE)",
                      "calibration_slope": "Calibration slope"}


def with_interval(value: Any, ci: Any) -> str:
    """'0.673 (0.657 to 0.689)', or the value alone when there is no interval."""
    return number(value) + (f" ({interval(ci)})" if interval(ci) and not _missing(value) else "")


def comparison_table(rows: Any) -> pd.DataFrame:
    """metrics.json's `comparison` (one row per model) with plain column names, rounded, no index."""
    rows = list(rows.values()) if isinstance(rows, Mapping) else list(rows)
    table = [{"model": str(row.get("model")), "What it is": plain_model_name(str(row.get("model"))),
              "Encounters": f"{row['n']:,}" if isinstance(row.get("n"), int) else NOT_AVAILABLE,
              "AUROC (95% interval)": with_interval(row.get("auroc"), row.get("auroc_ci")),
              **{label: number(row.get(key), 2 if key == "calibration_slope" else 3)
                 for key, label in COMPARISON_COLUMNS.items()}}
             for row in rows if isinstance(row, Mapping)]
    return pd.DataFrame(table, columns=["model", "What it is", "Encounters", "AUROC (95% interval)",
                                        *COMPARISON_COLUMNS.values()])


def model_figures(report: Mapping[str, Any]) -> dict[str, Any]:
    """The figures the page shows from metrics.json, with plain model names and short titles (the page
    names the data beside each). Subgroup bars show the shipped model only: four models' bars per level
    could not be read."""
    results = report.get("models") or {}
    figures = {"roc": roc_figure({plain_model_name(name): result for name, result in results.items()})} \
        if results else {}
    if TRANSFORMER in results:
        shipped = {plain_model_name(TRANSFORMER): results[TRANSFORMER]}
        figures["reliability"] = reliability_figure(shipped)
        for group in results[TRANSFORMER].get("subgroups", {}):
            figures[f"subgroup_{group}"] = subgroup_figure(shipped, group, "auroc",
                                                           title=f"AUROC by {GROUP_NAMES.get(group, group).lower()}")
    return figures


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
    metrics_report, manifest = load("metrics.json"), load(MANIFEST_FILE)
    version = version_label(load("config.json").get("model_type", "model"), manifest["version"]) \
        if manifest.get("version") else None
    return ModelInfo(str(folder), metrics_report, load("thresholds.json"), card, model_figures(metrics_report),
                     version=version)


# --- this warehouse -----------------------------------------------------------------------------

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
    frame = wh.query(
        "SELECT p.encounter_id, p.patient_id, p.risk, e.readmitted_30d::INTEGER AS y, e.race, e.sex, e.age_band "
        f"FROM predictions p JOIN encounters e ON e.encounter_id = p.encounter_id{split_join} "
        f"WHERE p.risk IS NOT NULL AND e.readmitted_30d IS NOT NULL AND coalesce(e.eligible, true){split_where}")
    frame.attrs["test_split_only"] = bool(split_where)
    return frame


@dataclass
class QualityView:
    n: int
    positives: int
    auroc: float
    lace_auroc: float
    capacity_curve: pd.DataFrame      # fraction, n_flagged, cutoff, ppv, sensitivity (the operating point included)
    confusion: dict[str, Any]         # at the call-list threshold
    subgroups: pd.DataFrame           # grouping, level, n, positives, auroc, flagged, ppv, sensitivity, gap, note
    roc: dict[str, list[float]] = field(default_factory=dict)
    lace_roc: dict[str, list[float]] = field(default_factory=dict)
    auroc_ci: Optional[list[float]] = None
    ece: float = float("nan")
    mean_predicted: float = float("nan")
    test_split_only: bool = False

    @property
    def prevalence(self) -> float:
        return self.positives / self.n if self.n else float("nan")

    @property
    def data_text(self) -> str:
        """'the 1,234 labelled encounters in this warehouse (its test split)'."""
        return (f"the {self.n:,} labelled encounters in this warehouse"
                + (" (its test split)" if self.test_split_only else ""))

    @property
    def point(self) -> dict[str, float]:
        """The operating point of the confusion matrix, for `serving.figures.capacity_figure`."""
        return {"fraction": self.confusion["flagged_fraction"], "ppv": self.confusion["precision"],
                "sensitivity": self.confusion["recall"]}

    def as_results(self) -> dict[str, dict[str, Any]]:
        """The view in the shape `core.metric_report.evaluate_predictions` returns, for `serving.figures`."""
        results = {plain_model_name(TRANSFORMER): {
            "overall": {"auroc": self.auroc, "auroc_ci": self.auroc_ci, "prevalence": self.prevalence},
            "curves": {"roc": self.roc, "capacity": self.capacity_curve.to_dict("records")}}}
        if self.lace_roc:
            results[plain_model_name("lace")] = {"overall": {"auroc": self.lace_auroc, "prevalence": self.prevalence},
                                                 "curves": {"roc": self.lace_roc, "capacity": []}}
        return results


def _lace_points(wh: Warehouse, labelled: pd.DataFrame) -> Optional[np.ndarray]:
    if not wh.has_table("features"):
        return None
    extra = wh.query(
        "SELECT e.encounter_id, e.length_of_stay_days, e.admission_type, e.admission_source, e.prior_emergency_visits, "
        "f.charlson_index FROM encounters e JOIN features f ON f.encounter_id = e.encounter_id "
        "WHERE e.encounter_id IN (SELECT unnest(?))", [labelled["encounter_id"].tolist()])
    merged = labelled[["encounter_id"]].merge(extra, on="encounter_id", how="left")
    return np.asarray(lace_score(merged), dtype=float)


def _subgroup_rows(labelled: pd.DataFrame, threshold: float, overall_sensitivity: float,
                   gap_tolerance: float) -> pd.DataFrame:
    rows = []
    for grouping in ("race", "sex", "age_band"):
        for level, part in labelled.groupby(labelled[grouping].fillna(metrics.MISSING_GROUP)):
            yy, pp = part["y"].to_numpy(dtype=float), part["risk"].to_numpy(dtype=float)
            tm = metrics.threshold_metrics(yy, pp, threshold)
            auc = metrics.auroc(yy, pp) if 0 < yy.sum() < len(yy) else float("nan")
            gap = tm["recall"] - overall_sensitivity if not math.isnan(tm["recall"]) else float("nan")
            small = len(yy) < metrics.SMALL_GROUP_ROWS or yy.sum() < metrics.SMALL_GROUP_POSITIVES
            note = ("too few to judge" if small else f"GAP: over {100 * gap_tolerance:.0f} points"
                    if not math.isnan(gap) and abs(gap) > gap_tolerance else "")
            rows.append({"grouping": grouping, "level": level, "n": len(yy), "positives": int(yy.sum()),
                         "auroc": auc, "flagged": tm["flagged_fraction"], "ppv": tm["precision"],
                         "sensitivity": tm["recall"], "sensitivity gap": gap, "note": note})
    return pd.DataFrame(rows)


def quality_view(wh: Warehouse, threshold: float, gap_tolerance: float = GAP_TOLERANCE) -> Optional[QualityView]:
    """Discrimination, calibration, capacity trade-off, confusion and subgroup table on the labelled (test)
    encounters, all at one risk cut-off: `threshold`, the call list at the team's capacity. The capacity
    curve passes through that cut-off's share called, so curve and confusion matrix agree exactly."""
    labelled = labelled_scores(wh)
    if labelled.empty or labelled["y"].nunique() < 2:
        return None
    y, p = labelled["y"].to_numpy(dtype=float), labelled["risk"].to_numpy(dtype=float)
    lace = _lace_points(wh, labelled)
    confusion = metrics.threshold_metrics(y, p, threshold)
    called = confusion["flagged_fraction"]
    top = max(0.5, math.ceil(100 * called) / 100 if called == called else 0.5)
    fractions = sorted({round(f, 2) for f in np.arange(0.01, top + 0.005, 0.01)} | ({called} if called > 0 else set()))
    return QualityView(
        len(y), int(y.sum()), metrics.auroc(y, p), metrics.auroc(y, lace) if lace is not None else float("nan"),
        pd.DataFrame(metrics.capacity_curve(y, p, fractions)), confusion,
        _subgroup_rows(labelled, threshold, confusion["recall"], gap_tolerance),
        metrics.roc_points(y, p), metrics.roc_points(y, lace) if lace is not None else {},
        auroc_ci=metric_report.auroc_interval(y, p, labelled["patient_id"].astype(str).to_numpy(), WAREHOUSE_BOOTSTRAP),
        ece=metrics.ece(y, p), mean_predicted=float(p.mean()),
        test_split_only=bool(labelled.attrs.get("test_split_only")))


# --- display tables -----------------------------------------------------------------------------

def confusion_table(confusion: Mapping[str, Any]) -> pd.DataFrame:
    """The 2x2 counts with their share of all encounters, rows = called or not, plus totals."""
    total = max(1, confusion["tp"] + confusion["fp"] + confusion["fn"] + confusion["tn"])

    def cell(count: int) -> str:
        return f"{count:,} ({100 * count / total:.1f}%)"
    return pd.DataFrame(
        {"Readmitted within 30 days": [cell(confusion["tp"]), cell(confusion["fn"]),
                                       cell(confusion["tp"] + confusion["fn"])],
         "Not readmitted": [cell(confusion["fp"]), cell(confusion["tn"]), cell(confusion["fp"] + confusion["tn"])],
         "Total": [cell(confusion["tp"] + confusion["fp"]), cell(confusion["fn"] + confusion["tn"]), cell(total)]},
        index=pd.Index(["Called", "Not called", "Total"], name="At this cut-off"))


# The note comes right after the level: on a phone the table scrolls sideways and GAP must stay in view.
SUBGROUP_COLUMNS = {"grouping": "Group", "level": "Level", "note": "Note", "n": "Encounters", "positives": "Readmitted",
                    "auroc": "AUROC", "flagged": "Called", "ppv": "PPV", "sensitivity": "Sensitivity",
                    "sensitivity gap": "Sensitivity gap (points)"}


def subgroup_table(subgroups: pd.DataFrame) -> pd.DataFrame:
    """The subgroup rows with plain column names and the page's rounding; an undefined value (no
    readmission in the group, nobody called) reads "not available"."""
    if subgroups.empty:
        return pd.DataFrame(columns=list(SUBGROUP_COLUMNS.values()))
    table = pd.DataFrame({
        "grouping": subgroups["grouping"].map(lambda g: GROUP_NAMES.get(g, g)),
        "level": [vocabulary.NOT_RECORDED if level == metrics.MISSING_GROUP else vocabulary.label(grouping, level)
                  for grouping, level in zip(subgroups["grouping"], subgroups["level"].astype(str))],
        "n": subgroups["n"].map(lambda v: f"{int(v):,}"),
        "positives": subgroups["positives"].map(lambda v: f"{int(v):,}"),
        "auroc": subgroups["auroc"].map(number),
        **{column: subgroups[column].map(percent) for column in ("flagged", "ppv", "sensitivity")},
        "sensitivity gap": subgroups["sensitivity gap"].map(
            lambda v: NOT_AVAILABLE if _missing(v) else f"{100 * v:+.1f}"),
        "note": subgroups["note"].fillna(""),
    })
    return table[list(SUBGROUP_COLUMNS)].rename(columns=SUBGROUP_COLUMNS)
