"""Typed settings, read from the environment (pydantic-settings) or passed in by code."""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DB_URL = "sqlite+aiosqlite:///./evolution.db"


class Settings(BaseSettings):
    """Everything `create_app` and `serve` need. Env vars win over defaults, code over env.

    `EVOLUTION_API_KEYS` is a comma-separated list; a key ending in `:ro` is read-only
    (`secret1,secret2:ro`). When the list is empty, no route asks for a key.
    """

    model_config = SettingsConfigDict(env_prefix="EVOLUTION_", extra="ignore")

    store_url: str = Field(default=DEFAULT_DB_URL)
    api_keys: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    otlp_http_port: int = 4318
    otlp_grpc_port: int = 4317
    max_body_bytes: int = 64 * 1024 * 1024
    queue_max_spans: int = 200_000
    queue_max_bytes: int = 256 * 1024 * 1024
    #: bytes of OTLP requests held at once, from the first byte read until answered
    #: (`evolution_store.intake`); beyond it, 503 / UNAVAILABLE
    otlp_intake_max_bytes: int = Field(default=32 * 1024 * 1024, ge=1)
    #: worker processes `serve` decodes OTLP bodies in; None: one on a machine with two or
    #: more CPUs, none (decode on the event loop) on one CPU
    otlp_decode_workers: int | None = Field(default=None, ge=0, le=32)

    @field_validator("store_url")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("store_url must not be empty")
        return value.strip()

    def parsed_api_keys(self) -> dict[str, bool]:
        """Map each key to whether it may write."""
        keys: dict[str, bool] = {}
        for raw in self.api_keys.split(","):
            raw = raw.strip()
            if not raw:
                continue
            if raw.endswith(":ro"):
                keys[raw[:-3]] = False
            else:
                keys[raw.removesuffix(":rw")] = True
        return keys
