"""Settings, read from the process environment on first use, once per container.

The bridge-wide :class:`Settings` hold what every part of the bridge shares; each connector declares its
own :class:`SettingsModel` subclass with its platform's variables (``env_prefix`` + field name, upper
case), loaded the first time that platform is used. docs/settings.md is generated from these models.

Nothing is read at import time: Lambda (and ``chalice local``) set the environment before the first
request, while Chalice's test client only patches it during a call. Secret values may instead live in one
Secrets Manager secret named by ``SECRETS_ID`` (a JSON object with the same keys); the environment wins
over it, so an operator can override a single value without editing the secret.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chalicelib.core.errors import SettingsError


def secret(description: str, default: str | None = None) -> Any:
    """A setting that holds a secret: never shown in a repr, marked as such in docs/settings.md."""
    return Field(default=default, repr=False, description=description, json_schema_extra={"secret": True})


class SettingsModel(BaseModel):
    """A group of settings read from ``env_prefix`` + the field name upper-cased."""

    model_config = ConfigDict(frozen=True, extra="ignore", defer_build=True)
    env_prefix: ClassVar[str] = ""
    title: ClassVar[str] = "Bridge-wide settings"  # its heading in docs/settings.md

    @classmethod
    def variable(cls, field: str) -> str:
        return f"{cls.env_prefix}{field}".upper()

    @field_validator("*")
    @classmethod
    def _no_trailing_slash(cls, value: object, info) -> object:
        # Every *_url setting is a base URL that paths are appended to.
        return value.rstrip("/") if isinstance(value, str) and info.field_name.endswith("_url") else value


class Settings(SettingsModel):
    """The bridge-wide settings. The field name upper-cased is the environment variable's name."""

    fullwhere_api_url: str = Field(default="https://api.fullwhere.com", description="Fullwhere partner API")
    fullwhere_api_key: str | None = Field(
        default=None, description="the default tenant's partner key (Fullwhere → Settings → Connectivity → "
                                  "Developers); a tenants document gives each tenant its own")
    fullwhere_api_secret: str | None = secret("the default tenant's partner secret, with `FULLWHERE_API_KEY`")

    retry_queue_url: str | None = Field(
        default=None, description="SQS retry queue. Without it nothing can be deferred: an event that cannot finish "
                                  "inline gets 503, so the platform redelivers it")
    dead_letter_queue_url: str | None = Field(
        default=None, description="SQS dead-letter queue receiving permanent failures with their reason")
    identity_table: str | None = Field(
        default=None, description="DynamoDB identity ledger (partition key `pk`, string). Without it, guests with "
                                  "neither email nor phone are skipped and counted")

    inline_budget_seconds: float = Field(
        default=3.0, gt=0, le=25, description="time a webhook may spend importing inline before deferring the rest "
                                              "to the retry queue (Mews waits 5 s at most)")
    worker_call_timeout_seconds: float = Field(
        default=10.0, gt=0, le=120,
        description="timeout of one HTTP call made by the retry worker (no platform is waiting on it)")
    worker_concurrency: int = Field(
        default=10, ge=1, le=10, description="records of one retry batch processed at the same time (a backlog "
                                             "drains about this much faster)")
    max_attempts: int = Field(
        default=8, ge=1, le=100,
        description="attempts before the worker dead-letters an event itself, with its last error as reason; the "
                    "retry queue's redrive policy (`MaxReceiveCount`, keep it ≥ this) is the safety net behind it")
    retry_base_seconds: float = Field(
        default=30.0, ge=0, description="first delay of the exponential backoff with jitter between attempts "
                                        "(never below the platform's `Retry-After`)")
    retry_max_seconds: float = Field(
        default=3600.0, ge=0, le=43200,
        description="longest delay between attempts (at most 43200: SQS caps a message's visibility at 12 h)")

    in_doubt_settle_seconds: float = Field(
        default=120.0, ge=0, le=3600,
        description="after an import of a guest without email or phone went unanswered (it may have landed), how "
                    "long to wait, so that no request can still be in flight, before looking for the guest in "
                    "Fullwhere's customer list (docs/operations.md#imports-in-doubt)")
    fullwhere_list_max_pages: int = Field(
        default=1000, ge=1, le=100000, description="most pages of 100 customers read in that search; a longer list "
                                                   "dead-letters the event for a check by hand")

    default_phone_region: str = Field(
        default="FR", description="region used to read phone numbers written without an international prefix")

    tenants_file: str | None = Field(
        default=None, description="path of the tenants document (see Tenants below), when one deployment serves "
                                  "several Fullwhere accounts; read before `TENANTS_SECRET_ID`")
    tenants_secret_id: str | None = Field(
        default=None, description="name of a Secrets Manager secret holding the tenants document")
    secrets_id: str | None = Field(
        default=None, description="name of a Secrets Manager secret holding any of these settings as one JSON "
                                  "object; the environment wins over it")

    log_level: str = Field(default="INFO", pattern=r"^(?i:DEBUG|INFO|WARNING|ERROR|CRITICAL)$",
                           description="least severe level logged: `DEBUG`, `INFO`, `WARNING`, `ERROR` or `CRITICAL`")

    @field_validator("default_phone_region")
    @classmethod
    def _upper_region(cls, value: str) -> str:
        return value.strip().upper()


