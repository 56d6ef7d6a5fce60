"""Settings from the environment (prefix READMIT_) or a .env file; one object for every entry point."""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Optional

from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WAREHOUSE = REPO_ROOT / "data" / "warehouse"
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "champion"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="READMIT_", env_file=".env", extra="ignore")

    warehouse: str = str(DEFAULT_WAREHOUSE)
    model_dir: str = str(DEFAULT_MODEL_DIR)
    spark_master: str = "local[*]"
    spark_driver_memory: str = "4g"
    torch_threads: int = 1
    database_url: Optional[str] = None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
