"""Settings, read from the process environment on first use, and again every ``CONFIG_REFRESH_SECONDS``.

The bridge-wide :class:`Settings` hold what every part of the bridge shares; each connector declares its
own :class:`SettingsModel` subclass with its platform's variables (``env_prefix`` + field name, upper
case), loaded the first time that platform is used. docs/settings.md is generated from these models.

Nothing is read at import time: Lambda (and ``chalice local``) set the environment before the first
request, while Chalice's test client only patches it during a call. Secret values may instead live in one
Secrets Manager secret named by ``SECRETS_ID`` (a JSON object with the same keys); the environment wins
over it, so an operator can override a single value without editing the secret.

A container reads the environment and that secret again once ``CONFIG_REFRESH_SECONDS`` have passed (a key
rotated in the secret takes effect without a new container), and :class:`Refreshed` does the same for the
tenants and sources documents. A new version that is invalid or cannot be read is refused, logged as
``config_refused`` (or ``config_unreachable`` during an AWS outage), and the last valid one keeps serving; only
a first load, with nothing to fall back on, raises :class:`SettingsError` (docs/architecture.md,
"Configuration that follows its source").
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from chalicelib.core.errors import SettingsError


def secret(description: str, default: str | None = None) -> Any:
    """A setting that holds a secret: never shown in a repr, marked as such in docs/settings.md."""
    return Field(default=default, repr=False, description=description, json_schema_extra={"secret": True})


def sweep_minutes_setting(platform: str) -> Any:
    """A platform's ``sweep_minutes`` field: its own interval between sweeps, ``SWEEP_MINUTES`` when unset."""
    return Field(default=None, ge=0, le=1440,
                 description=f"minutes between two sweeps of {platform}, instead of `SWEEP_MINUTES` (0: {platform} "
                             "is not swept)")


def sweep_accounts_setting(platform: str, what: str = "account ids") -> Any:
    """A platform's ``sweep_accounts`` field: the default tenant's accounts to sweep (a tenants document lists
    each tenant's own instead)."""
    return Field(default=None, description=f"the default tenant's {platform} {what} to sweep, comma-separated (with a "
                                           "tenants document, each tenant's listed accounts are swept instead)")


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
    retry_horizon_hours: float = Field(
        default=168.0, gt=0, le=240,
        description="how long a failure that can heal (an outage, a refused key, an account not yet in the tenants "
                    "document) is retried before the event is dead-lettered as `exhausted`. At most 240: the retry "
                    "queue keeps a message 11 days (deploy/resources.yaml; docs/reliability.md, \"The retry horizon\")")
    retry_base_seconds: float = Field(
        default=30.0, ge=0, description="first delay of the exponential backoff with jitter between attempts "
                                        "(never below the platform's `Retry-After`)")
    retry_max_seconds: float = Field(
        default=300.0, ge=0, le=900,
        description="longest delay between attempts: once a dependency answers again, what it held is tried within "
                    "this long (at most 900, SQS's longest message delay)")

    in_doubt_settle_seconds: float = Field(
        default=120.0, ge=0, le=3600,
        description="after an import of a guest without email or phone went unanswered (it may have landed), how "
                    "long to wait, so that no request can still be in flight, before looking for the guest in "
                    "Fullwhere's customer list (docs/operations.md#imports-in-doubt)")
    fullwhere_list_max_pages: int = Field(
        default=1000, ge=1, le=100000, description="most pages of 100 customers read in that search; a longer list "
                                                   "dead-letters the event for a check by hand")

    sweep_minutes: int = Field(
        default=15, ge=0, le=1440,
        description="minutes between two reconciliation sweeps of a platform account, which recover what a platform "
                    "gave up delivering while the bridge was down; 0 turns sweeps off. `<PLATFORM>_SWEEP_MINUTES` "
                    "overrides it per platform (docs/architecture.md, \"Sweeps\")")
    sweep_overlap_seconds: float = Field(
        default=600.0, ge=0, le=86400,
        description="how far back before its cursor each sweep starts again, to catch what the platform recorded "
                    "late (Mews' events lag 2-5 minutes) or a clock skew; what is listed twice costs no Fullwhere call")
    sweep_settle_seconds: float = Field(
        default=300.0, ge=0, le=3600,
        description="what changed this recently is left to the next sweep, so that its webhook, which platforms "
                    "send minutes late (Mews: 2-5), arrives first: the sweep then neither sends the guest a second "
                    "time nor counts it `recovered`")

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
    config_refresh_seconds: float = Field(
        default=300.0, ge=0,
        description="how long the settings (with the `SECRETS_ID` secret), the tenants document and the sources "
                    "document are used before being read again; an invalid new version is refused (logged as "
                    "`config_refused`) and the last valid one kept. 0 reads them again on every use")

    @field_validator("default_phone_region")
    @classmethod
    def _upper_region(cls, value: str) -> str:
        return value.strip().upper()


