"""The per-batch scoring pipeline, pure: feature rows -> encoding -> calibrated risk -> tier and
percentile -> attributions -> plain-language reasons.

One implementation for every caller, so a row gets the same numbers and words everywhere: the
single-process service (`serving.scoring`) and the Spark job over the warehouse (`etl.score`, which
may import models but not serving). Nothing here reads files besides the model folder, and a row's
output depends only on its own features (risk is padded per call, `models.explain.evaluate`;
attributions use no random numbers, `models.explain.two_sided_shapley`), never on its batch.
"""
from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd

from core import reasons as reason_text
from core.encoding import EncodedBatch, Preprocessing, encode
from core.errors import UserError
from models.explain import GROUP_NAMES, evaluate, top_groups, two_sided_shapley
from models.explain_background import BACKGROUND_FILE, Background, fallback_background, load_background
from models.inference import ReadmitPredictor

log = logging.getLogger(__name__)

EXPLANATION_METHOD = "two_sided_shapley"   # recorded in the predictions manifest
SCORE_COLUMNS = ("risk", "risk_tier", "risk_percentile", "reason_1", "reason_2", "reason_3", "attributions",
                 "base_risk")
INELIGIBLE_WORDS = {"died": "Not scored: the patient died during the stay",
                    "hospice": "Not scored: discharged to hospice"}


def not_scored_reason(eligible: bool, ineligible_reason: Optional[str], problem: Optional[str]) -> Optional[str]:
    """`reason_1` of an encounter that gets no risk: ineligible (died, hospice) or with impossible values."""
    if not eligible:
        return INELIGIBLE_WORDS.get(ineligible_reason, f"Not scored: {ineligible_reason}")
    return f"Not scored: {problem}" if problem else None


def attributions_json(row: np.ndarray) -> str:
    """One row's attributions as stored in the `attributions` column: {group: risk points}."""
    return json.dumps({name: round(float(value), 6) for name, value in zip(GROUP_NAMES, row)})


@dataclass(frozen=True)
class BatchScorer:
    """A loaded model plus its explanation background (None: no explanations). Immutable but for a memo
    of numbers that are the same whether remembered or computed again; safe to share across threads:
    its model calls run one at a time (`_lock`, the one lock around a scorer; torch's threads are the
    parallelism)."""
    predictor: Any
    background: Optional[Background] = None
    background_risk: Optional[np.ndarray] = field(default=None, compare=False)  # risk of each background row
    background_source: str = "none"
    # Added effects already computed, by (group, value): the same numbers bit for bit, so later batches of
    # the same process reuse them (`models.explain.added_effects`); the memo bounds its own size.
    known_effects: dict = field(default_factory=dict, compare=False, repr=False)
    # One model call (and memo update) at a time; re-entrant because attributions call `risk`.
    _lock: threading.RLock = field(default_factory=threading.RLock, compare=False, repr=False)

    @classmethod
    def load(cls, model_dir: str | Path, explain: bool = True, threads: Optional[int] = None) -> "BatchScorer":
        """Load a model folder (manifest checked by `ReadmitPredictor.load`)."""
        folder = Path(model_dir)
        if not (folder / "config.json").exists():
            raise UserError(f"no model in {folder} (config.json missing): train one with `readmit train` "
                            "or pass --model DIR")
        return cls.from_predictor(ReadmitPredictor.load(folder, threads=threads), folder, explain)

    @classmethod
    def from_predictor(cls, predictor: Any, model_dir: Optional[str | Path] = None, explain: bool = True,
                       background: Optional[Background] = None) -> "BatchScorer":
        """The background, in order: the one given, the model folder's, a neutral one-row fallback."""
        model = predictor.model
        model.eval()
        for parameter in model.parameters():  # scoring never trains: no parameter gradients
            parameter.requires_grad_(False)
        scorer = cls(predictor=predictor)
        if not explain:
            return scorer
        source = "given"
        if background is None and model_dir is not None:
            background = load_background(model_dir)
            source = BACKGROUND_FILE
        if background is None:
            background = fallback_background(predictor.preprocessing)
            source = "fallback (no explain_background.safetensors in the model folder)"
            log.warning("explanations use a neutral one-row background: %s missing in %s", BACKGROUND_FILE, model_dir)
        return replace(scorer, background=background, background_source=source,
                       background_risk=scorer.risk(background.batch))

    @property
    def model_version(self) -> str:
        return str(getattr(self.predictor, "model_version", "unknown"))

    @property
    def preprocessing(self) -> Preprocessing:
        return self.predictor.preprocessing

    @property
    def base_risk(self) -> Optional[float]:
        """Mean calibrated risk over the explanation background (None: no explanations)."""
        if self.background is None or self.background_risk is None:
            return None
        return float(self.background_risk @ self.background.weights)

    def risk(self, batch: EncodedBatch) -> np.ndarray:
        """Calibrated risk (a row's risk does not depend on its batch)."""
        with self._lock:
            return evaluate(self._calibrated, batch)

    def _calibrated(self, batch: EncodedBatch) -> np.ndarray:
        raw = np.asarray(self.predictor.raw_probability(batch), dtype=np.float64)
        return np.asarray(self.predictor.calibrate(raw), dtype=np.float64)

    def risk_and_attributions(self, batch: EncodedBatch, explain: bool = True
                              ) -> tuple[np.ndarray, Optional[np.ndarray]]:
        """Risk, and the groups' attributions [n, groups] in risk points (None without explanations)."""
        with self._lock:
            risk = self.risk(batch)
            if not explain or self.background is None:
                return risk, None
            attributions, _ = two_sided_shapley(self.risk, batch, risk, self.background, self.background_risk,
                                                known=self.known_effects)
        return risk, attributions

    def grade(self, risk: np.ndarray) -> tuple[list, np.ndarray]:
        """Each risk's tier and percentile (the predictor's cut-offs and reference distribution)."""
        return list(self.predictor.tier(risk)), np.asarray(self.predictor.percentile(risk), dtype=np.float64)

    def score(self, features: pd.DataFrame, explain: bool = True, top_reasons: int = 3) -> pd.DataFrame:
        """Feature rows of scorable encounters -> `SCORE_COLUMNS`, one row each, same index."""
        out = pd.DataFrame({column: None for column in SCORE_COLUMNS}, index=features.index)
        if features.empty:
            return out
        risk, attributions = self.risk_and_attributions(encode(features, self.preprocessing), explain)
        out["risk"] = risk
        out["risk_tier"], out["risk_percentile"] = self.grade(risk)
        if attributions is not None:
            out["base_risk"] = self.base_risk
            out["attributions"] = [attributions_json(row) for row in attributions]
            reasons = reason_sentences(features, attributions, self.base_risk, top_reasons)
            for k in range(3):
                out[f"reason_{k + 1}"] = [row[k] for row in reasons]
        return out


def reason_sentences(features: pd.DataFrame, attributions: np.ndarray, base_risk: Optional[float],
                     top_reasons: int = 3) -> list[list[Optional[str]]]:
    """Per row, three reason slots: the sentences of its `top_reasons` largest groups (`core.reasons`),
    "near average" when no group moves the risk, None for unused slots."""
    records = features.to_dict("records")
    out = []
    for record, row, tops in zip(records, attributions, top_groups(attributions, k=top_reasons)):
        sentences: list[Optional[str]] = [reason_text.sentence(GROUP_NAMES[g], record, row[g]) for g in tops[:3]]
        if not tops:
            sentences = [reason_text.near_average(base_risk)]
        out.append(sentences + [None] * (3 - len(sentences)))
    return out
