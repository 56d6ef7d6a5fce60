"""The Hugging Face Space folder: `scripts/build_space.py` assembles it, the dashboard starts from it.

"Plain venv": the dashboard is started with the project's interpreter (its site-packages hold the
pinned dependencies) but with the Space folder as working directory and first on PYTHONPATH, and the
test asserts that `core`, `api` and `app.py` are imported from the Space folder, not the repository:
the folder is self-sufficient given the requirements, which is what the Docker image provides.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.app.make_warehouse import build
from tests.test_api_dockerfile import instructions
from tests.test_api_integration import build_tiny_model_dir

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import build_space  # noqa: E402


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, diabetes_csv) -> Path:
    champion = REPO / "models" / "champion"
    if (champion / "config.json").exists():
        return champion
    return build_tiny_model_dir(tmp_path_factory.mktemp("model") / "tiny", diabetes_csv)


@pytest.fixture(scope="module")
def synthetic_warehouse(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("wh") / "warehouse"
    build(root, patients=150, seed=3, source="synthetic")
    return root


@pytest.fixture(scope="module")
def space(tmp_path_factory, model_dir, synthetic_warehouse) -> Path:
    out = tmp_path_factory.mktemp("space") / "readmit-space"
    summary = build_space.build_space(out, model_dir, synthetic_warehouse)
    assert summary["warehouse_rows"] > 0
    return out


def test_space_readme_front_matter(space):
    text = (space / "README.md").read_text()
    assert text.startswith("---\n")
    front = text.split("---\n")[1]
    fields = dict(line.split(": ", 1) for line in front.strip().splitlines())
    assert fields["sdk"] == "docker" and fields["app_port"] == "8501"
    assert "synthetic" in text.lower() and "PHI" in text


def test_space_folder_contents(space):
    for path in ("Dockerfile", ".dockerignore", "app.py", "requirements.txt", "core/schema.py", "api/main.py",
                 "cli/main.py", "models/modeling_readmit.py", "models/champion/config.json",
                 "models/champion/model.safetensors", "data/warehouse/CURRENT.json", ".streamlit/config.toml"):
        assert (space / path).exists(), path
    dockerfile = (space / "Dockerfile").read_text()
    assert "COPY --chown=readmit:readmit data ./data" in dockerfile
    assert "READMIT_WAREHOUSE=/home/readmit/app/data/warehouse" in dockerfile
    assert not list(space.rglob("__pycache__")) and not list(space.rglob(".env"))
    for keyword, args in instructions(space / "Dockerfile"):
        if keyword == "COPY":
            for source in [p for p in args.split() if not p.startswith("--")][:-1]:
                assert (space / source).exists(), f"Space Dockerfile COPY {source} missing"


def test_space_refuses_non_synthetic_data(tmp_path, model_dir):
    real_looking = tmp_path / "warehouse"
    build(real_looking, patients=20, seed=1, source="diabetes130")
    with pytest.raises(build_space.SpaceError, match="only synthetic data"):
        build_space.build_space(tmp_path / "out", model_dir, real_looking)
    assert build_space.main(["--out", str(tmp_path / "out2"), "--model", str(tmp_path / "nowhere")]) == 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dashboard_starts_from_the_space_folder(space, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("READMIT_")}
    env.update(PYTHONPATH=str(space), READMIT_WAREHOUSE=str(space / "data" / "warehouse"),
               READMIT_MODEL_DIR=str(space / "models" / "champion"), OMP_NUM_THREADS="1", HOME=str(tmp_path))
    origin = subprocess.run([sys.executable, "-c", "import core, api, cli; print(core.__file__, api.__file__)"],
                            cwd=space, env=env, capture_output=True, text=True, check=True).stdout
    assert str(REPO / "core") not in origin and str(space) in origin
    port = _free_port()
    log = tmp_path / "streamlit.log"
    with open(log, "wb") as handle:
        process = subprocess.Popen([sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
                                    "--server.address", "127.0.0.1", "--server.headless", "true",
                                    "--browser.gatherUsageStats", "false"],
                                   cwd=space, env=env, stdout=handle, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        status = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/_stcore/health", timeout=2)
                status = (response.status_code, response.text)
                if status == (200, "ok"):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        assert status == (200, "ok"), log.read_text()[-3000:]
        assert httpx.get(f"http://127.0.0.1:{port}/", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=20)
