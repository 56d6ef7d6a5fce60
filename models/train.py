"""`readmit train`: the transformer trained with `Trainer` on the warehouse, tuned on validation, calibrated.

Steps (every choice is made on the validation split; the test split is only scored for the record):
1. read eligible, labelled rows of each split from the warehouse `features` table (DuckDB) and encode
   them with the warehouse's fitted preprocessing;
2. a small hyperparameter search: a fixed, seeded list of trials (the first is a sensible default, the
   rest random draws from a grid over hidden size, layers, learning rate, dropout, weight decay); each
   trial is a `Trainer` run with evaluation every epoch, early stopping on validation AUROC and the
   best epoch restored; trials stop when the time budget is spent;
3. post-hoc calibration of the best trial on validation (temperature / Platt / isotonic, chosen by
   held-out log-loss on patient-grouped halves), thresholds by capacity and by best F1, risk tiers;
4. the model folder in Hugging Face format (config.json, model.safetensors, preprocessing.json,
   calibration.json, thresholds.json, training.json, README.md) sealed by manifest.json
   (`models.manifest`), written to a temporary folder and moved into place only when complete.
"""
from __future__ import annotations

import json
import logging
import math
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch
import transformers
from sklearn.metrics import precision_recall_curve
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments, set_seed

import models  # noqa: F401  (registers the Auto classes)
from core.errors import UserError
from core.metrics import auroc, average_precision, ece
from core.warehouse import Warehouse, read_pointer
from models.calibration import choose_calibrator
from models.card import write_card
from models.configuration_readmit import ReadmitTransformerConfig
from models.data import EncodedDataset, collate, load_preprocessing, load_splits, to_tensors
from models.manifest import write_manifest
from models.modeling_readmit import ReadmitTransformerForSequenceClassification
from models.runtime import set_torch_threads

log = logging.getLogger(__name__)

DEFAULT_TRIAL = {"hidden_size": 32, "num_hidden_layers": 2, "learning_rate": 1e-3,
                 "dropout": 0.1, "weight_decay": 0.01}
# Kept small on purpose: scoring must reach 5,000 rows/s on one thread, and an epoch of 59k rows takes
# about 1.5 minutes on a shared 2-core machine, so a 20-minute budget holds about 4 trials.
SEARCH_SPACE = {"hidden_size": [32, 48], "num_hidden_layers": [1, 2],
                "learning_rate": [5e-4, 1e-3, 2e-3], "dropout": [0.0, 0.1, 0.2],
                "weight_decay": [0.0, 0.01, 0.1]}
CAPACITY_PERCENTS = (5, 10, 20, 30)
# Risk tiers: the share of validation encounters in each tier, highest first.
TIERS = (("Very high", 5.0), ("High", 15.0), ("Medium", 30.0), ("Low", 50.0))
QUANTILE_POINTS = 1001


def softmax_positive(logits: np.ndarray) -> np.ndarray:
    logits = np.asarray(logits, dtype=np.float64)
    return 1.0 / (1.0 + np.exp(logits[:, 0] - logits[:, 1]))


def compute_metrics(eval_prediction) -> dict[str, float]:
    logits = eval_prediction.predictions[0] if isinstance(eval_prediction.predictions, tuple) \
        else eval_prediction.predictions
    y = np.asarray(eval_prediction.label_ids).reshape(-1)
    p = softmax_positive(logits)
    return {"auroc": auroc(y, p), "auprc": average_precision(y, p)}


def sample_trials(n_trials: int, seed: int) -> list[dict[str, Any]]:
    """The search plan: the default trial, then distinct seeded random draws from SEARCH_SPACE."""
    rng = np.random.default_rng(seed)
    trials = [dict(DEFAULT_TRIAL)]
    attempts = 0
    while len(trials) < n_trials and attempts < 1000:
        attempts += 1
        trial = {name: values[int(rng.integers(len(values)))] for name, values in SEARCH_SPACE.items()}
        trial = {k: (v.item() if hasattr(v, "item") else v) for k, v in trial.items()}
        if trial not in trials:
            trials.append(trial)
    return trials


@dataclass
class TrainOptions:
    warehouse: str
    out: str
    time_budget_minutes: float = 20.0
    seed: int = 42
    max_epochs: int = 6
    n_trials: int = 4
    patience: int = 1
    batch_size: int = 512
    eval_batch_size: int = 4096
    num_attention_heads: int = 2
    threads: Optional[int] = None
    work_dir: Optional[str] = None


