"""Settings, read from the process environment once per container.

Nothing is read at import time: Lambda (and ``chalice local``) set the environment before the first
request, while Chalice's test client only patches it during a call, so reading lazily is what works
everywhere. ``.chalice/config.json`` hard-codes none of these for the default stage.

In AWS, secret values may instead live in one Secrets Manager secret named by ``SECRETS_ID`` (a JSON
object with the same keys). It is fetched once per container, and the environment wins over it, so an
operator can override a single value without editing the secret.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chalicelib.errors import describe_validation_error
from chalicelib.logs import set_level as set_log_level


class Settings(BaseModel):
    """Every setting of the bridge. The field name upper-cased is the environment variable's name."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    # Fullwhere partner API (the default tenant's credentials when there is no tenants document).
    fullwhere_api_url: str = "https://api.fullwhere.com"
    fullwhere_api_key: str | None = None
    fullwhere_api_secret: str | None = Field(default=None, repr=False)

    # Queues and the identity ledger. Without RETRY_QUEUE_URL nothing can be deferred: an event that
    # cannot finish inline gets 503 so the platform redelivers it.
    retry_queue_url: str | None = None
    dead_letter_queue_url: str | None = None
    identity_table: str | None = None

    # Time the webhook request may spend importing inline before deferring the rest to the queue.
    inline_budget_seconds: float = Field(default=3.0, gt=0, le=25)
    # Timeout of one call from the retry worker (it has no platform waiting on it).
    worker_call_timeout_seconds: float = Field(default=10.0, gt=0, le=120)
    # Retry policy: the worker dead-letters an event itself on its MAX_ATTEMPTS-th receive (with the
    # last error as reason); the queue's redrive policy (maxReceiveCount) is the safety net behind it.
    max_attempts: int = Field(default=8, ge=1, le=100)
    retry_base_seconds: float = Field(default=30.0, ge=0)
    retry_max_seconds: float = Field(default=3600.0, ge=0, le=43200)  # SQS visibility caps at 12 h

    # Region used to read phone numbers written without an international prefix.
    default_phone_region: str = "FR"

    deliveroo_webhook_secret: str | None = Field(default=None, repr=False)

    ubereats_client_id: str | None = None
    ubereats_client_secret: str | None = Field(default=None, repr=False)
    ubereats_api_url: str = "https://api.uber.com"
    ubereats_auth_url: str = "https://auth.uber.com"
    ubereats_scope: str = "eats.store.orders.read"

    mews_webhook_token: str | None = Field(default=None, repr=False)
    mews_client_token: str | None = Field(default=None, repr=False)
    mews_access_token: str | None = Field(default=None, repr=False)
    mews_api_url: str = "https://api.mews.com"

    # --- TheFork (B2B API) ---
    thefork_webhook_token: str | None = Field(default=None, repr=False)
    thefork_client_id: str | None = None
    thefork_client_secret: str | None = Field(default=None, repr=False)
    thefork_api_url: str = "https://api.thefork.io/manager"
    thefork_auth_url: str = "https://auth.thefork.io"
    # --- end TheFork ---

    # --- Meta Lead Ads ---
    meta_verify_token: str | None = Field(default=None, repr=False)
    meta_app_secret: str | None = Field(default=None, repr=False)
    meta_page_access_token: str | None = Field(default=None, repr=False)
    meta_graph_url: str = "https://graph.facebook.com/v21.0"
    # --- end Meta Lead Ads ---

    # --- SevenRooms ---
    sevenrooms_webhook_token: str | None = Field(default=None, repr=False)
    # --- end SevenRooms ---

    # --- Zelty ---
    zelty_webhook_secret: str | None = Field(default=None, repr=False)
    # --- end Zelty ---

    # --- Oracle (OPERA Cloud polling, Simphony notifications) ---
    oracle_client_secret: str | None = Field(default=None, repr=False)
    simphony_hmac_keys: str | None = Field(default=None, repr=False)
    # --- end Oracle ---

    # --- Declarative sources (Como, Groupe Partouche, Chr365, Zenchef, ...) ---
    sources_file: str | None = None
    sources_secret_id: str | None = None
    # --- end declarative sources ---

    tenants_file: str | None = None
    tenants_secret_id: str | None = None
    secrets_id: str | None = None

    log_level: str = Field(default="INFO", pattern=r"^(?i:DEBUG|INFO|WARNING|ERROR|CRITICAL)$")

    @field_validator("default_phone_region")
    @classmethod
    def _upper_region(cls, value: str) -> str:
        return value.strip().upper()

    @field_validator("*")
    @classmethod
    def _no_trailing_slash(cls, value: object, info) -> object:
        # Every *_url setting is a base URL that paths are appended to.
        return value.rstrip("/") if isinstance(value, str) and info.field_name.endswith("_url") else value


class SettingsError(RuntimeError):
    """The configuration is unusable; the message names the setting, never its value."""


_lock = threading.Lock()
_settings: Settings | None = None


def get_settings() -> Settings:
    """The container's settings, loaded on first use."""
    global _settings
    if _settings is None:
        with _lock:
            if _settings is None:
                _settings = load_settings(os.environ)
                set_log_level(_settings.log_level)
    return _settings


def reset_settings() -> None:
    """Forget the cached settings (tests change the environment between scenarios)."""
    global _settings
    with _lock:
        _settings = None


def load_settings(environ: dict[str, str] | os._Environ) -> Settings:
    names = {name.upper() for name in Settings.model_fields}
    values: dict[str, Any] = {}
    secrets_id = environ.get("SECRETS_ID")
    if secrets_id:
        values.update(_secret_values(secrets_id, names))
    # Empty variables count as unset, so `FOO=` in a shell cannot blank out a default.
    values.update({name: environ[name] for name in names if environ.get(name)})
    try:
        return Settings(**{name.lower(): value for name, value in values.items()})
    except ValidationError as exc:
        raise SettingsError(f"invalid settings: {describe_validation_error(exc, upper=True)}") from None


def _secret_values(secret_id: str, names: set[str]) -> dict[str, str]:
    from chalicelib import aws  # boto3 only when a secret is actually configured

    document = parse_json_document(aws.read_secret(secret_id), f"secret {secret_id!r}")
    if not isinstance(document, dict):
        raise SettingsError(f"secret {secret_id!r} must hold a JSON object")
    return {key: str(value) for key, value in document.items() if key in names and value not in (None, "")}


def parse_json_document(text: str, source: str) -> Any:
    """Parse a JSON configuration document, naming its source (not its content) on error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
