"""Shared fixtures: the real Diabetes 130 data (fails loudly when absent) and one Spark session."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from etl.spark import get_spark

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
# Tests (and the servers they start, which inherit the environment) never write the repository's own
# operational database: one private SQLite file per test session unless a test names another.
os.environ.setdefault("READMIT_DATABASE_URL",
                      f"sqlite:///{Path(tempfile.mkdtemp(prefix='readmit-tests-')) / 'operational.sqlite3'}")


def shared_file(*parts: str) -> Path:
    """A file of ../shared/data; a missing one is an error, never a skip."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(f"test data missing: {path} (the real data must be in ../shared/data)")
    return path


@pytest.fixture(scope="session")
def diabetes_csv() -> Path:
    return shared_file("diabetes130", "diabetic_data_dev.csv")


@pytest.fixture(scope="session")
def mimic3_dir() -> Path:
    return shared_file("mimic3_demo")


@pytest.fixture(scope="session")
def cms_dir() -> Path:
    return shared_file("cms_hrrp")


@pytest.fixture(scope="session")
def spark():
    session = get_spark(master="local[2]", driver_memory="2g", app_name="readmit-tests", shuffle_partitions=4)
    yield session
    session.stop()


from fixtures.postgres import postgres_database, postgres_server  # noqa: E402,F401
