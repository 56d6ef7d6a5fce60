"""Load test of the scoring API on loopback: a real `readmit api` (uvicorn) with a real model.

    python benchmarks/api_load.py [--model models/champion] [--clients 20] [--seconds 30] [--workers 1 2]
                                  [--batch 1000] [--batch-clients 4] [--url http://127.0.0.1:PORT --key KEY]

For each worker count it starts the server on a free 127.0.0.1 port (unless --url is given), checks
/ready, then runs, one after another on the same server, N concurrent clients (httpx.AsyncClient,
one keep-alive connection each) for S seconds per scenario:
1. `GET /health`: the framework's own ceiling on this machine at this moment;
2. `POST /predict`, every request a different encounter of a different patient (a pool of 1,000, as on a ward);
3. `POST /predict` repeating the OpenAPI example (identical requests);
4. `POST /predict/batch` of `--batch` records (distinct patients) at `--batch-clients` clients,
   plus the best of 3 single batches;
and prints one JSON object: latency percentiles, throughput, errors, each /predict scenario's throughput
as a share of /health's from the same run, the load average before and after, and the aims.

    python benchmarks/api_load.py --prediction-log-ab [--log-modes sync async] [--seconds 20] [--rounds 3]

measures only scenario 2 on servers with the prediction log off and on (READMIT_API_PREDICTION_LOG: `sync`,
the durable default, and `async`), in alternating rounds, and prints each mode's throughput, its ratio to
"off" (per round and on average), the load average, and the rows the log counted.
The key is generated per run (`secrets.token_urlsafe(32)`: passes the key-strength rule). Loopback only.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from core.schema import EncounterIn

REPO = Path(__file__).resolve().parent.parent


EXAMPLE = EncounterIn.model_config["json_schema_extra"]["examples"][0]
AIMS = {"predict_distinct_vs_health": 0.6, "predict_example_vs_health": 0.4, "errors": 0, "batch_1000_s": 1.0}


def batch_records(n: int, seed: int = 0) -> list[dict]:
    """Valid records of distinct patients: the stay length matches the admission and discharge dates."""
    rng = np.random.default_rng(seed)
    codes = ["428.0", "414.01", "486", "250.02", "410.71", "427.31", "584.9", "599.0", "715.96", "V57.89"]
    admit = dt.datetime.combine(dt.date.today() - dt.timedelta(days=40), dt.time(8, 30))
    out = []
    for i in range(n):
        stay = int(rng.integers(1, 15))
        record = dict(EXAMPLE)
        record.update(encounter_id=f"BENCH{i:06d}", patient_id=f"BP{i:06d}", age_years=float(rng.integers(20, 95)),
                      age_band=None, length_of_stay_days=float(stay), admit_time=admit.isoformat(),
                      discharge_time=(admit + dt.timedelta(days=stay)).isoformat(),
                      num_lab_procedures=int(rng.integers(1, 100)), num_medications=int(rng.integers(1, 40)),
                      prior_inpatient_visits=int(rng.poisson(0.6)), prior_emergency_visits=int(rng.poisson(0.2)),
                      diagnoses=[str(c) for c in rng.choice(codes, size=3, replace=False)],
                      discharge_disposition=str(rng.choice(["home", "home_health", "snf_rehab"])))
        out.append(record)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, workers: int, key: str, extra_env: dict | None = None) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "READMIT_API_KEY": key, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO), **(extra_env or {})}
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "api", "--host", "127.0.0.1", "--port", str(port),
                                "--workers", str(workers), "--model", model], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"{base}/ready", timeout=2).status_code == 200:
                return process, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    process.kill()
    raise SystemExit("server not ready after 180 s")


def summary(latencies: list[float], statuses: dict[str, int], elapsed: float, clients: int) -> dict:
    ms = np.asarray(latencies) * 1000
    errors = sum(count for status, count in statuses.items() if status != "200")
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": len(latencies), "errors": errors,
            "statuses": statuses, "throughput_rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1)}


async def closed_loop(base: str, key: str, clients: int, seconds: float, method: str, path: str,
                      bodies: list[bytes]) -> dict:
    """`clients` clients, each sending its next request as soon as the last one is answered."""
    latencies: list[float] = []
    statuses: dict[str, int] = {}
    sent = 0
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}

    async def client(stop_at: float) -> None:
        nonlocal sent
        async with httpx.AsyncClient(base_url=base, timeout=120, limits=httpx.Limits(max_connections=1)) as c:
            while time.perf_counter() < stop_at:
                sent += 1
                start = time.perf_counter()
                try:
                    response = await c.request(method, path, content=bodies[sent % len(bodies)] if bodies else None,
                                               headers=headers)
                    status = str(response.status_code)
                except httpx.HTTPError as error:
                    status = type(error).__name__
                statuses[status] = statuses.get(status, 0) + 1
                latencies.append(time.perf_counter() - start)

    await asyncio.gather(*(client(time.perf_counter() + 2) for _ in range(min(clients, 4))))  # warm-up
    latencies.clear()
    statuses.clear()
    started = time.perf_counter()
    await asyncio.gather(*(client(started + seconds) for _ in range(clients)))
    return summary(latencies, statuses, time.perf_counter() - started, clients)


def time_batch(base: str, key: str, n: int, repeats: int = 3) -> dict:
    records = batch_records(n)
    headers = {"Authorization": f"Bearer {key}"}
    times = []
    with httpx.Client(base_url=base, timeout=120) as c:
        for _ in range(repeats):
            start = time.perf_counter()
            response = c.post("/predict/batch", json={"encounters": records}, headers=headers)
            times.append(time.perf_counter() - start)
            if response.status_code != 200:
                return {"records": n, "status": response.status_code, "detail": response.text[:300]}
    scored = sum(p["risk"] is not None for p in response.json()["predictions"])
    return {"records": n, "scored": scored, "seconds": [round(t, 3) for t in times], "best_s": round(min(times), 3)}


def load_average() -> list[float]:
    return [round(x, 1) for x in os.getloadavg()]


def run_scenarios(base: str, key: str, args: argparse.Namespace) -> dict:
    distinct = [json.dumps(r).encode() for r in batch_records(1000, seed=1)]
    example = [json.dumps(EXAMPLE).encode()]
    batch = [json.dumps({"encounters": batch_records(args.batch, seed=2)}).encode()]
    out = {"load_average_before": load_average()}
    scenarios = {"health": ("GET", "/health", [], args.clients),
                 "predict_distinct": ("POST", "/predict", distinct, args.clients),
                 "predict_example": ("POST", "/predict", example, args.clients),
                 "predict_batch": ("POST", "/predict/batch", batch, args.batch_clients)}
    for name, (method, path, bodies, clients) in scenarios.items():
        out[name] = asyncio.run(closed_loop(base, key, clients, args.seconds, method, path, bodies))
    out["predict_batch"]["records_per_s"] = round(out["predict_batch"]["throughput_rps"] * args.batch, 1)
    out["batch_single"] = time_batch(base, key, args.batch)
    health = out["health"]["throughput_rps"]
    out["vs_health"] = {name: round(out[name]["throughput_rps"] / health, 2)
                        for name in ("predict_distinct", "predict_example")}
    out["load_average_after"] = load_average()
    return out


def log_counts(base: str, key: str) -> dict:
    """The server's prediction-log counters (logged, dropped, failed) from /metrics."""
    text = httpx.get(f"{base}/metrics", headers={"Authorization": f"Bearer {key}"}).text
    out = {}
    for line in text.splitlines():
        if line.startswith("readmit_api_prediction_log_rows_total{"):
            outcome = line.split('outcome="')[1].split('"')[0]
            out[outcome] = float(line.rsplit(" ", 1)[1])
    return out


