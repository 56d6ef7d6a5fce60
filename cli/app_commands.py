"""`readmit app` serves the dashboard; `readmit demo` builds the embedded synthetic demo if needed, then serves it.

    readmit app --port 8501 [--warehouse W] [--model DIR] [--address 127.0.0.1]
    readmit demo [--port 8501] [--rows 20000] [--seed 7]

`demo` is what `make run` does on a fresh clone: when the configured warehouse has no scored
patients it runs the real pipeline (`readmit etl --source synthetic ...`, then `readmit score`),
prints how long each step took, starts Streamlit and prints the time until the worklist answers.
The demo's data follow the generator's "drift" scenario, and the build goes live like a hospital would
(docs/monitoring.md): the shipped model is recalibrated on the first year's outcomes into
data/warehouse-model (beside the warehouse), which scores the warehouse; the second year's predictions
and the outcomes are logged, so the Monitoring page shows the shift eight months before the end.

The model served: --model, else READMIT_MODEL_DIR, else the promoted one (`readmit promote`), else the
demo's own (demo only), else the shipped champion.
"""
from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from core.config import REPO_ROOT, get_settings
from core.errors import UserError
from core.warehouse import read_pointer

APP = REPO_ROOT / "app.py"
DEMO_WAREHOUSE = REPO_ROOT / "data" / "warehouse"
GO_LIVE_AFTER_DAYS = 365     # the demo goes live one year into its window; that year is its baseline


def register(subparsers) -> None:
    settings = get_settings()
    app = subparsers.add_parser("app", help="serve the Streamlit dashboard")
    _serve_arguments(app, settings)
    app.set_defaults(handler=run_app)

    demo = subparsers.add_parser("demo", help="build the synthetic demo warehouse if missing, then serve the dashboard")
    _serve_arguments(demo, settings)
    demo.add_argument("--rows", type=int, default=20_000, help="synthetic encounters to generate")
    demo.add_argument("--seed", type=int, default=7)
    demo.add_argument("--rebuild", action="store_true", help="rebuild the demo warehouse even if it exists")
    demo.add_argument("--cms-input", default=None,
                      help="CMS HRRP file or folder to load as the hospitals table (Hospitals page)")
    demo.add_argument("--no-serve", action="store_true", help="build only (for timing and CI)")
    demo.set_defaults(handler=run_demo)


def _serve_arguments(parser: argparse.ArgumentParser, settings) -> None:
    parser.add_argument("--port", type=int, default=8501)
    parser.add_argument("--address", default="127.0.0.1", help="interface to listen on (0.0.0.0 for all)")
    parser.add_argument("--warehouse", default=None, help=f"warehouse root (default {settings.warehouse})")
    parser.add_argument("--model", default=None, help=f"model folder (default {settings.model_dir})")


def _environment(args) -> dict[str, str]:
    env = dict(os.environ)
    if args.warehouse:
        env["READMIT_WAREHOUSE"] = str(args.warehouse)
    if args.model:
        env["READMIT_MODEL_DIR"] = str(args.model)
    elif not env.get("READMIT_MODEL_DIR") and (promoted := _promoted_model()):
        env["READMIT_MODEL_DIR"] = promoted
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _promoted_model():
    from serving.monitoring import promoted_model_dir

    return promoted_model_dir()


def streamlit_command(port: int, address: str = "127.0.0.1") -> list[str]:
    """Streamlit through `ui.launch`, which imports the pages' modules and loads the model before the port
    opens: "ready" then means a first page view does not wait for them."""
    return [sys.executable, "-m", "ui.launch", "run", str(APP), "--server.port", str(port),
            "--server.address", address, "--server.headless", "true", "--browser.gatherUsageStats", "false"]


def wait_until_ready(port: int, address: str, timeout: float = 60.0, process=None) -> float:
    """Seconds until Streamlit's health endpoint answers ok (raises UserError after `timeout`)."""
    start = time.perf_counter()
    host = "127.0.0.1" if address in ("0.0.0.0", "") else address
    while time.perf_counter() - start < timeout:
        if process is not None and process.poll() is not None:
            raise UserError(f"the dashboard exited with code {process.returncode} before it was ready")
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/_stcore/health", timeout=2) as response:
                if response.status == 200:
                    return time.perf_counter() - start
        except OSError:
            time.sleep(0.2)
    raise UserError(f"the dashboard did not answer on port {port} within {timeout:.0f} s")


