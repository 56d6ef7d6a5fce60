"""`readmit api`: serve the scoring API with uvicorn.

Refuses to start without `READMIT_API_KEY` unless `--insecure-no-auth` is given, which also forces
the server onto 127.0.0.1. Each worker is a separate process that loads the model once and runs
torch with `READMIT_TORCH_THREADS` threads (default 1); use about one worker per core.
"""
from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path

from core.errors import UserError

log = logging.getLogger(__name__)
LOOPBACK = "127.0.0.1"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("api", help="serve the scoring API (FastAPI + uvicorn)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=LOOPBACK, help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    parser.add_argument("--model", metavar="DIR", help="model folder (default READMIT_MODEL_DIR or models/champion)")
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="serve without API keys, on 127.0.0.1 only (local experiments)")
    parser.set_defaults(handler=run)


def prepare_environment(args: argparse.Namespace) -> str:
    """Check settings and export them for the workers; returns the host to bind."""
    from pydantic import ValidationError

    from api.security import ApiSettings

    host = args.host
    if args.insecure_no_auth:
        os.environ["READMIT_API_INSECURE_NO_AUTH"] = "1"
        if host != LOOPBACK:
            log.warning("--insecure-no-auth: binding %s instead of %s", LOOPBACK, host)
        host = LOOPBACK
    else:
        os.environ.pop("READMIT_API_INSECURE_NO_AUTH", None)
    try:
        settings = ApiSettings()
    except ValidationError as error:
        raise UserError("; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())) from None
    if settings.key is None:
        log.warning("authentication is OFF (--insecure-no-auth): anyone on this machine can call the API")
    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    if args.model:
        model_dir = Path(args.model)
        if not (model_dir / "config.json").exists():
            raise UserError(f"--model {model_dir}: no config.json there (train or publish a model first)")
        os.environ["READMIT_MODEL_DIR"] = str(model_dir.resolve())
    os.environ.setdefault("OMP_NUM_THREADS", os.environ.get("READMIT_TORCH_THREADS", "1"))
    os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
    return host


def run(args: argparse.Namespace) -> int:
    import uvicorn

    host = prepare_environment(args)
    metrics_dir = None
    if args.workers > 1:  # Prometheus values from every worker, summed at /metrics
        metrics_dir = tempfile.mkdtemp(prefix="readmit-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:
        uvicorn.run("api.main:create_app", factory=True, host=host, port=args.port, workers=args.workers,
                    access_log=False, proxy_headers=False, server_header=False, timeout_graceful_shutdown=10)
    finally:
        if metrics_dir:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
