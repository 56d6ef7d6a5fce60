"""`readmit api`: serve the scoring API with uvicorn.

Refuses to start without `READMIT_API_KEY` in the environment (never read from a `.env` file), or
with a weak key. `--insecure-no-auth` serves without keys, on 127.0.0.1 only, with one worker: this
process builds the app itself and hands it to uvicorn, so the flag never travels through a variable
or a file that something else could set (`READMIT_API_INSECURE_NO_AUTH` means nothing). Each worker
is a separate process that loads the model once and runs torch with `READMIT_TORCH_THREADS`
threads (default 1); use about one worker per core.
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
IGNORED_VARIABLE = "READMIT_API_INSECURE_NO_AUTH"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("api", help="serve the scoring API (FastAPI + uvicorn)",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default=LOOPBACK, help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000)")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn worker processes (default 1)")
    parser.add_argument("--model", metavar="DIR", help="model folder (default READMIT_MODEL_DIR or models/champion)")
    parser.add_argument("--insecure-no-auth", action="store_true",
                        help="serve without API keys, on 127.0.0.1 only, one worker (local experiments)")
    parser.set_defaults(handler=run)


def prepare_environment(args: argparse.Namespace):
    """Check flags and settings and export what the workers read; returns (host, Settings, ApiSettings)."""
    from pydantic import ValidationError

    from api.security import ApiSettings
    from core.config import Settings

    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    if args.insecure_no_auth and args.workers > 1:
        raise UserError("--insecure-no-auth serves one worker only (for local experiments): drop --workers")
    if IGNORED_VARIABLE in os.environ:
        log.warning("%s is ignored: only `readmit api --insecure-no-auth` turns authentication off", IGNORED_VARIABLE)
    host = args.host
    if args.insecure_no_auth and host != LOOPBACK:
        log.warning("--insecure-no-auth: binding %s instead of %s", LOOPBACK, host)
        host = LOOPBACK
    if args.model:
        model_dir = Path(args.model)
        if not (model_dir / "config.json").exists():
            raise UserError(f"--model {model_dir}: no config.json there (train or publish a model first)")
        os.environ["READMIT_MODEL_DIR"] = str(model_dir.resolve())
    try:
        settings = Settings()
        api_settings = ApiSettings.from_settings(settings, insecure_no_auth=args.insecure_no_auth)
    except ValidationError as error:
        raise UserError("; ".join(e["msg"].removeprefix("Value error, ") for e in error.errors())) from None
    if api_settings.key is None:
        log.warning("authentication is OFF (--insecure-no-auth): anyone on this machine can call the API")
    os.environ.setdefault("OMP_NUM_THREADS", str(settings.torch_threads))
    os.environ.setdefault("MKL_NUM_THREADS", os.environ["OMP_NUM_THREADS"])
    return host, settings, api_settings


def run(args: argparse.Namespace) -> int:
    host, settings, api_settings = prepare_environment(args)  # before torch loads: refusals come at once
    import uvicorn

    from api.main import create_app

    options = {"host": host, "port": args.port, "access_log": False, "proxy_headers": False, "server_header": False,
               "timeout_graceful_shutdown": 10}
    if args.workers == 1:  # the app is built here, with the settings checked above
        uvicorn.run(create_app(api_settings, settings), **options)
        return 0
    metrics_dir = tempfile.mkdtemp(prefix="readmit-metrics-")  # Prometheus values of every worker, summed
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
    try:  # each worker builds its app from the environment: keys required, no insecure mode
        uvicorn.run("api.main:create_app", factory=True, workers=args.workers, **options)
    finally:
        shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0