def _serve(args, started: float) -> int:
    env = _environment(args)
    process = subprocess.Popen(streamlit_command(args.port, args.address), cwd=REPO_ROOT, env=env)
    try:
        waited = wait_until_ready(args.port, args.address, process=process)
        print(f"readmit: dashboard ready at http://{args.address}:{args.port}/ in {waited:.1f} s "
              f"({time.perf_counter() - started:.1f} s since start)", flush=True)
        return process.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


def run_app(args) -> int:
    return _serve(args, time.perf_counter())


def _has_scores(root: str) -> bool:
    try:
        return "predictions" in read_pointer(root).get("tables", {})
    except (OSError, ValueError):
        return False


def _step(name: str, command: list[str], env: dict[str, str]) -> float:
    print(f"readmit demo: {name}: {' '.join(command[2:])}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=REPO_ROOT, env=env)
    took = time.perf_counter() - start
    if result.returncode != 0:
        raise UserError(f"{name} failed (exit code {result.returncode}); see the messages above")
    print(f"readmit demo: {name} took {took:.1f} s", flush=True)
    return took


def run_demo(args) -> int:
    started = time.perf_counter()
    configured = args.warehouse or os.environ.get("READMIT_WAREHOUSE")
    root = str(configured or DEMO_WAREHOUSE)
    args.warehouse = root
    if args.rebuild or not _has_scores(root):
        if configured and not args.rebuild:
            raise UserError(f"the configured warehouse {root} has no scored patients; run `readmit score "
                            f"--warehouse {root}` or unset READMIT_WAREHOUSE to use the embedded demo")
        took = _build_demo(args, root)
        print(f"readmit demo: demo warehouse built in {sum(took.values()):.1f} s ("
              + ", ".join(f"{name} {seconds:.1f} s" for name, seconds in took.items()) + ")", flush=True)
    else:
        print(f"readmit demo: using the existing warehouse {root}", flush=True)
    if not args.model and not os.environ.get("READMIT_MODEL_DIR") and (demo_model(root) / "config.json").exists():
        args.model = str(demo_model(root)) if _promoted_model() is None else None
    if args.no_serve:
        print(f"readmit demo: ready in {time.perf_counter() - started:.1f} s (not serving: --no-serve)")
        return 0
    return _serve(args, started)


def demo_model(root: str) -> Path:
    """The demo's go-live model, beside its warehouse (data/warehouse -> data/warehouse-model)."""
    folder = Path(root)
    return folder.with_name(f"{folder.name}-model")


def _build_demo(args, root: str) -> dict[str, float]:
    """ETL of the drift scenario, go-live recalibration of the shipped model on the first year, scoring,
    then the prediction log from go-live on and the outcomes. Returns the seconds of each step."""
    from core.synthetic import window_start

    env = _environment(args)
    cli = [sys.executable, "-m", "cli.main"]
    base_model = args.model or os.environ.get("READMIT_MODEL_DIR") or get_settings().model_dir
    go_live = window_start(dt.date.today()) + dt.timedelta(days=GO_LIVE_AFTER_DAYS)
    took = {"ETL": _step("synthetic cohort (drift scenario) through the ETL", cli + [
        "etl", "--source", "synthetic", "--scenario", "drift", "--rows", str(args.rows), "--seed", str(args.seed),
        "--warehouse", root], env)}
    model = demo_model(root)
    shutil.rmtree(model, ignore_errors=True)
    took["go-live recalibration"] = _step("recalibration of the shipped model on the first year", cli + [
        "recalibrate", "--warehouse", root, "--model", str(base_model), "--since", window_start(dt.date.today()).isoformat(),
        "--until", go_live.isoformat(), "--as-of", go_live.isoformat(), "--out", str(model), "--rebase-reference",
        "--by", "readmit demo", "--reason", "go-live: local recalibration on the first year's outcomes (demo)"], env)
    took["scoring"] = _step("scoring with the go-live model", cli + ["score", "--warehouse", root, "--model",
                                                                     str(model)], env)
    took["monitoring log"] = _step("prediction log from go-live and outcomes", cli + [
        "log-predictions", "--warehouse", root, "--since", go_live.isoformat()], env)
    took["monitoring log"] += _step("outcomes", cli + ["outcomes", "--warehouse", root], env)
    if args.cms_input:
        took["hospitals"] = _step("CMS hospital benchmarks through the ETL", cli + [
            "etl", "--source", "cms-hrrp", "--input", args.cms_input, "--warehouse", root], env)
    return took
