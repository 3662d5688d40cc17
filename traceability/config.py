"""Settings read from PLASMATRACE_* environment variables (or .env), overridden by the root command options."""

from __future__ import annotations

import getpass
import os
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATABASE_URL = "sqlite:///plasmatrace.db"


def _os_user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no login name (containers): fall back to the uid
        return f"uid-{os.getuid()}"


def normalise_database_url(url: str) -> str:
    """Accept the common spellings of a PostgreSQL URL and route them to psycopg 3."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


class Settings(BaseSettings):
    """Where the database is, who is acting, and which policy file overrides the defaults."""

    model_config = SettingsConfigDict(env_prefix="PLASMATRACE_", env_file=".env", extra="ignore")

    database_url: str = Field(
        default=DEFAULT_DATABASE_URL, validation_alias=AliasChoices("PLASMATRACE_DB", "database_url")
    )
    actor: str = Field(default_factory=_os_user)
    policy_file: Path | None = Field(default=None, validation_alias=AliasChoices("PLASMATRACE_POLICY", "policy_file"))
    lock_timeout_s: float = 30.0

    @field_validator("database_url")
    @classmethod
    def _normalise(cls, value: str) -> str:
        return normalise_database_url(value)