Model = TypeVar("Model", bound=SettingsModel)
Basis = TypeVar("Basis")
Value = TypeVar("Value")

DEFAULT_REFRESH_SECONDS: float = Settings.model_fields["config_refresh_seconds"].default

# The clock every refresh is timed by: monotonic, so that a wall clock set back cannot freeze the configuration
# (tests move it instead of sleeping).
clock = time.monotonic


@dataclass(frozen=True)
class _Loaded:
    """The groups of settings this container has loaded, and the secret document they were read with."""

    groups: dict[type[SettingsModel], SettingsModel] = dataclass_field(default_factory=dict)
    secrets_id: str | None = None
    document: dict[str, str] | None = None
    read_at: float = float("-inf")  # when the environment and the secret document were last read
    expires: float = float("-inf")


_lock = threading.RLock()
_state = _Loaded()


def get_settings() -> Settings:
    """The container's bridge-wide settings, loaded on first use and read again every ``CONFIG_REFRESH_SECONDS``."""
    return settings_of(Settings)


def settings_of(model: type[Model]) -> Model:
    """The container's settings of one group (the bridge's, or a platform's), loaded on first use and read again
    every ``CONFIG_REFRESH_SECONDS``. Fresh, they cost a clock reading and a dictionary lookup, no lock."""
    state = _state
    if clock() < state.expires:
        loaded = state.groups.get(model)
        if loaded is not None:
            return loaded  # type: ignore[return-value]
    return _load(model)


def _load(model: type[Model]) -> Model:
    global _state
    last = _state.groups.get(model)
    if last is None:
        _lock.acquire()  # a first load: every thread needs it
    elif not _lock.acquire(blocking=False):
        return last  # type: ignore[return-value]  # another thread is reading them again: keep serving these
    try:
        if _state.groups and clock() >= _state.expires:
            _state = _read_again(_state)
        loaded = _state.groups.get(model)
        if loaded is None:
            _state = _with_group(_state, model)  # raises SettingsError: there is no last valid version to keep
            loaded = _state.groups[model]
        return loaded  # type: ignore[return-value]
    finally:
        _lock.release()


def _with_group(state: _Loaded, model: type[SettingsModel]) -> _Loaded:
    """``state`` with one more group, read with the same secret document (read now if there is none yet)."""
    secrets_id = os.environ.get("SECRETS_ID") or None
    document = state.document if secrets_id == state.secrets_id else None
    if secrets_id and document is None:
        document = _read_secret_document(secrets_id)
    loaded = load_settings(os.environ, model, lambda _: document)
    groups = {**state.groups, model: loaded}
    # The first group starts the clock; the bridge-wide settings, once loaded, say how long it runs.
    read_at = state.read_at if state.groups else clock()
    return _Loaded(groups, secrets_id, document, read_at, read_at + _interval(groups))


def _read_again(state: _Loaded) -> _Loaded:
    """Every loaded group read again from the environment and a fresh secret document. Never raises: a group
    whose new version is invalid, or all of them when the secret cannot be read, keep their last valid version."""
    now = clock()
    secrets_id = os.environ.get("SECRETS_ID") or None
    document = None
    if secrets_id:
        try:
            document = _read_secret_document(secrets_id)
        except Exception as exc:  # whatever happens, the last valid settings keep serving
            config_refused("settings", exc)
            return replace(state, read_at=now, expires=now + _interval(state.groups))
    groups: dict[type[SettingsModel], SettingsModel] = {}
    for model, last in state.groups.items():
        try:
            fresh = load_settings(os.environ, model, lambda _: document)
        except Exception as exc:
            config_refused("settings", exc)
            fresh = last
        # Unchanged groups keep their object: what was built from them (the default tenant) stays valid.
        groups[model] = last if fresh == last else fresh
    return _Loaded(groups, secrets_id, document, now, now + _interval(groups))