@dataclass
class TrialResult:
    index: int
    params: dict[str, Any]
    status: str = "not run"
    best_validation_auroc: float = float("nan")
    best_epoch: Optional[int] = None
    epochs_run: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def _deadline_callback(deadline: float):

    class StopAtDeadline(TrainerCallback):
        """Stops training (the best epoch so far is still restored) once the time budget is spent."""
        stopped = False

        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() >= deadline:
                control.should_training_stop = True
                StopAtDeadline.stopped = True
            return control

    return StopAtDeadline()


def build_config(preprocessing, params: dict[str, Any], pos_weight: float, heads: int):
    hidden = int(params["hidden_size"])
    return ReadmitTransformerConfig.from_preprocessing(
        preprocessing, hidden_size=hidden, num_hidden_layers=int(params["num_hidden_layers"]),
        num_attention_heads=heads if hidden % heads == 0 else 1, intermediate_size=2 * hidden,
        hidden_dropout_prob=float(params["dropout"]), attention_probs_dropout_prob=float(params["dropout"]),
        pos_weight=pos_weight)


def train_trial(index: int, params: dict[str, Any], splits, preprocessing, options: TrainOptions,
                pos_weight: float, deadline: float, work_dir: Path):
    """One `Trainer` run; returns (model with its best epoch restored, TrialResult)."""


    result = TrialResult(index=index, params=dict(params))
    set_seed(options.seed)
    model = ReadmitTransformerForSequenceClassification(
        build_config(preprocessing, params, pos_weight, options.num_attention_heads))
    train_set = EncodedDataset(splits["train"].batch, splits["train"].labels)
    validation_set = EncodedDataset(splits["validation"].batch, splits["validation"].labels)
    args = TrainingArguments(
        output_dir=str(work_dir / f"trial-{index}"), eval_strategy="epoch", save_strategy="epoch",
        logging_strategy="epoch", load_best_model_at_end=True, metric_for_best_model="auroc",
        greater_is_better=True, save_total_limit=2, save_only_model=True,
        num_train_epochs=options.max_epochs, per_device_train_batch_size=options.batch_size,
        per_device_eval_batch_size=options.eval_batch_size, learning_rate=float(params["learning_rate"]),
        weight_decay=float(params["weight_decay"]), warmup_steps=0.05, lr_scheduler_type="cosine",
        optim="adamw_torch", seed=options.seed, data_seed=options.seed, use_cpu=True, report_to="none",
        dataloader_num_workers=0, dataloader_pin_memory=False, remove_unused_columns=False,
        disable_tqdm=False)
    deadline_callback = _deadline_callback(deadline)
    trainer = Trainer(model=model, args=args, train_dataset=train_set, eval_dataset=validation_set,
                      data_collator=collate, compute_metrics=compute_metrics,
                      callbacks=[EarlyStoppingCallback(early_stopping_patience=options.patience), deadline_callback])
    started = time.monotonic()
    trainer.train()
    result.seconds = round(time.monotonic() - started, 1)
    result.history = [{k: (round(v, 5) if isinstance(v, float) else v) for k, v in entry.items()
                       if k in ("epoch", "eval_auroc", "eval_auprc", "eval_loss", "loss")}
                      for entry in trainer.state.log_history if "eval_auroc" in entry or "loss" in entry]
    evaluated = [e for e in trainer.state.log_history if "eval_auroc" in e]
    result.epochs_run = len(evaluated)
    if evaluated:
        best = max(evaluated, key=lambda e: e["eval_auroc"])
        result.best_validation_auroc = float(best["eval_auroc"])
        result.best_epoch = int(round(best["epoch"]))
    result.status = "stopped at time budget" if type(deadline_callback).stopped else "completed"
    if not evaluated:
        result.status = "no complete epoch within the time budget"
    model = trainer.model
    model.eval()
    shutil.rmtree(work_dir / f"trial-{index}", ignore_errors=True)
    return model, result


def predict_raw(model, batch, batch_size: int = 2048) -> np.ndarray:
    """Raw (uncalibrated) probability of readmission, batched, no grad."""

    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(batch), batch_size):
            part = batch.take(np.arange(start, min(start + batch_size, len(batch))))
            out.append(model(**to_tensors(part)).logits.float().numpy())
    logits = np.concatenate(out) if out else np.zeros((0, 2), dtype=np.float32)
    return softmax_positive(logits)


