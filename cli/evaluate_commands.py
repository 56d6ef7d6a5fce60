"""`readmit evaluate`: the transformer beside LACE and the Spark MLlib baselines, same split, same rows.

Heavy imports (torch, Spark) happen inside the handler so `readmit --help` stays fast.
"""
from __future__ import annotations

import argparse
import logging
import time

from core.config import get_settings
from core.errors import UserError

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction) -> None:
    settings = get_settings()
    parser = subparsers.add_parser(
        "evaluate", help="metrics, intervals and subgroups for a model vs LACE and MLlib baselines")
    parser.add_argument("--warehouse", default=settings.warehouse, help="warehouse root")
    parser.add_argument("--model", default=settings.model_dir, help="model folder (Hugging Face format)")
    parser.add_argument("--split", default="test", choices=["train", "validation", "test"])
    parser.add_argument("--skip-mllib", action="store_true", help="do not train the Spark MLlib baselines")
    parser.add_argument("--out", help="where metrics.json goes (default: the model folder, whose card is then "
                        "re-rendered)")
    parser.add_argument("--n-boot", type=int, default=1000, help="patient-cluster bootstrap replicates")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--master", default=settings.spark_master, help="Spark master for the MLlib baselines")
    parser.add_argument("--driver-memory", default=settings.spark_driver_memory)
    parser.set_defaults(handler=evaluate_command)


def mllib_predictions(warehouse: str, master: str, driver_memory: str):
    """Train and tune the MLlib baselines; their validation + test predictions and summaries."""
    from core.warehouse import WarehouseError
    from etl.baselines import run_baselines
    from etl.spark import get_spark
    spark = get_spark(master=master, driver_memory=driver_memory, app_name="readmit-evaluate")
    try:
        try:
            results = run_baselines(spark, warehouse)
        except WarehouseError as error:
            raise UserError(str(error)) from error
        return ({name: r.predictions for name, r in results.items()},
                {name: r.summary() for name, r in results.items()})
    finally:
        spark.stop()


def evaluate_command(args: argparse.Namespace) -> int:
    from models.card import CARD_FILE
    from models.evaluate import evaluate, format_table, load_predictor, writes_model_folder
    try:
        import torch
        torch.set_num_threads(max(1, get_settings().torch_threads))
    except ImportError:  # pragma: no cover - torch is a runtime dependency
        pass
    started = time.time()
    predictor = load_predictor(args.model)  # fail fast, before minutes of MLlib training
    extra, extra_info = {}, {}
    if not args.skip_mllib:
        t0 = time.time()
        extra, extra_info = mllib_predictions(args.warehouse, args.master, args.driver_memory)
        log.info("MLlib baselines trained and tuned in %.0fs", time.time() - t0)
    report = evaluate(args.warehouse, args.model, split=args.split, extra=extra, extra_info=extra_info,
                      out_dir=args.out, predictor=predictor, n_boot=args.n_boot, seed=args.seed)
    rows = report["rows"]
    print(f"split '{args.split}': {rows['evaluated']} eligible labelled encounters, {rows['patients']} patients, "
          f"prevalence {rows['positives'] / rows['evaluated']:.3f}")
    print(format_table(report["comparison"]))
    print(f"wrote {args.out or args.model}/metrics.json in {time.time() - started:.0f}s")
    if writes_model_folder(args.model, args.out):
        print(f"re-rendered the model card {args.model}/{CARD_FILE} from it")
    return 0