def prediction_log_ab(args: argparse.Namespace) -> dict:
    """/predict (distinct encounters, `--clients` clients) on two servers started side by side, one with the
    prediction log off and one per mode in `--log-modes`, measured in alternating rounds so a change of
    the machine's load hits every mode alike. The log goes to a temporary SQLite database."""
    distinct = [json.dumps(r).encode() for r in batch_records(1000, seed=1)]
    folder = tempfile.mkdtemp(prefix="readmit-api-log-bench-")
    modes = ["off", *args.log_modes]
    servers = {}
    try:
        for mode in modes:
            servers[mode] = start_server(args.model, 1, args.key, {
                "READMIT_API_PREDICTION_LOG": mode, "READMIT_DATABASE_URL": f"sqlite:///{folder}/ops.sqlite3"})
        out: dict = {"load_average_before": load_average(), "clients": args.clients, "seconds": args.seconds,
                     "rounds": []}
        for _ in range(args.rounds):
            this_round = {mode: asyncio.run(closed_loop(servers[mode][1], args.key, args.clients, args.seconds,
                                                        "POST", "/predict", distinct)) for mode in modes}
            out["rounds"].append({**this_round, "load_average": load_average()})
        for mode in modes:
            out[f"{mode}_rps"] = round(float(np.mean([r[mode]["throughput_rps"] for r in out["rounds"]])), 1)
            out[f"{mode}_p95_ms"] = round(float(np.mean([r[mode]["p95_ms"] for r in out["rounds"]])), 1)
        out["ratio_vs_off"] = {mode: round(out[f"{mode}_rps"] / out["off_rps"], 3) for mode in args.log_modes}
        out["ratio_vs_off_by_round"] = {mode: [round(r[mode]["throughput_rps"] / r["off"]["throughput_rps"], 3)
                                               for r in out["rounds"]] for mode in args.log_modes}
        time.sleep(2)
        out["prediction_log_rows"] = {mode: log_counts(servers[mode][1], args.key) for mode in args.log_modes}
        out["load_average_after"] = load_average()
        return out
    finally:
        for process, _ in servers.values():
            process.terminate()
            process.wait(timeout=30)
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prediction-log-ab", action="store_true",
                        help="only /predict with the prediction log off against --log-modes (alternating rounds)")
    parser.add_argument("--log-modes", nargs="+", default=["sync", "async"], choices=("async", "sync"))
    parser.add_argument("--rounds", type=int, default=3, help="rounds of --prediction-log-ab")
    parser.add_argument("--model", default=str(REPO / "models" / "champion"))
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=30, help="per scenario")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="one server per count, in turn")
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--batch-clients", type=int, default=4)
    parser.add_argument("--url", help="use a running server instead of starting one")
    parser.add_argument("--key", default=secrets.token_urlsafe(32), help="(default: a new random key)")
    args = parser.parse_args()
    if args.prediction_log_ab:
        print(json.dumps({"cpus": os.cpu_count(), "aim": "logged throughput >= 0.9 x unlogged",
                          **prediction_log_ab(args)}, indent=1))
        return 0
    result: dict = {"cpus": os.cpu_count(), "aims": AIMS, "runs": []}
    for workers in ([None] if args.url else args.workers):
        process = None
        if args.url:
            base = args.url.rstrip("/")
        else:
            process, base = start_server(args.model, workers, args.key)
        try:
            run = {"workers": workers, "model_version": httpx.get(f"{base}/health").json()["model_version"]}
            run.update(run_scenarios(base, args.key, args))
            result["runs"].append(run)
        finally:
            if process is not None:
                process.terminate()
                process.wait(timeout=20)
    if len(result["runs"]) > 1:
        first = result["runs"][0]["predict_batch"]["records_per_s"]
        result["batch_records_per_s_vs_first"] = {str(r["workers"]): round(r["predict_batch"]["records_per_s"] / first, 2)
                                                  for r in result["runs"]}
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
