"""The same ETL job on a standalone Spark cluster (master + worker on 127.0.0.1) gives the same
tables as local mode."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pyspark
import pytest

from core.warehouse import Warehouse

FIXTURES = Path(__file__).parent / "fixtures" / "etl"
READMIT = str(Path(sys.executable).with_name("readmit"))
SPARK_CLASS = str(Path(pyspark.__file__).parent / "bin" / "spark-class")
ENV = {**os.environ, "SPARK_LOCAL_IP": "127.0.0.1", "OMP_NUM_THREADS": "1", "PYSPARK_PYTHON": sys.executable,
       "SPARK_NO_DAEMONIZE": "1"}


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_for_port(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


@pytest.fixture
def standalone_cluster(tmp_path):
    port = _free_port()
    logs = tmp_path / "cluster-logs"
    logs.mkdir()
    started = []
    try:
        started.append(subprocess.Popen(
            [SPARK_CLASS, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1", "--port", str(port),
             "--webui-port", str(_free_port())],
            env=ENV, stdout=open(logs / "master.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))
        _wait_for_port(port, 60)
        started.append(subprocess.Popen(
            [SPARK_CLASS, "org.apache.spark.deploy.worker.Worker", f"spark://127.0.0.1:{port}", "--cores", "1",
             "--memory", "1g", "--webui-port", str(_free_port()), "--work-dir", str(tmp_path / "work")],
            env=ENV, stdout=open(logs / "worker.log", "w"), stderr=subprocess.STDOUT, start_new_session=True))
        yield f"spark://127.0.0.1:{port}"
    finally:
        for process in reversed(started):
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=30)


def _run(master: str, warehouse: Path) -> None:
    result = subprocess.run([READMIT, "etl", "--source", "diabetes130", "--input",
                             str(FIXTURES / "diabetes130_small.csv"), "--warehouse", str(warehouse),
                             "--master", master, "--driver-memory", "1g", "--ratios", "1,0,0"],
                            capture_output=True, text=True, env=ENV, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]


def _tables(warehouse: Path) -> dict[str, pd.DataFrame]:
    wh = Warehouse(str(warehouse))
    return {t: wh.query(f"SELECT * FROM {t} ORDER BY encounter_id") for t in ("encounters", "features")}


@pytest.mark.spark
@pytest.mark.slow
def test_standalone_cluster_output_equals_local(standalone_cluster, tmp_path):
    _run(standalone_cluster, tmp_path / "cluster")
    _run("local[2]", tmp_path / "local")
    cluster, local = _tables(tmp_path / "cluster"), _tables(tmp_path / "local")
    for table in ("encounters", "features"):
        pd.testing.assert_frame_equal(cluster[table], local[table])
    assert Warehouse(str(tmp_path / "cluster")).manifest("features")["spark"]["master"] == standalone_cluster
    states = [next((tmp_path / w / "preprocessing").glob("*/preprocessing.json")).read_text()
              for w in ("cluster", "local")]
    assert states[0] == states[1]