def best_f1_threshold(y: np.ndarray, risk: np.ndarray) -> dict[str, float]:
    precision, recall, cutoffs = precision_recall_curve(y, risk)
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0)[:-1]
    best = int(np.argmax(f1))
    flagged = risk >= cutoffs[best]
    return {"risk_cutoff": float(cutoffs[best]), "f1": float(f1[best]), "precision": float(precision[best]),
            "recall": float(recall[best]), "share_flagged": float(flagged.mean())}


def build_thresholds(y: np.ndarray, risk: np.ndarray) -> dict[str, Any]:
    """Capacity cut-offs, best-F1 cut-off, risk tiers and the validation risk distribution (calibrated)."""
    y = np.asarray(y)
    risk = np.asarray(risk, dtype=np.float64)
    capacity = []
    for percent in CAPACITY_PERCENTS:
        cutoff = float(np.quantile(risk, 1 - percent / 100.0))
        flagged = risk >= cutoff
        capacity.append({"top_percent": percent, "risk_cutoff": cutoff, "share_flagged": float(flagged.mean()),
                         "ppv": float(y[flagged].mean()) if flagged.any() else float("nan"),
                         "sensitivity": float(y[flagged].sum() / max(1, y.sum()))})
    tiers, above = [], 0.0
    for name, share in TIERS:
        lower_share = above + share
        cutoff = float(np.quantile(risk, 1 - lower_share / 100.0)) if lower_share < 100 else 0.0
        in_tier = (risk >= cutoff) & (risk < (tiers[-1]["min_risk"] if tiers else np.inf))
        tiers.append({"name": name, "min_risk": cutoff,
                      "description": (f"top {share:g}% of validation risk" if not tiers else
                                      f"next {share:g}% of validation risk" if lower_share < 100 else
                                      f"remaining {share:g}% of validation risk"),
                      "validation_share": float(in_tier.mean()),
                      "validation_observed_rate": float(y[in_tier].mean()) if in_tier.any() else float("nan")})
        above = lower_share
    probs = np.linspace(0.0, 1.0, QUANTILE_POINTS)
    return {"basis": "calibrated risk on the validation split", "n_validation": int(len(y)),
            "validation_prevalence": float(y.mean()), "capacity": capacity,
            "best_f1": best_f1_threshold(y, risk), "tiers": tiers,
            "risk_quantiles": {"probabilities": [round(float(p), 6) for p in probs],
                               "values": [float(v) for v in np.quantile(risk, probs)]}}


def _data_versions(warehouse_root: str) -> dict[str, Any]:
    warehouse = Warehouse(warehouse_root)
    versions: dict[str, Any] = {"warehouse": str(Path(warehouse_root).resolve()),
                                "pointer": read_pointer(warehouse_root)}
    try:
        versions["features_manifest"] = warehouse.manifest("features")
    except Exception as error:
        versions["features_manifest_error"] = str(error)
    return versions


def _split_summary(split) -> dict[str, Any]:
    return {"rows": int(len(split)), "patients": int(len(np.unique(split.patient_ids))),
            "positives": int(split.labels.sum()), "prevalence": round(split.prevalence, 5)}


