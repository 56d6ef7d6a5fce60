"""Static checks of the Dockerfile (no Docker engine runs here): base image, Java, torch from the
CPU index, non-root user, health check, port, default command, and every COPY source present."""
from __future__ import annotations

import fnmatch
import json
import shlex
from pathlib import Path

import pytest

from cli.main import build_parser

REPO = Path(__file__).resolve().parent.parent


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with backslash continuations joined and comments dropped."""
    out, buffer = [], ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not buffer and (not stripped or stripped.startswith("#")):
            continue
        if buffer and stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        keyword, _, rest = buffer.partition(" ")
        out.append((keyword.upper(), rest.strip()))
        buffer = ""
    return out


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return instructions(REPO / "Dockerfile")


def test_base_image_java_and_torch_cpu_first(dockerfile):
    assert dockerfile[0] == ("FROM", "python:3.11-slim")
    runs = [args for kw, args in dockerfile if kw == "RUN"]
    assert any("openjdk-17-jre-headless" in r and "apt-get install" in r for r in runs)
    pip = next(r for r in runs if "pip install" in r)
    torch_at = pip.index("--index-url https://download.pytorch.org/whl/cpu torch==2.13.0")
    assert torch_at < pip.index("-r requirements.txt")
    env = " ".join(args for kw, args in dockerfile if kw == "ENV")
    assert "OMP_NUM_THREADS=1" in env and "READMIT_TORCH_THREADS=1" in env


def test_runs_as_non_root_with_healthcheck_and_port(dockerfile):
    users = [args for kw, args in dockerfile if kw == "USER"]
    assert users and users[-1] not in ("root", "0")
    last_user = max(i for i, (kw, _) in enumerate(dockerfile) if kw == "USER")
    assert last_user < next(i for i, (kw, _) in enumerate(dockerfile) if kw == "CMD")
    health = next(args for kw, args in dockerfile if kw == "HEALTHCHECK")
    assert "CMD" in health and "/_stcore/health" in health and "/health" in health
    exposed = " ".join(args for kw, args in dockerfile if kw == "EXPOSE").split()
    assert "8501" in exposed


def test_default_command_serves_the_dashboard_and_parses(dockerfile):
    cmd = json.loads(next(args for kw, args in dockerfile if kw == "CMD"))
    assert cmd == ["readmit", "app", "--port", "8501", "--address", "0.0.0.0"]
    parser = build_parser()
    args = parser.parse_args(cmd[1:])
    assert args.command == "app"
    api = parser.parse_args(["api", "--host", "0.0.0.0", "--port", "8000", "--workers", "2"])
    assert api.command == "api" and api.workers == 2


def _ignored(path: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatch(path, p.rstrip("/")) or path.startswith(p.rstrip("/") + "/") for p in patterns)


def test_every_copied_file_exists_and_is_not_dockerignored(dockerfile):
    patterns = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    for keyword, args in dockerfile:
        if keyword != "COPY":
            continue
        parts = [p for p in shlex.split(args) if not p.startswith("--")]
        for source in parts[:-1]:
            assert (REPO / source).exists(), f"COPY {source}: missing from the repository"
            assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


def test_dockerignore_keeps_secrets_data_and_venv_out():
    patterns = (REPO / ".dockerignore").read_text().split()
    for needed in (".env", ".venv", "data/", ".git"):
        assert needed in patterns
