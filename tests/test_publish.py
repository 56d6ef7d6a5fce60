"""`readmit publish`: the Hugging Face Hub cannot be reached from this machine, so these tests replace
`HfApi` with a stub that records the calls and asserts the exact files that would be uploaded."""
from __future__ import annotations

import json
from fnmatch import fnmatch
from pathlib import Path

import pytest

import models.publish as publish_module
from cli.main import main
from core.errors import UserError
from models.publish import files_to_upload, publish


class StubHfApi:
    """Stands in for huggingface_hub.HfApi (no network here): records create_repo / upload_folder."""

    def __init__(self, *args, **kwargs):
        self.calls = []

    def create_repo(self, **kwargs):
        self.calls.append(("create_repo", kwargs))
        return type("RepoUrl", (), {"url": f"https://huggingface.co/{kwargs['repo_id']}"})()

    def upload_folder(self, **kwargs):
        folder = Path(kwargs["folder_path"])
        sent = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()
                      and any(fnmatch(p.relative_to(folder).as_posix(), pat) for pat in kwargs["allow_patterns"])
                      and not any(fnmatch(p.relative_to(folder).as_posix(), pat) for pat in kwargs["ignore_patterns"]))
        self.calls.append(("upload_folder", {**kwargs, "sent": sent}))


@pytest.fixture()
def model_dir(tmp_path):
    folder = tmp_path / "champion"
    folder.mkdir()
    for name in ("config.json", "preprocessing.json", "calibration.json", "thresholds.json", "training.json",
                 "metrics.json"):
        (folder / name).write_text(json.dumps({"name": name}))
    (folder / "model.safetensors").write_bytes(b"\0" * 16)
    (folder / "README.md").write_text("---\nlicense: cc-by-4.0\n---\n# card\n")
    (folder / "figures").mkdir()
    (folder / "figures" / "calibration.html").write_text("<html></html>")
    (folder / "stray.pkl").write_bytes(b"no pickles")
    (folder / ".DS_Store").write_bytes(b"")
    return folder


EXPECTED = ["README.md", "calibration.json", "config.json", "figures/calibration.html", "metrics.json",
            "model.safetensors", "preprocessing.json", "thresholds.json", "training.json"]


def test_publish_creates_repo_and_uploads_exact_files(model_dir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    api = StubHfApi()
    url = publish(model_dir, "my-org/readmit-transformer", private=True, api=api)
    assert url == "https://huggingface.co/my-org/readmit-transformer"
    (create_name, create), (upload_name, upload) = api.calls
    assert create_name == "create_repo" and upload_name == "upload_folder"
    assert create["repo_id"] == "my-org/readmit-transformer" and create["private"] is True
    assert create["exist_ok"] is True and create["repo_type"] == "model"
    assert upload["repo_id"] == "my-org/readmit-transformer" and upload["token"] == "hf_test_token"
    assert upload["sent"] == EXPECTED
    assert files_to_upload(model_dir) == EXPECTED


def test_publish_without_token_is_a_clear_error(model_dir, monkeypatch):
    monkeypatch.delenv("MY_TOKEN", raising=False)
    with pytest.raises(UserError, match="MY_TOKEN"):
        publish(model_dir, "org/name", token_env="MY_TOKEN", api=StubHfApi())


def test_publish_refuses_bad_repo_id_and_incomplete_folder(model_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "x")
    with pytest.raises(UserError, match="ORG/NAME"):
        publish(model_dir, "no-slash", api=StubHfApi())
    with pytest.raises(UserError, match="model.safetensors"):
        publish(tmp_path, "org/name", api=StubHfApi())


def test_publish_cli_uses_stubbed_api(model_dir, monkeypatch, capsys):
    stub = StubHfApi()  # the Hub cannot be reached from here: the client is the one thing mocked
    monkeypatch.setattr(publish_module, "HfApi", lambda *a, **k: stub)
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    assert main(["publish", "--repo-id", "org/name", "--model", str(model_dir)]) == 0
    assert "uploaded 9 files to https://huggingface.co/org/name" in capsys.readouterr().out
    monkeypatch.delenv("HF_TOKEN")
    assert main(["publish", "--repo-id", "org/name", "--model", str(model_dir)]) == 2
    assert "HF_TOKEN" in capsys.readouterr().err