def _interval(groups: Mapping[type[SettingsModel], SettingsModel]) -> float:
    settings = groups.get(Settings)
    return settings.config_refresh_seconds if isinstance(settings, Settings) else DEFAULT_REFRESH_SECONDS


def refresh_interval() -> float:
    """``CONFIG_REFRESH_SECONDS`` of the last valid bridge-wide settings (its default while they are unusable)."""
    try:
        return get_settings().config_refresh_seconds
    except SettingsError:
        return DEFAULT_REFRESH_SECONDS


def reset_settings() -> None:
    """Forget every loaded group and the secret document (tests change the environment between scenarios)."""
    global _state
    with _lock:
        _state = _Loaded()


class Refreshed(Generic[Basis, Value]):
    """A configuration document (tenants, sources) loaded on first use and read again every
    ``CONFIG_REFRESH_SECONDS``. ``load(basis)`` reads and validates it; ``basis`` is the settings that name it,
    and a new one (a refreshed ``TENANTS_FILE``, a rotated default key) reads it again at once.

    Fresh, :meth:`get` costs a clock reading, no lock. A new version that is invalid, or that cannot be read, is
    refused (:func:`config_refused`) and the last valid one kept; only a first load raises :class:`SettingsError`,
    there being nothing to keep. While one thread reads it again, the others keep the last valid version."""

    def __init__(self, document: str, load: Callable[[Basis], Value]):
        self.document = document  # its name in the logs: "tenants", "sources"
        self._load = load
        self._lock = threading.RLock()
        self._version: tuple[Basis, Value, float] | None = None  # (basis, value, expires)

    def get(self, basis: Basis) -> Value:
        version = self._version
        if version is not None and version[0] is basis and clock() < version[2]:
            return version[1]
        return self._reload(basis)

    def _reload(self, basis: Basis) -> Value:
        version = self._version
        if version is None:
            self._lock.acquire()
        elif not self._lock.acquire(blocking=False):
            return version[1]
        try:
            version = self._version
            if version is not None and version[0] is basis and clock() < version[2]:
                return version[1]  # read by another thread meanwhile
            try:
                value = self._load(basis)
            except Exception as exc:  # on a refresh, whatever happens, the last valid version keeps serving
                if version is None:
                    raise
                config_refused(self.document, exc)
                value = version[1]
            else:
                if version is not None and value == version[1]:
                    value = version[1]  # unchanged: keep the object, and what was built from it
            self._version = (basis, value, clock() + refresh_interval())
            return value
        finally:
            self._lock.release()

    def reset(self) -> None:
        with self._lock:
            self._version = None


def config_refused(document: str, error: Exception) -> None:
    """Log (and count) a new version of a configuration document that is not used: ``config_refused`` (ERROR)
    when it is invalid or cannot be read, a mistake to fix; ``config_unreachable`` (WARNING) when AWS could not
    be reached, which heals alone. The reason names the document or setting, never a value: a SettingsError's
    message is written so; of any other exception only its type is told."""
    from chalicelib.infra.logs import log

    reason = str(error) if isinstance(error, SettingsError) else f"{type(error).__name__} while reading the {document}"
    if _unreachable(error):
        log("config_unreachable", f"cannot read the {document} configuration again; the last valid one is kept",
            document=document, reason=reason, level=logging.WARNING)
    else:
        log("config_refused", f"new {document} configuration refused; the last valid one is kept",
            document=document, reason=reason, level=logging.ERROR)


def _unreachable(error: BaseException) -> bool:
    """Whether reading failed because AWS was unreachable, throttled or failing (the botocore error that
    :func:`chalicelib.infra.aws.read_secret` turned into a SettingsError), not because of the configuration."""
    cause = error.__cause__ or error.__context__
    if cause is None:
        return False
    response = getattr(cause, "response", None)
    if isinstance(response, dict):  # botocore's ClientError: AWS answered
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        return status >= 500 or status == 429 or "Throttl" in str(response.get("Error", {}).get("Code", ""))
    # botocore's connection and timeout errors (by name: botocore is not imported for this)
    return any(cls.__name__ in ("ConnectionError", "HTTPClientError") for cls in type(cause).__mro__)


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
