"""Upload a model folder to the Hugging Face Hub (`readmit publish`)."""
from __future__ import annotations

import os
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, Optional

from huggingface_hub import HfApi

from core.errors import UserError

REQUIRED_FILES = ("config.json", "model.safetensors", "preprocessing.json", "README.md")
ALLOWED_PATTERNS = ["*.json", "*.safetensors", "README.md", "*.html", "*.png", "*.svg", "figures/*"]
IGNORE_PATTERNS = ["*.pkl", "*.pickle", "*.bin", ".*", "checkpoint-*/*"]


def files_to_upload(model_dir: Path) -> list[str]:
    """Relative paths upload_folder will send (used by the CLI to print them, and by the tests)."""
    out = []
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(model_dir).as_posix()
        if any(fnmatch(rel, pattern) for pattern in IGNORE_PATTERNS) or any(part.startswith(".") for part in rel.split("/")):
            continue
        if any(fnmatch(rel, pattern) for pattern in ALLOWED_PATTERNS):
            out.append(rel)
    return out


def publish(model_dir: str | Path, repo_id: str, private: bool = False, token_env: str = "HF_TOKEN",
            api: Optional[Any] = None, commit_message: Optional[str] = None) -> str:
    """Create (or reuse) the model repo and upload the folder; returns the repo URL."""
    folder = Path(model_dir)
    if "/" not in repo_id or repo_id.count("/") != 1 or not all(repo_id.split("/")):
        raise UserError(f"--repo-id must look like ORG/NAME, got {repo_id!r}")
    missing = [name for name in REQUIRED_FILES if not (folder / name).exists()]
    if missing:
        raise UserError(f"{folder} is not a complete model folder (missing {', '.join(missing)})")
    token = os.environ.get(token_env)
    if not token:
        raise UserError(f"no Hugging Face token: set the environment variable {token_env} "
                        "(a write token from https://huggingface.co/settings/tokens) or pass --token-env NAME")
    if api is None:
        api = HfApi(token=token)
    try:
        repo = api.create_repo(repo_id=repo_id, repo_type="model", private=private, exist_ok=True, token=token)
        api.upload_folder(folder_path=str(folder), repo_id=repo_id, repo_type="model", token=token,
                          allow_patterns=files_to_upload(folder), ignore_patterns=IGNORE_PATTERNS,
                          commit_message=commit_message or f"Upload readmit-transformer from {folder.name}")
    except UserError:
        raise
    except Exception as error:  # network, authentication or permission problems: one clear line
        raise UserError(f"upload to {repo_id} failed: {type(error).__name__}: {error}") from error
    return str(getattr(repo, "url", None) or f"https://huggingface.co/{repo_id}")
