"""Settings: every `READMIT_*` variable, in one object read by the CLI, the dashboard and the API.

Values come from the environment, else from a `.env` file in the working directory, else the
defaults below (README.md, "Configuration", lists them all). Security settings (`SECURITY_FIELDS`:
the API keys) are read from the environment only, never from a `.env` file: a stray file must not
be able to change who may call the API. Insecure mode is not a setting at all: only the
`readmit api --insecure-no-auth` flag turns authentication off.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Optional
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_WAREHOUSE = REPO_ROOT / "data" / "warehouse"
DEFAULT_MODEL_DIR = REPO_ROOT / "models" / "champion"
DEFAULT_AUDIT_LOG = REPO_ROOT / "data" / "audit" / "audit.jsonl"
SECURITY_FIELDS = frozenset({"api_key"})


class _WithoutSecurityFields(PydanticBaseSettingsSource):
    """A settings source minus the security fields (wraps the `.env` source)."""

    def __init__(self, settings_cls: type[BaseSettings], source: PydanticBaseSettingsSource) -> None:
        super().__init__(settings_cls)
        self.source = source

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        return {name: value for name, value in self.source().items() if name not in SECURITY_FIELDS}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="READMIT_", env_file=".env", extra="ignore",
                                      hide_input_in_errors=True)  # never echo a key in an error

    warehouse: str = Field(str(DEFAULT_WAREHOUSE), description="warehouse root (folder, hdfs:// or s3a://)")
    model_dir: str = Field(str(DEFAULT_MODEL_DIR), description="model folder for scoring, the dashboard and the API")
    spark_master: str = Field("local[*]", description="Spark master of `readmit etl`")
    spark_driver_memory: str = Field("4g", description="Spark driver memory of `readmit etl`")
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads per process (API worker, scorer)")
    database_url: Optional[str] = Field(None, description="operational database (SQLAlchemy URL); "
                                        "unset: data/operational.sqlite3")
    audit_log: str = Field(str(DEFAULT_AUDIT_LOG), description="the dashboard's access audit file")
    idle_minutes: float = Field(15, gt=0, description="dashboard sessions end after this many idle minutes")
    follow_up_days: int = Field(30, ge=1, le=365, description="the worklist holds discharges of the last N days")
    calls_per_day: int = Field(10, ge=1, le=10_000, description="outreach calls a day: today's call list holds "
                               "the N highest-risk open patients")
    time_zone: str = Field("UTC", description="the hospital's time zone (IANA name): what 'today' means")
    api_key: Optional[SecretStr] = Field(None, description="API keys, comma-separated (environment only)")
    api_max_batch: int = Field(1000, ge=1, le=100_000, description="most encounters in one /predict/batch")
    api_max_body_bytes: int = Field(4_000_000, ge=1024, description="largest API request body (413 above)")

    @field_validator("time_zone")
    @classmethod
    def _known_time_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value[:64]!r}: use an IANA name such as Europe/Paris") from None
        return value

    @classmethod
    def settings_customise_sources(cls, settings_cls: type[BaseSettings], init_settings: PydanticBaseSettingsSource,
                                   env_settings: PydanticBaseSettingsSource,
                                   dotenv_settings: PydanticBaseSettingsSource,
                                   file_secret_settings: PydanticBaseSettingsSource
                                   ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _WithoutSecurityFields(settings_cls, dotenv_settings),
                file_secret_settings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
