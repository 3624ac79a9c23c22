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
    # Records of one retry batch processed at the same time (a backlog drains ~this much faster).
    worker_concurrency: int = Field(default=10, ge=1, le=10)
    # Retry policy: the worker dead-letters an event itself on its MAX_ATTEMPTS-th receive (with the
    # last error as reason); the queue's redrive policy (maxReceiveCount) is the safety net behind it.
    max_attempts: int = Field(default=8, ge=1, le=100)
    retry_base_seconds: float = Field(default=30.0, ge=0)
    retry_max_seconds: float = Field(default=3600.0, ge=0, le=43200)  # SQS visibility caps at 12 h

    # An import of a guest without email or phone whose answer was lost may have landed: the bridge
    # looks for the guest in Fullwhere's customer list before importing it again. It waits this long
    # after the loss (no request can still be in flight then) and reads at most this many pages of 100.
    in_doubt_settle_seconds: float = Field(default=120.0, ge=0, le=3600)
    fullwhere_list_max_pages: int = Field(default=1000, ge=1, le=100000)

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
    # v25.0: the version Meta's own "Retrieving Leads" page uses; available until 2028-07-29
    # (v21.0 is retired on 2027-01-21). The lead read call is the same in every listed version.
    meta_graph_url: str = "https://graph.facebook.com/v25.0"
    # Extra field_data keys (custom or localised questions) to read as one of Meta's standard keys,
    # e.g. {"phone_number": ["numero_whatsapp"]}; tried before the built-in aliases. JSON.
    meta_field_aliases: dict[str, list[str]] | None = None
    # Which custom disclaimer checkboxes (checkbox_key) state marketing consent, e.g.
    # {"emailOptin": ["newsletter"], "smsOptin": ["sms_offers"]}. Unset: no opt-in is ever mapped. JSON.
    meta_consent_checkboxes: dict[str, list[str]] | None = None

    @field_validator("meta_field_aliases", "meta_consent_checkboxes", mode="before")
    @classmethod
    def _meta_json_object(cls, value: object, info) -> object:
        allowed = {
            "meta_field_aliases": ("email", "phone_number", "first_name", "last_name", "full_name", "company_name"),
            "meta_consent_checkboxes": ("emailOptin", "smsOptin"),
        }[info.field_name]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"must be a JSON object ({exc.msg})") from None
        if isinstance(value, dict) and not set(value) <= set(allowed):
            raise ValueError(f"keys must be among {', '.join(allowed)}")
        return value
    # --- end Meta Lead Ads ---

    # --- SevenRooms ---
    # How SevenRooms' push is authenticated is not public: `token` = our secret in the URL (?token=),
    # `hmac` = an HMAC-SHA256 of the raw body keyed with the same secret, in SEVENROOMS_SIGNATURE_HEADER.
    sevenrooms_auth: str = Field(default="token", pattern=r"^(?i:token|hmac)$")
    sevenrooms_webhook_secret: str | None = Field(default=None, repr=False)
    sevenrooms_signature_header: str = "X-SevenRooms-Signature"
    sevenrooms_signature_encoding: str = Field(default="hex", pattern=r"^(?i:hex|base64)$")
    # API credentials for the client fetch (language, salutation, marketing consent); unset = no fetch.
    sevenrooms_client_id: str | None = None
    sevenrooms_client_secret: str | None = Field(default=None, repr=False)
    sevenrooms_api_url: str = "https://api.sevenrooms.com/2_4"
    # reservation_sms_opt_in reads as consent to reservation SMS (reminders), not marketing: it fills
    # smsOptin only if this is set to true (after SevenRooms confirms it is marketing consent).
    sevenrooms_sms_optin_is_marketing: bool = False
    # --- end SevenRooms ---

    # --- Zelty ---
    # The secret_key we chose when registering the v2 webhooks (POST /webhooks); it keys the HMAC.
    zelty_webhook_secret: str | None = Field(default=None, repr=False)
    # JSON: where the customer object is for which event names, and which of its keys holds each
    # field. Unset = the documented defaults (chalicelib/connectors/zelty.py, docs/platforms.md).
    zelty_customer_paths: str | None = None
    # --- end Zelty ---

    # --- Oracle (OPERA Cloud polling, Simphony notifications) ---
    # OPERA Cloud pushes nothing: the scheduled `oracle_pull` Lambda dequeues its business events from
    # OHIP. These are the default tenant's values; a tenants document gives them per hotel (its
    # `oracle` accounts are hotel codes, each with any of gateway_url, client_id, client_secret,
    # app_key, enterprise_id, external_system_code).
    oracle_gateway_url: str | None = None
    oracle_client_id: str | None = None
    oracle_client_secret: str | None = Field(default=None, repr=False)
    oracle_app_key: str | None = Field(default=None, repr=False)
    oracle_enterprise_id: str | None = None
    oracle_scope: str = "urn:opc:hgbu:ws:__myscopes__"
    oracle_external_system_code: str | None = None
    oracle_hotel_ids: str | None = None  # comma-separated hotel codes polled for the default tenant
    oracle_profile_events: str = "NEW PROFILE,UPDATE PROFILE"
    oracle_pull_max_events: int = Field(default=200, ge=1, le=10000)
    oracle_pull_budget_seconds: float = Field(default=240.0, gt=0, le=900)
    oracle_email_optin_flag: str = "optInEmail"
    oracle_sms_optin_flag: str = "optInSms"
    oracle_relay_email_domains: str = "guest.booking.com,m.expediapartnercentral.com,agoda-messaging.com"
    # Simphony STS Gen2 notifications: JSON object {"<Key-Id>": "<base64 hmacKey>", ...}.
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
