"""Issue 14 experiments: can the transformer reach the tuned LightGBM peer by learning what boosting cannot?

    .venv/bin/python benchmarks/model_experiments.py --warehouse /tmp/readmit-exp/warehouse \
        --runs baseline,history,pretrain,distill --epochs 4 --json-out /tmp/readmit-exp/results.json

Everything is measured on the patient-grouped VALIDATION split of the warehouse; the test split is never
read. Every run prints its validation AUROC per epoch, wall time and parameter count, and every
invocation fits the LightGBM peer (the `benchmarks/model_quality.py` default trial, and with
`--lgbm-trials N` a seeded random search of N trials per feature set) in the same process.

Runs (one change each against the champion recipe: hidden 32, 2 layers, 2 heads, lr 1e-3, dropout 0.1,
weight decay 0.01, batch 512, AdamW, cosine with 5% warm-up, pos_weight sqrt(neg/pos), grad-norm 1):
- `baseline`: the champion recipe, re-run here as the reference under today's load;
- `history`: each encounter plus its patient's up to K earlier encounters in the data (by encounter id,
  only earlier ones): every earlier encounter goes through the same feature tokenizer, its feature tokens
  are mean-pooled and projected (MLP), plus its distance (1 = previous), the log encounter-id gap and its
  own 30-day label (known once it is earlier) -> K extra tokens after the feature tokens (a learned
  "no earlier encounter" vector where there is none);
- `pretrain`: masked-feature pretraining (30% of the feature tokens replaced by a mask vector; numeric
  value + missing flag, categorical level and ICD category predicted) on every training-patient
  encounter, ineligible (died / hospice) ones included, labels unused; then fine-tuning as `baseline`;
- `distill`: loss = (1 - alpha) * class-weighted cross-entropy on labels + alpha * cross-entropy on the
  LightGBM peer's out-of-fold (5-fold, patient-grouped, within train) probability;
- `history_distill`: both;
- `history_detail`: `history` plus a second level of tokens for the nearest earlier encounter: its own
  feature tokens for the features LightGBM's `product_lags` set takes from it (9 utilisation numerics,
  discharge disposition, main diagnosis group, admission type, dx_1), each plus a learned
  "previous stay" vector.

LightGBM feature sets: `no_history` (the product features minus encounter_seq, prior_stays_los_days,
prior_readmissions_30d, days_since_last_discharge), `product` (what the peer in model_quality.py sees),
`product_gaps` (ablation: plus only the encounter-id gaps and the previous stay's label),
`product_lags` (plus summary features of the same earlier encounters the `history` run sees: the
previous encounter's utilisation, diagnosis group, disposition and label, the encounter-id gap, means
over the last K earlier encounters).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Optional

os.environ.setdefault("OMP_NUM_THREADS", "1")

import lightgbm as lgb
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from transformers import get_cosine_schedule_with_warmup
from transformers import initialization as init
from transformers.modeling_outputs import SequenceClassifierOutput

REPO_ROOT = Path(__file__).resolve().parent.parent
for _path in (REPO_ROOT, REPO_ROOT / "benchmarks"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from model_quality import sample_params  # noqa: E402  (the peer's search plan)

import models  # noqa: E402,F401  (registers the Auto classes)
from core.encoding import EncodedBatch, encode  # noqa: E402
from core.features import (  # noqa: E402
    CATEGORICAL_NAMES,
    CODE_CHAPTERS,
    NUMERIC_NAMES,
    OUTPUT_COLUMNS,
    build_features,
)
from core.metrics import auroc  # noqa: E402
from core.warehouse import Warehouse  # noqa: E402
from models.configuration_readmit import ReadmitTransformerConfig  # noqa: E402
from models.data import load_preprocessing, to_tensors  # noqa: E402
from models.modeling_readmit import (  # noqa: E402
    ReadmitFeatureTokenizer,
    ReadmitLayer,
    ReadmitPreTrainedModel,
    ReadmitTransformerForSequenceClassification,
)

HISTORY_COLUMNS = ("encounter_seq", "prior_stays_los_days", "prior_readmissions_30d", "days_since_last_discharge")
LAG_NUMERICS = ("length_of_stay_days", "num_lab_procedures", "num_procedures", "num_medications",
                "number_diagnoses", "prior_inpatient_visits", "prior_emergency_visits", "charlson_index",
                "diabetes_meds_changed")
LAG_CATEGORICALS = ("discharge_disposition", "principal_group", "admission_type")
LGBM_CATEGORICAL = CATEGORICAL_NAMES + CODE_CHAPTERS
# The ablation set `product_gaps`: only the encounter-id gaps and the previous stay's label.
GAP_FEATURES = ("prev_id_gap_log", "hist_min_id_gap_log", "prev_label")
RECIPE = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "learning_rate": 1e-3,
          "dropout": 0.1, "weight_decay": 0.01, "batch_size": 512}


# --- data -------------------------------------------------------------------------------------

def _clean_objects(frame: pd.DataFrame) -> pd.DataFrame:
    for name in frame.columns:  # as models.data.read_split: None, not NaN, in object columns
        if frame[name].dtype == object:
            frame[name] = frame[name].where(frame[name].notna(), None)
    return frame


def load_frame(warehouse_root: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Every encounter of every patient, one feature row each, ordered by patient then encounter id.

    Rows of the warehouse `features` table as they are; encounters the features table lacks (the ETL
    drops died / hospice stays) are featurised with the product's `build_features` on their patients'
    encounters. Columns added: `split`, `labelled` (eligible with a known label: the rows models train
    and are measured on), `from_features_table`."""
    warehouse = Warehouse(warehouse_root)
    columns = ", ".join(f'"{c}"' for c in OUTPUT_COLUMNS)
    features = _clean_objects(warehouse.query(f'SELECT {columns}, split FROM features'))
    features["from_features_table"] = True
    info: dict[str, Any] = {"features_rows": int(len(features))}
    if warehouse.has_table("encounters"):
        encounters = warehouse.query("SELECT * FROM encounters")
        id_column = "encounter_id"
        missing = ~encounters[id_column].astype(str).isin(set(features["encounter_id"].astype(str)))
        info["encounters_rows"] = int(len(encounters))
        info["encounters_not_in_features"] = int(missing.sum())
        if missing.any():
            patients = set(encounters.loc[missing, "patient_id"].astype(str))
            subset = _clean_objects(encounters[encounters["patient_id"].astype(str).isin(patients)].copy())
            built = build_features(subset)
            built = built[built["encounter_id"].astype(str).isin(set(encounters.loc[missing, id_column].astype(str)))]
            split_of = features.drop_duplicates("patient_id").set_index("patient_id")["split"]
            if "split" in encounters.columns:
                split_of = encounters.drop_duplicates("patient_id").set_index("patient_id")["split"]
            built = built.assign(split=built["patient_id"].map(split_of), from_features_table=False)
            built = built[built["split"].notna()]
            info["ineligible_added"] = int(len(built))
            info["ineligible_added_by_split"] = built["split"].value_counts().to_dict()
            features = pd.concat([features, built[features.columns]], ignore_index=True)
    features["_id"] = pd.to_numeric(features["encounter_id"], errors="coerce")
    features = features.sort_values(["patient_id", "_id"], kind="mergesort").reset_index(drop=True)
    eligible = features["eligible"].fillna(False).astype(bool)
    features["labelled"] = eligible & features["readmitted_30d"].notna() & features["from_features_table"]
    return _clean_objects(features), info


