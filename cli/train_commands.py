"""`readmit train`, `readmit seal` and `readmit publish`."""
from __future__ import annotations

import argparse
import os

from core.config import DEFAULT_MODEL_DIR, get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    train = subparsers.add_parser("train", help="train, tune and calibrate the readmission transformer",
                                  description="Train the transformer on the warehouse features (train split), tune it "
                                              "on validation within a time budget, calibrate, and write a Hugging Face "
                                              "model folder.")
    train.add_argument("--warehouse", default=None, help="warehouse root (default: READMIT_WAREHOUSE or data/warehouse)")
    train.add_argument("--out", required=True, help="model folder to write (replaced atomically when done)")
    train.add_argument("--time-budget-minutes", type=float, default=20.0,
                       help="wall-clock budget for the hyperparameter search (default 20)")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--max-epochs", type=int, default=6,
                       help="epochs per trial (cosine schedule length) before early stopping (default 6)")
    train.add_argument("--trials", type=int, default=4, help="search trials, the first being the default (default 4)")
    train.add_argument("--patience", type=int, default=1, help="early-stopping patience in epochs (default 1)")
    train.add_argument("--batch-size", type=int, default=512)
    train.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default 1)")
    train.set_defaults(handler=_train)

    publish = subparsers.add_parser("publish", help="upload a model folder to the Hugging Face Hub")
    publish.add_argument("--repo-id", required=True, help="ORG/NAME of the model repository")
    publish.add_argument("--model", default=None, help="model folder (default: READMIT_MODEL_DIR or models/champion)")
    publish.add_argument("--private", action="store_true", help="create the repository as private")
    publish.add_argument("--token-env", default="HF_TOKEN", help="environment variable holding the token (default HF_TOKEN)")
    publish.set_defaults(handler=_publish)

    seal = subparsers.add_parser("seal", help="rewrite a model folder's manifest.json after a deliberate change",
                                 description="Check a model folder's content (tensors exactly as config.json says, "
                                             "valid calibration and thresholds), then rewrite manifest.json (the "
                                             "SHA-256 of every file that can change a score, and the version "
                                             "derived from them) and re-render the card. `readmit` refuses to load "
                                             "a folder whose files differ from its manifest.")
    seal.add_argument("--model", default=None, help="model folder (default: READMIT_MODEL_DIR or models/champion)")
    seal.set_defaults(handler=_seal)


def _train(args: argparse.Namespace) -> int:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from models.train import TrainOptions, train
    summary = train(TrainOptions(warehouse=args.warehouse or get_settings().warehouse, out=args.out,
                                 time_budget_minutes=args.time_budget_minutes, seed=args.seed,
                                 max_epochs=args.max_epochs, n_trials=args.trials, patience=args.patience,
                                 batch_size=args.batch_size, threads=args.threads))
    metrics = summary["metrics"]
    line = (f"saved {args.out}: validation AUROC {metrics['validation']['auroc']:.4f}, "
            f"ECE {metrics['validation']['ece']:.4f}")
    if "test" in metrics:
        line += f"; test AUROC {metrics['test']['auroc']:.4f}, ECE {metrics['test']['ece']:.4f}"
    print(line + f"; {summary['timing']['total_seconds']:.0f} s")
    return 0


def _publish(args: argparse.Namespace) -> int:
    from models.publish import files_to_upload, publish
    folder = args.model or get_settings().model_dir or str(DEFAULT_MODEL_DIR)
    url = publish(folder, args.repo_id, private=args.private, token_env=args.token_env)
    from pathlib import Path
    print(f"uploaded {len(files_to_upload(Path(folder)))} files to {url}")
    return 0


def _seal(args: argparse.Namespace) -> int:
    from models.card import write_card
    from models.inference import ReadmitPredictor
    from models.manifest import write_manifest
    folder = args.model or get_settings().model_dir or str(DEFAULT_MODEL_DIR)
    ReadmitPredictor.load(folder, check_manifest=False)  # never seal content that would not load
    manifest = write_manifest(folder)
    write_card(folder)
    print(f"sealed {folder}: {len(manifest['files'])} files, version {manifest['version']} "
          "(metrics.json keeps the version it measured: rerun `readmit evaluate` if scores changed)")
    return 0