def _replace_folder(staging: Path, out: Path) -> None:
    """Move a complete staging folder to `out`, keeping the old one until the new one is in place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(staging, 0o755)  # mkdtemp makes it private; a model folder is read by the API and the dashboard
    for path in staging.rglob("*"):
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    backup = None
    if out.exists():
        backup = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, backup)
    os.replace(staging, out)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def train(options: TrainOptions) -> dict[str, Any]:
    """Run the whole training; returns the training summary written to training.json."""


    set_torch_threads(options.threads)
    started_wall = time.time()
    started = time.monotonic()
    deadline = started + options.time_budget_minutes * 60.0
    preprocessing, preprocessing_dir = load_preprocessing(options.warehouse)
    splits = load_splits(options.warehouse, preprocessing)
    load_seconds = time.monotonic() - started
    log.info("data: %s", {name: _split_summary(s) for name, s in splits.items()})
    train_labels = splits["train"].labels
    pos_weight = float(math.sqrt((train_labels == 0).sum() / max(1, (train_labels == 1).sum())))

    out = Path(options.out)
    work_root = Path(options.work_dir) if options.work_dir else out.parent
    work_root.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.train-", dir=work_root))
    trials = sample_trials(options.n_trials, options.seed)
    results: list[TrialResult] = []
    best_model, best_result = None, None
    try:
        for index, params in enumerate(trials):
            if time.monotonic() >= deadline and best_model is not None:
                results.append(TrialResult(index=index, params=params, status="skipped: time budget spent"))
                continue
            log.info("trial %d/%d: %s", index + 1, len(trials), params)
            model, result = train_trial(index, params, splits, preprocessing, options, pos_weight,
                                        deadline if best_model is not None else max(deadline, time.monotonic() + 60),
                                        work_dir)
            results.append(result)
            log.info("trial %d: validation AUROC %.4f (epoch %s, %.0f s, %s)", index + 1,
                     result.best_validation_auroc, result.best_epoch, result.seconds, result.status)
            if result.epochs_run and (best_result is None
                                      or result.best_validation_auroc > best_result.best_validation_auroc):
                best_model, best_result = model, result
            else:
                del model
        if best_model is None:
            raise UserError("no trial finished an epoch within the time budget: raise --time-budget-minutes")
        search_seconds = time.monotonic() - started - load_seconds

        validation, test = splits["validation"], splits["test"]
        raw_validation = predict_raw(best_model, validation.batch)
        calibrator, selection = choose_calibrator(raw_validation, validation.labels, validation.patient_ids,
                                                  seed=options.seed)
        risk_validation = calibrator(raw_validation)
        thresholds = build_thresholds(validation.labels, risk_validation)
        summary_metrics = {"validation": {"auroc": auroc(validation.labels, risk_validation),
                                          "auroc_raw": auroc(validation.labels, raw_validation),
                                          "auprc": average_precision(validation.labels, risk_validation),
                                          "brier": float(np.mean((risk_validation - validation.labels) ** 2)),
                                          "ece": ece(validation.labels, risk_validation)}}
        if len(test):
            risk_test = calibrator(predict_raw(best_model, test.batch))
            summary_metrics["test"] = {"auroc": auroc(test.labels, risk_test), "auprc": average_precision(test.labels, risk_test),
                                       "ece": ece(test.labels, risk_test),
                                       "brier": float(np.mean((risk_test - test.labels) ** 2)),
                                       "note": "reported only; no choice was made on the test split"}

        staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.staging-", dir=work_root))
        best_model.save_pretrained(staging)
        shutil.copyfile(preprocessing_dir / "preprocessing.json", staging / "preprocessing.json")
        calibrator.save(staging, selection)
        (staging / "thresholds.json").write_text(json.dumps(thresholds, indent=1))
        summary = {
            "model_type": "readmit-transformer",
            "seed": options.seed,
            "options": {k: v for k, v in asdict(options).items() if k not in ("work_dir",)},
            "chosen_trial": best_result.index,
            "hyperparameters": {**best_result.params, "num_attention_heads": best_model.config.num_attention_heads,
                                "intermediate_size": best_model.config.intermediate_size,
                                "pos_weight": pos_weight, "batch_size": options.batch_size,
                                "optimizer": "AdamW", "lr_schedule": "cosine, 5% warmup",
                                "early_stopping": f"validation AUROC, patience {options.patience}",
                                "best_epoch": best_result.best_epoch},
            "parameters": int(sum(p.numel() for p in best_model.parameters())),
            "search": {"space": SEARCH_SPACE, "default_trial": DEFAULT_TRIAL,
                       "selection": "highest validation AUROC at the best epoch",
                       "trials": [asdict(r) for r in results]},
            "calibration": selection,
            "metrics": summary_metrics,
            "data": {"splits": {name: _split_summary(s) for name, s in splits.items()},
                     "rows": "eligible encounters (not died / hospice) with a known label",
                     **_data_versions(options.warehouse)},
            "timing": {"started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started_wall)),
                       "load_seconds": round(load_seconds, 1), "search_seconds": round(search_seconds, 1),
                       "total_seconds": round(time.monotonic() - started, 1),
                       "time_budget_minutes": options.time_budget_minutes, "torch_threads": torch.get_num_threads()},
            "environment": {"python": platform.python_version(), "torch": torch.__version__,
                            "transformers": transformers.__version__, "machine": platform.machine()},
        }
        (staging / "training.json").write_text(json.dumps(summary, indent=1, default=_json_default))
        write_manifest(staging)  # seals what scores; the card (not sealed) shows the version
        write_card(staging)
        _replace_folder(staging, out)
        log.info("saved %s: validation AUROC %.4f, ECE %.4f%s", out, summary_metrics["validation"]["auroc"],
                 summary_metrics["validation"]["ece"],
                 f"; test AUROC {summary_metrics['test']['auroc']:.4f}, ECE {summary_metrics['test']['ece']:.4f}"
                 if "test" in summary_metrics else "")
        return summary
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)
