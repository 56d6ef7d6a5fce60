"""Load test of the scoring API on loopback: a real `readmit api` (uvicorn) with a real model.

    python benchmarks/api_load.py [--model models/champion] [--clients 20] [--seconds 60] [--workers 1]
                                  [--batch 1000] [--url http://127.0.0.1:PORT --key KEY]

Starts the server on a free 127.0.0.1 port (unless --url is given), checks /ready, then
1. `/predict` with the OpenAPI example at N concurrent clients (httpx.AsyncClient, one keep-alive
   connection per client) for S seconds: p50, p95, p99 latency, throughput, error count;
   Each request is a different encounter of a different patient (a pool of 1,000), as on a ward.
2. one `/predict/batch` of 1,000 synthetic-looking records (distinct patients), timed 3 times;
and prints one JSON object with the figures (and the aims, for comparison). Loopback only.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from core.schema import EncounterIn

REPO = Path(__file__).resolve().parent.parent


EXAMPLE = EncounterIn.model_config["json_schema_extra"]["examples"][0]
AIMS = {"p50_ms": 15, "p99_ms": 50, "errors": 0, "batch_1000_s": 1.0}


def batch_records(n: int, seed: int = 0) -> list[dict]:
    rng = np.random.default_rng(seed)
    codes = ["428.0", "414.01", "486", "250.02", "410.71", "427.31", "584.9", "599.0", "715.96", "V57.89"]
    out = []
    for i in range(n):
        record = dict(EXAMPLE)
        record.update(encounter_id=f"BENCH{i:06d}", patient_id=f"BP{i:06d}", age_years=float(rng.integers(20, 95)),
                      age_band=None, length_of_stay_days=float(rng.integers(1, 15)),
                      num_lab_procedures=int(rng.integers(1, 100)), num_medications=int(rng.integers(1, 40)),
                      prior_inpatient_visits=int(rng.poisson(0.6)), prior_emergency_visits=int(rng.poisson(0.2)),
                      diagnoses=list(rng.choice(codes, size=3, replace=False)),
                      discharge_disposition=str(rng.choice(["home", "home_health", "snf_rehab"])))
        out.append(record)
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, workers: int, key: str) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "READMIT_API_KEY": key, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
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


async def closed_loop(base: str, key: str, clients: int, seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    sent = 0
    statuses: dict[str, int] = {}
    bodies = [json.dumps(r).encode() for r in batch_records(1000, seed=1)]  # distinct patients, like a ward
    body = bodies[0]
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    stop_at = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal errors
        nonlocal sent
        async with httpx.AsyncClient(base_url=base, timeout=30, limits=httpx.Limits(max_connections=1)) as c:
            while time.perf_counter() < stop_at:
                sent += 1
                payload = bodies[sent % len(bodies)]
                start = time.perf_counter()
                try:
                    response = await c.post("/predict", content=payload, headers=headers)
                    ok = response.status_code == 200
                    statuses[str(response.status_code)] = statuses.get(str(response.status_code), 0) + 1
                except httpx.HTTPError as error:
                    ok = False
                    statuses[type(error).__name__] = statuses.get(type(error).__name__, 0) + 1
                latencies.append(time.perf_counter() - start)
                errors += not ok

    # warm-up: a few sequential requests (first-call allocations), not counted
    async with httpx.AsyncClient(base_url=base, timeout=30) as c:
        for _ in range(10):
            await c.post("/predict", content=body, headers=headers)
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed = time.perf_counter() - started
    ms = np.asarray(latencies) * 1000
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": len(latencies), "errors": errors,
            "statuses": statuses, "throughput_rps": round(len(latencies) / elapsed, 1),
            "p50_ms": round(float(np.percentile(ms, 50)), 1), "p95_ms": round(float(np.percentile(ms, 95)), 1),
            "p99_ms": round(float(np.percentile(ms, 99)), 1), "max_ms": round(float(ms.max()), 1)}


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(REPO / "models" / "champion"))
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--url", help="use a running server instead of starting one")
    parser.add_argument("--key", default="bench-key-0123456789abcdef0123")
    args = parser.parse_args()
    process = None
    if args.url:
        base = args.url.rstrip("/")
    else:
        process, base = start_server(args.model, args.workers, args.key)
    try:
        health = httpx.get(f"{base}/health").json()
        load_avg = os.getloadavg()
        result = {"model_version": health["model_version"], "workers": args.workers, "cpus": os.cpu_count(),
                  "load_average_before": [round(x, 1) for x in load_avg],
                  "predict": asyncio.run(closed_loop(base, args.key, args.clients, args.seconds)),
                  "batch": time_batch(base, args.key, args.batch), "aims": AIMS}
    finally:
        if process is not None:
            process.terminate()
            process.wait(timeout=20)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