Model = TypeVar("Model", bound=SettingsModel)

_lock = threading.RLock()
_loaded: dict[type[SettingsModel], SettingsModel] = {}
_secret_document: dict[str, str] | None = None


def get_settings() -> Settings:
    """The container's bridge-wide settings, loaded on first use."""
    return settings_of(Settings)


def settings_of(model: type[Model]) -> Model:
    """The container's settings of one group (the bridge's, or a platform's), loaded on first use."""
    loaded = _loaded.get(model)
    if loaded is None:
        with _lock:
            loaded = _loaded.get(model)
            if loaded is None:
                loaded = _loaded[model] = load_settings(os.environ, model, _secrets_in_environment)
    return loaded  # type: ignore[return-value]


def reset_settings() -> None:
    """Forget every loaded group and the secret document (tests change the environment between scenarios)."""
    global _secret_document
    with _lock:
        _loaded.clear()
        _secret_document = None


def load_settings(environ: Mapping[str, str], model: type[Model] = Settings,  # type: ignore[assignment]
                  secrets: Any = None) -> Model:
    """One group of settings from ``environ`` (and the secret named by its ``SECRETS_ID``)."""
    names = {model.variable(name): name for name in model.model_fields}
    values: dict[str, Any] = {}
    secrets_id = environ.get("SECRETS_ID")
    if secrets_id:
        document = (secrets or _read_secret_document)(secrets_id)
        values.update({names[key]: value for key, value in document.items() if key in names})
    # Empty variables count as unset, so `FOO=` in a shell cannot blank out a default.
    values.update({field: environ[name] for name, field in names.items() if environ.get(name)})
    try:
        return model(**values)
    except ValidationError as exc:
        # Locations and messages name the variables, never their values.
        problems = "; ".join(f"{'.'.join([model.variable(str(error['loc'][0])), *map(str, error['loc'][1:])])}: "
                             f"{error['msg']}" for error in exc.errors()[:10] if error["loc"])
        raise SettingsError(f"invalid settings: {problems}") from None


def _secrets_in_environment(secret_id: str) -> dict[str, str]:
    """The container's secret document, read once for every group of settings."""
    global _secret_document
    with _lock:
        if _secret_document is None:
            _secret_document = _read_secret_document(secret_id)
        return _secret_document


def _read_secret_document(secret_id: str) -> dict[str, str]:
    from chalicelib.infra import aws  # boto3 only when a secret is actually configured

    document = parse_json_document(aws.read_secret(secret_id), f"secret {secret_id!r}")
    if not isinstance(document, dict):
        raise SettingsError(f"secret {secret_id!r} must hold a JSON object")
    return {key: str(value) for key, value in document.items() if value not in (None, "")}


def parse_json_document(text: str, source: str) -> Any:
    """Parse a JSON configuration document, naming its source (not its content) on error."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise SettingsError(f"{source} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