def history_index(frame: pd.DataFrame, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For each row its up to k earlier encounters of the same patient (row index, -1 = none, nearest
    first), the log1p encounter-id gap to each, and each one's label (0 unknown, 1 no, 2 yes)."""
    n = len(frame)
    position = frame.groupby("patient_id", sort=False).cumcount().to_numpy()
    ids = frame["_id"].to_numpy(dtype=np.float64)
    label = np.array([0 if v is None else (2 if bool(v) else 1) for v in frame["readmitted_30d"].tolist()],
                     dtype=np.int64)
    prev = np.full((n, k), -1, dtype=np.int64)
    rows = np.arange(n)
    for j in range(1, k + 1):
        prev[:, j - 1] = np.where(position >= j, rows - j, -1)
    safe = np.where(prev >= 0, prev, 0)
    gap = np.where(prev >= 0, np.log1p(np.clip(ids[:, None] - ids[safe], 0, None)), 0.0)
    plabel = np.where(prev >= 0, label[safe], 0)
    return prev, gap.astype(np.float32), plabel


def history_statistics(frame: pd.DataFrame) -> dict[str, Any]:
    position = frame.groupby("patient_id", sort=False).cumcount().to_numpy()
    out = {}
    for split in ("train", "validation"):
        rows = (frame["split"] == split).to_numpy() & frame["labelled"].to_numpy()
        y = frame.loc[rows, "readmitted_30d"].astype(bool).to_numpy()
        earlier = position[rows]
        patients = frame.loc[rows, "patient_id"]
        n_enc = frame[frame["split"] == split].groupby("patient_id").size()
        out[split] = {
            "encounters": int(rows.sum()), "patients": int(patients.nunique()),
            "with_any_earlier_encounter": int((earlier > 0).sum()),
            "share_with_earlier": round(float((earlier > 0).mean()), 4),
            "with_2plus_earlier": int((earlier > 1).sum()), "with_5plus_earlier": int((earlier > 4).sum()),
            "prevalence_first_stay": round(float(y[earlier == 0].mean()), 4),
            "prevalence_with_earlier": round(float(y[earlier > 0].mean()), 4),
            "patients_with_2plus_encounters": int((n_enc > 1).sum()),
            "mean_earlier_encounters": round(float(earlier.mean()), 3)}
    return out


# --- LightGBM peer ----------------------------------------------------------------------------

def lag_features(frame: pd.DataFrame, prev: np.ndarray, gap: np.ndarray, plabel: np.ndarray) -> pd.DataFrame:
    """Summary features of the earlier encounters the `history` run sees (LightGBM's share of the sequence)."""
    out = pd.DataFrame(index=frame.index)
    has = prev[:, 0] >= 0
    first = np.where(has, prev[:, 0], 0)
    numerics = frame[list(LAG_NUMERICS)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float64)
    for j, name in enumerate(LAG_NUMERICS):
        out[f"prev_{name}"] = np.where(has, numerics[first, j], np.nan)
    for name in LAG_CATEGORICALS:
        values = frame[name].to_numpy(dtype=object)
        out[f"prev_{name}"] = np.where(has, values[first], None)
    out["prev_dx_1_chapter"] = np.where(has, frame["dx_1_chapter"].to_numpy(dtype=object)[first], None)
    out["prev_label"] = np.where(has, (plabel[:, 0] == 2).astype(float), np.nan)
    out["prev_id_gap_log"] = np.where(has, gap[:, 0], np.nan)
    valid = prev >= 0
    count = valid.sum(1)
    safe = np.where(valid, prev, 0)
    for name in ("length_of_stay_days", "num_medications", "number_diagnoses", "charlson_index"):
        j = LAG_NUMERICS.index(name)
        values = np.where(valid, numerics[safe, j], np.nan)
        known = np.isfinite(values)
        total = np.where(known, values, 0.0).sum(1)
        out[f"hist_mean_{name}"] = np.where(known.any(1), total / np.maximum(known.sum(1), 1), np.nan)
    out["hist_positive_share"] = np.where(count > 0, (plabel == 2).sum(1) / np.maximum(count, 1), np.nan)
    out["hist_min_id_gap_log"] = np.where(count > 0, np.where(valid, gap, np.inf).min(1), np.nan)
    return out


def lgbm_matrix(frame: pd.DataFrame, feature_set: str, lags: Optional[pd.DataFrame],
                categories: dict[str, list]) -> pd.DataFrame:
    numerics = [n for n in NUMERIC_NAMES if feature_set != "no_history" or n not in HISTORY_COLUMNS]
    out = frame[numerics].apply(pd.to_numeric, errors="coerce").astype("float64")
    for name in LGBM_CATEGORICAL:
        out[name] = pd.Categorical(frame[name].where(frame[name].notna(), None), categories=categories[name])
    if feature_set in ("product_lags", "product_gaps"):
        for name in (lags.columns if feature_set == "product_lags" else GAP_FEATURES):
            if lags[name].dtype == object:
                out[name] = pd.Categorical(lags[name].where(lags[name].notna(), None), categories=categories[name])
            else:
                out[name] = lags[name].astype("float64")
    return out


def lgbm_params(trial: int, seed: int) -> dict[str, Any]:
    """The model_quality.py search plan: its default trial first, then its seeded random draws."""
    default = {"num_leaves": 15, "learning_rate": 0.03, "min_child_samples": 100, "colsample_bytree": 0.7,
               "subsample": 0.8, "subsample_freq": 1, "reg_lambda": 1.0, "min_data_per_group": 100,
               "cat_smooth": 30.0, "cat_l2": 10.0, "max_cat_to_onehot": 4}
    rng = np.random.default_rng(seed)
    params = default
    for _ in range(trial):
        params = sample_params(rng)
    return params


def fit_lgbm(x_train, y_train, x_val, y_val, params, seed, n_estimators=3000):
    model = lgb.LGBMClassifier(n_estimators=n_estimators, objective="binary", metric="auc", random_state=seed,
                               n_jobs=1, verbose=-1, **params)
    if x_val is not None:
        model.fit(x_train, y_train, eval_X=(x_val,), eval_y=(y_val,), callbacks=[lgb.early_stopping(100, verbose=False)])
    else:
        model.fit(x_train, y_train)
    return model


def run_lightgbm(frame, lags, train_rows, val_rows, feature_sets, trial_list, seed, log) -> dict[str, Any]:
    y_train = frame.loc[train_rows, "readmitted_30d"].astype(bool).to_numpy().astype(int)
    y_val = frame.loc[val_rows, "readmitted_30d"].astype(bool).to_numpy().astype(int)
    train_frame = frame.loc[train_rows]
    categories = {name: sorted(train_frame[name].dropna().unique().tolist()) for name in LGBM_CATEGORICAL}
    for name in lags.columns:
        if lags[name].dtype == object:
            categories[name] = sorted(lags.loc[train_rows, name].dropna().unique().tolist())
    results: dict[str, Any] = {"categories": categories}
    for feature_set in feature_sets:
        x_train = lgbm_matrix(train_frame, feature_set, lags.loc[train_rows], categories)
        x_val = lgbm_matrix(frame.loc[val_rows], feature_set, lags.loc[val_rows], categories)
        trials = []
        for trial in trial_list:
            params = lgbm_params(trial, seed)
            t0 = time.time()
            model = fit_lgbm(x_train, y_train, x_val, y_val, params, seed)
            score = auroc(y_val, model.predict_proba(x_val)[:, 1])
            trials.append({"trial": trial, "validation_auroc": round(float(score), 5),
                           "trees": int(model.best_iteration_ or 0), "seconds": round(time.time() - t0, 1),
                           "params": params})
            log(f"  lightgbm {feature_set:<13} trial {trial}: validation AUROC {score:.4f}, "
                f"{trials[-1]['trees']} trees, {trials[-1]['seconds']}s, {x_train.shape[1]} features")
        best = max(trials, key=lambda t: t["validation_auroc"])
        results[feature_set] = {"best_validation_auroc": best["validation_auroc"], "best_trial": best["trial"],
                                "first_trial_auroc": trials[0]["validation_auroc"], "trials": trials,
                                "n_features": int(x_train.shape[1])}
    return results


def lgbm_oof(frame, lags, train_rows, params, trees, categories, seed, folds=5) -> np.ndarray:
    """Out-of-fold LightGBM probabilities on train (patient-grouped folds, `product` features)."""
    train_frame = frame.loc[train_rows]
    x = lgbm_matrix(train_frame, "product", lags.loc[train_rows], categories)
    y = train_frame["readmitted_30d"].astype(bool).to_numpy().astype(int)
    patients = train_frame["patient_id"].astype(str).to_numpy()
    unique = np.unique(patients)
    fold_of_patient = dict(zip(unique, np.random.default_rng(seed).integers(0, folds, len(unique))))
    fold = np.array([fold_of_patient[p] for p in patients])
    oof = np.zeros(len(y))
    for f in range(folds):
        inside = fold != f
        model = fit_lgbm(x[inside], y[inside], None, None, params, seed, n_estimators=max(50, trees))
        oof[~inside] = model.predict_proba(x[~inside])[:, 1]
    return oof


# --- the history model (experiment only; moved into models/ only if it wins) -------------------

class ReadmitHistoryTransformer(ReadmitPreTrainedModel):
    """The product's feature tokens plus `config.history_length` tokens for the earlier encounters."""

    def __init__(self, config: ReadmitTransformerConfig):
        super().__init__(config)
        hidden, k = config.hidden_size, int(getattr(config, "history_length", 5))
        self.history_length = k
        self.embeddings = ReadmitFeatureTokenizer(config)
        self.history_pool = nn.Sequential(nn.LayerNorm(hidden, eps=config.layer_norm_eps),
                                          nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.history_gap = nn.Linear(1, hidden)
        self.history_label = nn.Embedding(3, hidden)
        self.history_position = nn.Parameter(torch.zeros(k, hidden))
        self.history_empty = nn.Parameter(torch.zeros(1, hidden))
        # Optional second level of tokens: chosen feature tokens of the nearest earlier encounter, each with
        # a learned "previous stay" vector (so it never reads as the current stay's token).
        self.detail_positions = self.token_positions(config, list(getattr(config, "history_detail_features", None) or []))
        if self.detail_positions:
            self.history_detail_segment = nn.Parameter(torch.zeros(len(self.detail_positions), hidden))
        self.embedding_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layers = nn.ModuleList(ReadmitLayer(config) for _ in range(config.num_hidden_layers))
        self.final_LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.classifier_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    @staticmethod
    def token_positions(config: ReadmitTransformerConfig, names: list[str]) -> list[int]:
        """Sequence positions (after [CLS]) of the tokens that carry the named features."""
        assignment, numeric = config.numeric_token_assignment(), config.numeric_feature_names
        categorical = config.categorical_feature_names
        positions = []
        for name in names:
            if name in numeric:
                positions.append(1 + assignment[numeric.index(name)])
            elif name in categorical:
                positions.append(1 + config.n_numeric_tokens + categorical.index(name))
            elif name.startswith("dx_") and name[3:].isdigit() and int(name[3:]) <= config.n_code_positions:
                positions.append(1 + config.n_numeric_tokens + len(categorical) + int(name[3:]) - 1)
            else:
                raise ValueError(f"history_detail_features: unknown feature {name!r}")
        return positions

    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, ReadmitHistoryTransformer):
            init.normal_(module.history_position, mean=0.0, std=self.config.initializer_range)
            init.normal_(module.history_empty, mean=0.0, std=self.config.initializer_range)
            if module.detail_positions:
                init.normal_(module.history_detail_segment, mean=0.0, std=self.config.initializer_range)

    def encode_history(self, history_numeric_values, history_numeric_missing, history_categorical_ids,
                       history_code_ids, history_mask, history_gap, history_label) -> torch.Tensor:
        batch, k = history_mask.shape
        hidden = self.config.hidden_size
        flat = history_mask.reshape(-1)
        slots = self.history_empty.expand(batch * k, hidden)
        detail = None
        if self.detail_positions:
            detail = (self.history_empty + self.history_detail_segment).unsqueeze(0).expand(batch, -1, -1)
        if bool(flat.any()):
            where = flat.nonzero().squeeze(1)
            tokens = self.embeddings(history_numeric_values.reshape(batch * k, -1)[where],
                                     history_numeric_missing.reshape(batch * k, -1)[where],
                                     history_categorical_ids.reshape(batch * k, -1)[where],
                                     history_code_ids.reshape(batch * k, *history_code_ids.shape[2:])[where])
            pooled = (self.history_pool(tokens[:, 1:].mean(1))
                      + self.history_gap(history_gap.reshape(-1, 1)[where].to(tokens.dtype))
                      + self.history_label(history_label.reshape(-1)[where]))
            slots = slots.index_put((where,), pooled)
            if detail is not None:
                nearest = where % k == 0  # slot 0 = the nearest earlier encounter
                chosen = tokens[nearest][:, self.detail_positions] + self.history_detail_segment
                detail = detail.index_put((where[nearest] // k,), chosen)
        history = slots.view(batch, k, hidden) + self.history_position
        return history if detail is None else torch.cat([history, detail], dim=1)

    def forward(self, numeric_values, numeric_missing, categorical_ids, code_ids, history_numeric_values=None,
                history_numeric_missing=None, history_categorical_ids=None, history_code_ids=None,
                history_mask=None, history_gap=None, history_label=None, labels=None, return_dict=None):
        tokens = self.embeddings(numeric_values, numeric_missing, categorical_ids, code_ids)
        if history_mask is None:  # no history given: every slot is "no earlier encounter"
            history_mask = torch.zeros(tokens.shape[0], self.history_length, dtype=torch.bool)
        history = self.encode_history(history_numeric_values, history_numeric_missing, history_categorical_ids,
                                      history_code_ids, history_mask, history_gap, history_label)
        hidden = self.embedding_dropout(torch.cat([tokens, history], dim=1))
        last = len(self.layers) - 1
        for index, layer in enumerate(self.layers):
            hidden = layer(hidden, cls_only=index == last)
        logits = self.classifier(self.classifier_dropout(self.final_LayerNorm(hidden[:, 0])))
        loss = None
        if labels is not None:
            weight = torch.tensor([1.0, self.config.pos_weight], dtype=logits.dtype)
            loss = F.cross_entropy(logits, labels.view(-1).long(), weight=weight)
        return SequenceClassifierOutput(loss=loss, logits=logits)


def history_inputs(batch: EncodedBatch, prev: np.ndarray, gap: np.ndarray, plabel: np.ndarray,
                   rows: np.ndarray) -> dict[str, torch.Tensor]:
    """The `history_*` arguments of `ReadmitHistoryTransformer.forward` for `rows` of the encoded frame."""
    p = prev[rows]
    mask = p >= 0
    earlier = batch.take(np.where(mask, p, 0).reshape(-1))
    n, k = p.shape
    t = to_tensors(earlier)
    return {"history_numeric_values": t["numeric_values"].view(n, k, -1),
            "history_numeric_missing": t["numeric_missing"].view(n, k, -1),
            "history_categorical_ids": t["categorical_ids"].view(n, k, -1),
            "history_code_ids": t["code_ids"].view(n, k, *t["code_ids"].shape[1:]),
            "history_mask": torch.from_numpy(mask), "history_gap": torch.from_numpy(gap[rows]),
            "history_label": torch.from_numpy(plabel[rows])}


# --- masked-feature pretraining ---------------------------------------------------------------

class MaskedFeatureHead(nn.Module):
    """Pretraining-only head: reconstructs masked feature tokens (not part of the saved model)."""

    def __init__(self, config: ReadmitTransformerConfig):
        super().__init__()
        hidden = config.hidden_size
        self.config = config
        self.mask_token = nn.Parameter(torch.randn(1, 1, hidden) * config.initializer_range)
        self.norm = nn.LayerNorm(hidden, eps=config.layer_norm_eps)
        n_numeric = len(config.numeric_feature_names)
        self.numeric_head = nn.Linear(hidden, 2 * n_numeric)
        cardinalities = config.categorical_cardinalities
        self.categorical_head = nn.Linear(hidden, sum(cardinalities))
        offsets = np.concatenate([[0], np.cumsum(cardinalities)[:-1]]).astype(np.int64)
        allowed = torch.full((len(cardinalities), sum(cardinalities)), float("-inf"))
        for j, (start, size) in enumerate(zip(offsets, cardinalities)):
            allowed[j, start:start + size] = 0.0
        self.register_buffer("categorical_allowed", allowed, persistent=False)
        self.register_buffer("categorical_offsets", torch.from_numpy(offsets), persistent=False)
        self.code_head = nn.Linear(hidden, config.code_vocab_sizes[1])
        self.register_buffer("numeric_token", torch.tensor(config.numeric_token_assignment(), dtype=torch.long),
                             persistent=False)

    def loss(self, model, numeric_values, numeric_missing, categorical_ids, code_ids, mask_rate: float,
             generator: torch.Generator) -> torch.Tensor:
        config = self.config
        tokens = model.embeddings(numeric_values, numeric_missing, categorical_ids, code_ids)
        batch, length, _ = tokens.shape
        masked = torch.rand(batch, length, generator=generator) < mask_rate
        masked[:, 0] = False
        hidden = torch.where(masked.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        hidden = model.embedding_dropout(hidden)
        for layer in model.layers:
            hidden = layer(hidden)
        hidden = self.norm(hidden)
        n_num_tokens, n_cat = config.n_numeric_tokens, len(config.categorical_feature_names)
        n_numeric = len(config.numeric_feature_names)
        losses = []
        if n_numeric:
            out = self.numeric_head(hidden[:, 1:1 + n_num_tokens])                  # [B, Tn, 2F]
            features = torch.arange(n_numeric)
            value = out[:, self.numeric_token, features]
            missing_logit = out[:, self.numeric_token, n_numeric + features]
            hit = masked[:, 1 + self.numeric_token]
            present = hit & ~numeric_missing
            losses.append(((value - numeric_values) ** 2 * present).sum() / present.sum().clamp(min=1))
            losses.append(F.binary_cross_entropy_with_logits(missing_logit[hit], numeric_missing[hit].float())
                          if bool(hit.any()) else value.sum() * 0)
        if n_cat:
            start = 1 + n_num_tokens
            logits = self.categorical_head(hidden[:, start:start + n_cat]) + self.categorical_allowed
            hit = masked[:, start:start + n_cat]
            target = categorical_ids + self.categorical_offsets
            if bool(hit.any()):
                losses.append(F.cross_entropy(logits[hit], target[hit]))
        if config.n_code_positions:
            start = 1 + n_num_tokens + n_cat
            logits = self.code_head(hidden[:, start:start + config.n_code_positions])
            hit = masked[:, start:start + config.n_code_positions] & (code_ids[..., 0] > 0)
            if bool(hit.any()):
                losses.append(F.cross_entropy(logits[hit], code_ids[..., 1][hit]))
        return sum(losses)


# --- training loop (the champion recipe, without Trainer's checkpointing) ----------------------

def param_groups(module: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainer's rule: no weight decay on biases and LayerNorm weights."""
    no_decay = set()
    for name, sub in module.named_modules():
        for pname, _ in sub.named_parameters(recurse=False):
            full = f"{name}.{pname}" if name else pname
            if isinstance(sub, nn.LayerNorm) or "bias" in pname:
                no_decay.add(full)
    decay = [p for n, p in module.named_parameters() if n not in no_decay]
    rest = [p for n, p in module.named_parameters() if n in no_decay]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}]


def predict(model, inputs_for: Callable[[np.ndarray], dict], n: int, batch_size: int = 4096) -> np.ndarray:
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, n, batch_size):
            rows = np.arange(start, min(start + batch_size, n))
            logits = model(**inputs_for(rows)).logits.double()
            out.append(torch.sigmoid(logits[:, 1] - logits[:, 0]).numpy())
    return np.concatenate(out)


def fit(model, train_inputs: Callable[[np.ndarray], dict], y_train: np.ndarray,
        val_inputs: Callable[[np.ndarray], dict], y_val: np.ndarray, epochs: int, seed: int, log,
        soft_targets: Optional[np.ndarray] = None, alpha: float = 0.0, lr: float = RECIPE["learning_rate"],
        weight_decay: float = RECIPE["weight_decay"], batch_size: int = RECIPE["batch_size"],
        deadline: Optional[float] = None, name: str = "") -> dict[str, Any]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    n = len(y_train)
    steps_per_epoch = math.ceil(n / batch_size)
    optimizer = torch.optim.AdamW(param_groups(model, weight_decay), lr=lr)
    total = epochs * steps_per_epoch
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(0.05 * total), total)
    pos_weight = torch.tensor([1.0, model.config.pos_weight])
    history, best = [], (-1.0, None, 0)
    started = time.time()
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(n)
        t0, running = time.time(), 0.0
        for step in range(steps_per_epoch):
            rows = order[step * batch_size:(step + 1) * batch_size]
            inputs = train_inputs(rows)
            logits = model(**inputs).logits
            target = torch.from_numpy(y_train[rows])
            loss = F.cross_entropy(logits, target, weight=pos_weight)
            if soft_targets is not None and alpha > 0:
                teacher = torch.from_numpy(soft_targets[rows]).to(logits.dtype)
                log_p = F.log_softmax(logits, dim=-1)
                soft = -(teacher * log_p[:, 1] + (1 - teacher) * log_p[:, 0]).mean()
                loss = (1 - alpha) * loss + alpha * soft
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            running += float(loss.detach())
        train_s = time.time() - t0
        p_val = predict(model, val_inputs, len(y_val))
        score = float(auroc(y_val, p_val))
        history.append({"epoch": epoch, "validation_auroc": round(score, 5), "train_loss": round(running / steps_per_epoch, 5),
                        "epoch_seconds": round(time.time() - t0, 1), "rows_per_s": round(n / train_s)})
        log(f"  [{name}] epoch {epoch}: validation AUROC {score:.4f}, train loss {running / steps_per_epoch:.4f}, "
            f"{time.time() - t0:.0f}s ({n / train_s:.0f} rows/s), load {os.getloadavg()[0]:.1f}")
        if score > best[0]:
            best = (score, copy.deepcopy(model.state_dict()), epoch)
        if deadline is not None and time.time() > deadline and epoch < epochs:
            log(f"  [{name}] time box reached after epoch {epoch}")
            break
    model.load_state_dict(best[1])
    return {"best_validation_auroc": round(best[0], 5), "best_epoch": best[2], "epochs": history,
            "seconds": round(time.time() - started, 1)}


def pretrain(model, head: MaskedFeatureHead, inputs_for: Callable[[np.ndarray], dict], n: int, epochs: int,
             seed: int, log, mask_rate: float = 0.3, batch_size: int = 512, lr: float = 1e-3,
             deadline: Optional[float] = None) -> list[dict[str, Any]]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    modules = nn.ModuleList([model.embeddings, model.layers, head])
    optimizer = torch.optim.AdamW(param_groups(modules, 0.01), lr=lr)
    steps_per_epoch = math.ceil(n / batch_size)
    scheduler = get_cosine_schedule_with_warmup(optimizer, math.ceil(0.05 * epochs * steps_per_epoch),
                                                epochs * steps_per_epoch)
    out = []
    for epoch in range(1, epochs + 1):
        model.train()
        head.train()
        order, running, t0 = rng.permutation(n), 0.0, time.time()
        for step in range(steps_per_epoch):
            inputs = inputs_for(order[step * batch_size:(step + 1) * batch_size])
            loss = head.loss(model, **inputs, mask_rate=mask_rate, generator=generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(modules.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            running += float(loss.detach())
        out.append({"epoch": epoch, "masked_loss": round(running / steps_per_epoch, 4),
                    "seconds": round(time.time() - t0, 1)})
        log(f"  [pretrain] epoch {epoch}: masked-feature loss {running / steps_per_epoch:.4f}, "
            f"{time.time() - t0:.0f}s, load {os.getloadavg()[0]:.1f}")
        if deadline is not None and time.time() > deadline:
            break
    return out


def n_params(model: nn.Module) -> int:
    return int(sum(p.numel() for p in model.parameters()))


# --- main -------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--warehouse", default="/tmp/readmit-exp/warehouse")
    parser.add_argument("--runs", default="baseline,history,pretrain,distill",
                        help="comma list of baseline, history, history_detail, pretrain, distill, history_distill (or none)")
    parser.add_argument("--epochs", type=int, default=4, help="cosine schedule length (the champion: 4 is best)")
    parser.add_argument("--pretrain-epochs", type=int, default=2)
    parser.add_argument("--pretrain-minutes", type=float, default=10.0, help="time box of the pretraining")
    parser.add_argument("--history-length", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.5, help="distillation weight on the teacher")
    parser.add_argument("--lgbm-trials", type=int, default=1,
                        help="LightGBM trials per feature set (model_quality.py's plan: default, then draws)")
    parser.add_argument("--lgbm-trial-list", help="explicit trial indices of that plan, e.g. 3 (overrides --lgbm-trials)")
    parser.add_argument("--lgbm-sets", default="no_history,product,product_lags")
    parser.add_argument("--run-minutes", type=float, default=12.0, help="time box per transformer run")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--cache", default="/tmp/readmit-exp/cache", help="teacher predictions are kept here")
    parser.add_argument("--json-out")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    def log(message: str) -> None:
        print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)

    report: dict[str, Any] = {"args": vars(args), "recipe": RECIPE, "runs": {},
                              "load_average_start": os.getloadavg()}
    t0 = time.time()
    frame, info = load_frame(args.warehouse)
    preprocessing, _ = load_preprocessing(args.warehouse)
    encoded = encode(frame, preprocessing)
    prev, gap, plabel = history_index(frame, args.history_length)
    train_rows = np.flatnonzero((frame["split"] == "train").to_numpy() & frame["labelled"].to_numpy())
    val_rows = np.flatnonzero((frame["split"] == "validation").to_numpy() & frame["labelled"].to_numpy())
    pretrain_rows = np.flatnonzero((frame["split"] == "train").to_numpy())
    y_train = frame.loc[train_rows, "readmitted_30d"].astype(bool).to_numpy().astype(np.int64)
    y_val = frame.loc[val_rows, "readmitted_30d"].astype(bool).to_numpy().astype(np.int64)
    gap_train = gap[train_rows][prev[train_rows] >= 0]
    gap_mean, gap_std = float(gap_train.mean()), float(gap_train.std() or 1.0)
    gap_z = np.where(prev >= 0, (gap - gap_mean) / gap_std, 0.0).astype(np.float32)
    info.update({"train_rows": int(len(train_rows)), "validation_rows": int(len(val_rows)),
                 "pretrain_rows": int(len(pretrain_rows)), "load_seconds": round(time.time() - t0, 1)})
    report["data"] = info
    report["history_statistics"] = stats = history_statistics(frame)
    log(f"data: {json.dumps(info)}")
    for split, s in stats.items():
        log(f"history {split}: {s['with_any_earlier_encounter']}/{s['encounters']} encounters "
            f"({100 * s['share_with_earlier']:.1f}%) have an earlier encounter in the data (2+: {s['with_2plus_earlier']}, "
            f"5+: {s['with_5plus_earlier']}); 30-day rate {s['prevalence_with_earlier']:.3f} with vs "
            f"{s['prevalence_first_stay']:.3f} without")

    lags = lag_features(frame, prev, gap, plabel)
    sets = [s for s in args.lgbm_sets.split(",") if s]
    trial_list = [int(t) for t in args.lgbm_trial_list.split(",")] if args.lgbm_trial_list \
        else list(range(max(1, args.lgbm_trials)))
    lgbm = run_lightgbm(frame, lags, train_rows, val_rows, sets, trial_list, args.seed, log)
    report["lightgbm"] = {k: v for k, v in lgbm.items() if k != "categories"}
    for name in sets:
        log(f"LightGBM {name}: best validation AUROC {lgbm[name]['best_validation_auroc']:.4f} "
            f"(first trial {lgbm[name]['first_trial_auroc']:.4f}, {len(lgbm[name]['trials'])} trials)")

    runs = [r for r in args.runs.split(",") if r and r != "none"]
    pos_weight = float(math.sqrt((y_train == 0).sum() / max(1, (y_train == 1).sum())))

    def config(history: bool = False, detail: bool = False) -> ReadmitTransformerConfig:
        extra = {"history_length": args.history_length} if history else {}
        if detail:
            extra["history_detail_features"] = list(LAG_NUMERICS + LAG_CATEGORICALS) + ["dx_1"]
        return ReadmitTransformerConfig.from_preprocessing(
            preprocessing, hidden_size=RECIPE["hidden_size"], num_hidden_layers=RECIPE["num_hidden_layers"],
            num_attention_heads=RECIPE["num_attention_heads"], intermediate_size=2 * RECIPE["hidden_size"],
            hidden_dropout_prob=RECIPE["dropout"], attention_probs_dropout_prob=RECIPE["dropout"],
            pos_weight=pos_weight, **extra)

    def plain(rows_of: np.ndarray) -> Callable[[np.ndarray], dict]:
        return lambda rows: to_tensors(encoded.take(rows_of[rows]))

    def with_history(rows_of: np.ndarray) -> Callable[[np.ndarray], dict]:
        return lambda rows: {**to_tensors(encoded.take(rows_of[rows])),
                             **history_inputs(encoded, prev, gap_z, plabel, rows_of[rows])}

    teacher = None
    if any("distill" in r for r in runs):
        cache = Path(args.cache)
        cache.mkdir(parents=True, exist_ok=True)
        best = max(lgbm["product"]["trials"], key=lambda t: t["validation_auroc"]) if "product" in lgbm else \
            {"params": lgbm_params(0, args.seed), "trees": 500, "trial": 0}
        key = cache / f"teacher_oof_trial{best['trial']}_{best['trees']}_{args.seed}.npy"
        t1 = time.time()
        if key.exists():
            teacher = np.load(key)
        else:
            teacher = lgbm_oof(frame, lags, train_rows, best["params"], best["trees"], lgbm["categories"], args.seed)
            np.save(key, teacher)
        report["teacher"] = {"out_of_fold_auroc_train": round(float(auroc(y_train, teacher)), 5),
                             "lightgbm_trial": best["trial"], "trees": best["trees"],
                             "seconds": round(time.time() - t1, 1)}
        log(f"teacher: LightGBM 5-fold out-of-fold AUROC on train {report['teacher']['out_of_fold_auroc_train']:.4f} "
            f"({report['teacher']['seconds']}s)")

    for run in runs:
        log(f"run {run}: load {os.getloadavg()}")
        run_started = time.time()
        deadline = run_started + args.run_minutes * 60
        torch.manual_seed(args.seed)
        entry: dict[str, Any] = {"load_average_start": os.getloadavg()}
        uses_history = run.startswith("history")
        model = ReadmitHistoryTransformer(config(True, "detail" in run)) if uses_history else \
            ReadmitTransformerForSequenceClassification(config())
        if run == "pretrain":
            head = MaskedFeatureHead(model.config)
            t1 = time.time()
            entry["pretraining"] = pretrain(model, head, plain(pretrain_rows), len(pretrain_rows),
                                            args.pretrain_epochs, args.seed, log,
                                            deadline=time.time() + args.pretrain_minutes * 60)
            entry["pretrain_seconds"] = round(time.time() - t1, 1)
            entry["pretrain_rows"] = int(len(pretrain_rows))
            entry["pretrain_head_params"] = n_params(head)
            del head
            deadline = time.time() + args.run_minutes * 60  # fine-tuning gets its own time box
        inputs = with_history if uses_history else plain
        result = fit(model, inputs(train_rows), y_train, inputs(val_rows), y_val, args.epochs, args.seed, log,
                     soft_targets=teacher if "distill" in run else None,
                     alpha=args.alpha if "distill" in run else 0.0, deadline=deadline, name=run)
        entry.update(result)
        entry["params"] = n_params(model)
        entry["load_average_end"] = os.getloadavg()
        entry["total_seconds"] = round(time.time() - run_started, 1)
        report["runs"][run] = entry
        per_epoch = " ".join(f"{e['validation_auroc']:.4f}" for e in result["epochs"])
        log(f"RESULT {run}: best validation AUROC {result['best_validation_auroc']:.4f} (epoch {result['best_epoch']}); "
            f"per epoch {per_epoch}; {entry['total_seconds']}s; {entry['params']} params")
        if args.json_out:  # after every run, so a time-boxed session keeps what finished
            Path(args.json_out).write_text(json.dumps(report, indent=1, default=str))

    print("\nsummary (validation AUROC, patient-grouped validation split):")
    for name in sets:
        print(f"  LightGBM {name:<22} {lgbm[name]['best_validation_auroc']:.4f}")
    for run, entry in report["runs"].items():
        print(f"  transformer {run:<19} {entry['best_validation_auroc']:.4f} (epoch {entry['best_epoch']}), "
              f"{entry['total_seconds']}s, {entry['params']} params")
    report["load_average_end"] = os.getloadavg()
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(report, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
