"""Declarative sources: platforms connected by configuration alone, described in the sources document.

The document (JSON or YAML, from ``SOURCES_FILE`` or the Secrets Manager secret ``SOURCES_SECRET_ID``) is
validated at load, an error naming the field (``sources.0.mapping.email: ...``); the generic
:class:`~chalicelib.connectors.declarative.DeclarativeConnector` serves each source. The format, with an
example: docs/platforms.md, "Declarative sources".
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chalicelib.core.errors import SettingsError, describe_validation_error
from chalicelib.core.signatures import standard_webhooks_secret
from chalicelib.domain.fullwhere.models import PLATFORM_ID_FIELDS
from chalicelib.infra.settings import Refreshed, SettingsModel, settings_of

PRESETS_DIR = Path(__file__).parent.parent / "connectors" / "presets"
NAME_PATTERN = r"^[a-z][a-z0-9_-]{1,39}$"
_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")

# Customer fields a mapping may fill, besides "id" (the platform id) and "metadata".
MAPPED_FIELDS = ("firstName", "lastName", "displayName", "email", "phoneNumber", "civility", "language",
                 "company", "description", "emailOptin", "smsOptin")


class SourcesSettings(SettingsModel):
    env_prefix, title = "SOURCES_", "Declarative sources"

    file: str | None = Field(default=None, description=(
        "a file holding the declarative sources document (Como, Groupe Partouche, Chr365, Zenchef, any JSON "
        "webhook), JSON or YAML; see docs/platforms.md"))
    secret_id: str | None = Field(default=None, description=(
        "a Secrets Manager secret holding the sources document instead (read when `SOURCES_FILE` is unset)"))


def _compile(expression: str) -> str:
    import jmespath
    from jmespath.exceptions import JMESPathError

    try:
        jmespath.compile(expression)
    except JMESPathError as exc:
        raise ValueError(f"invalid JMESPath expression {expression!r}: {str(exc).splitlines()[0]}") from None
    return expression


def reserved_variable(name: str) -> bool:
    """Whether ``${name}`` is out of a source's reach: the Lambda role's credentials and the runtime's settings
    (``AWS_*``), the CRM's (``FULLWHERE_*``) and the built-in platforms' (``<PLATFORM>_*``). A fetch sends what it
    expands to a platform's API, so it may only name variables set for that source (docs/platforms.md)."""
    from chalicelib.core.registry import builtin_names

    prefixes = ("AWS_", "FULLWHERE_", *(f"{platform.upper()}_" for platform in builtin_names()))
    return name.startswith(prefixes)


def placeholders(template: Any) -> list[str]:
    """The ``${NAME}`` names in the strings of ``template`` (a string, or a JSON template)."""
    if isinstance(template, str):
        return _PLACEHOLDER.findall(template)
    if isinstance(template, dict):
        return [name for value in template.values() for name in placeholders(value)]
    if isinstance(template, list):
        return [name for value in template for name in placeholders(value)]
    return []


def environment_value(name: str, what: str) -> str:
    """The value of the operator's ``${name}`` placeholder; a missing or reserved one is a configuration error.
    Only the sources document's own templates are looked up here, never text a webhook brought."""
    if reserved_variable(name):
        raise SettingsError(f"{what} names the environment variable {name}, which sources may not read")
    found = os.environ.get(name)
    if not found:
        raise SettingsError(f"{what} needs the environment variable {name}, which is not set")
    return found


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class SecretRef(_Strict):
    secret: str | None = Field(default=None, repr=False)
    secret_env: str | None = Field(default=None, pattern=r"^[A-Z][A-Z0-9_]*$")

    @model_validator(mode="after")
    def _one_secret(self):
        if (self.secret is None) == (self.secret_env is None):
            raise ValueError("give exactly one of secret (inline) or secret_env (an environment variable)")
        return self

    def secret_value(self) -> str | None:
        return self.secret if self.secret is not None else os.environ.get(self.secret_env or "") or None


class HmacAuth(SecretRef):
    type: Literal["hmac"]
    header: str = Field(min_length=1)
    algorithm: Literal["sha1", "sha256", "sha512"] = "sha256"
    encoding: Literal["hex", "base64"] = "hex"
    prefix: str = ""
    # What is signed: "{body}" (default), or a template such as "{header:X-Timestamp}.{body}".
    signed: str = "{body}"

    @field_validator("signed")
    @classmethod
    def _template(cls, value: str) -> str:
        if "{body}" not in value:
            raise ValueError("the signed template must contain {body}")
        leftovers = re.sub(r"\{body\}|\{header:[A-Za-z0-9_-]+\}|\{query:[A-Za-z0-9_.-]+\}", "", value)
        if "{" in leftovers or "}" in leftovers:
            raise ValueError("the signed template may only use {body}, {header:Name} and {query:name}")
        return value


class TokenAuth(SecretRef):
    type: Literal["token"]
    query: str | None = None
    header: str | None = None

    @model_validator(mode="after")
    def _one_place(self):
        if (self.query is None) == (self.header is None):
            raise ValueError("a token is carried in exactly one of query or header")
        return self


class StandardWebhooksAuth(SecretRef):
    type: Literal["standard_webhooks"]
    tolerance_seconds: int = Field(default=300, ge=1, le=3600)


class NoAuth(_Strict):
    type: Literal["none"]


Auth = HmacAuth | TokenAuth | StandardWebhooksAuth | NoAuth


def _checked_url(value: str, slot: str) -> str:
    """A fetch's or sweep's url template: http(s) or a ${NAME}, with ``slot`` ({id}, {account}) only after the host."""
    authority = re.match(r"^(https?://[^/?#]*|\$\{[A-Z][A-Z0-9_]*\})", value)
    if not authority:
        raise ValueError("url must start with http(s):// or a ${NAME} placeholder")
    # The value must not extend the host ("${BASE}{id}" with an id ".evil.example"): a / or ? must come first.
    before = value[:value.find(slot)] if slot in value else ""
    if slot in value and not re.search(r"[/?]", before[authority.end():]):
        raise ValueError(f"{slot} may only be placed in the url's path or query, never in its host")
    return value


class Fetch(_Strict):
    """A follow-up call for pushes that carry only an id."""

    id: str  # JMESPath in the event: the id to fetch
    # Templates: ${NAME} is an environment variable, {id} the id (data: quoted as one path segment, or as a
    # query value, in the url; a JSON string in the body). Both are filled in one pass, so the id is never read
    # as a template.
    url: str
    method: Literal["GET", "POST"] = "GET"
    headers: dict[str, str] = Field(default_factory=dict)
    body: Any = None  # JSON template for POST
    result: str = "@"  # JMESPath in the response: the guest object
    not_found_statuses: list[int] = Field(default_factory=lambda: [404])

    @field_validator("id", "result")
    @classmethod
    def _expression(cls, value: str) -> str:
        return _compile(value)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _checked_url(value, "{id}")

    def variables(self) -> set[str]:
        """The environment variables its templates name."""
        return set(placeholders([self.url, self.headers, self.body]))


_PARAMETER = r"^[A-Za-z0-9_.\[\]-]{1,64}$"


class Sweep(_Strict):
    """A list call that recovers what the webhook did not deliver (docs/platforms.md, "Declarative sources",
    "Sweep"): ``GET url`` with the window's start (and end) in query parameters, page after page."""

    # Template: ${NAME} is read like a fetch's (a named tenant's account entry, never the environment; the
    # environment for the default tenant), {account} is the swept account id (one quoted path segment before
    # the ?, a quoted value after). Both are filled in one pass: nothing inserted is read as a template again.
    url: str
    headers: dict[str, str] = Field(default_factory=dict)
    since_parameter: str = Field(pattern=_PARAMETER)  # the query parameter carrying the window's start
    until_parameter: str | None = Field(default=None, pattern=_PARAMETER)  # and its end, when the API takes one
    # How the times are written: ISO 8601 UTC (2026-12-01T10:15:00Z), Unix seconds or milliseconds, or a day
    # (YYYY-MM-DD: whole days are listed again, so declare item_time to keep only the window's).
    time_format: Literal["iso8601", "unix", "unix_ms", "date"] = "iso8601"
    items: str = "@"  # JMESPath in the answer: the list of listed items (absent: none)
    event: str = "@"  # JMESPath on one item: the event as the webhook carries it (so parse/fetch/map read it)
    item_time: str | None = None  # JMESPath on one item: its update time, to keep only the window's items
    next_page: str | None = None  # JMESPath in the answer: the next page's cursor (absent, null or "": last page)
    next_page_parameter: str = Field(default="cursor", pattern=_PARAMETER)  # where the cursor is sent back
    next_page_keeps_filters: bool = True  # false: a next page is asked with the cursor alone (Deliveroo-style)
    accounts: list[str] = Field(default_factory=list)  # the default tenant's accounts to sweep
    minutes: int | None = Field(default=None, ge=0, le=1440)  # instead of SWEEP_MINUTES (0: not swept)
    max_interval_hours: float | None = Field(default=None, gt=0)  # the longest window the API takes in one call

    @field_validator("items", "event", "item_time", "next_page")
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        return None if value is None else _compile(value)

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        return _checked_url(value, "{account}")

    def variables(self) -> set[str]:
        """The environment variables its templates name."""
        return set(placeholders([self.url, self.headers]))


class Mapping(_Strict):
    """JMESPath expressions evaluated on the guest (the event, or the fetch result)."""

    id: str | None = None  # the platform's customer id → the source's id_field
    firstName: str | None = None
    lastName: str | None = None
    displayName: str | None = None
    email: str | None = None
    phoneNumber: str | None = None
    phone_region: str | None = None  # where a region code for national phone numbers is found
    civility: str | None = None
    civility_map: dict[str, str] = Field(default_factory=dict)
    language: str | None = None
    company: str | None = None
    description: str | None = None
    emailOptin: str | None = None
    smsOptin: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)

    @field_validator("id", "phone_region", *MAPPED_FIELDS)
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        return None if value is None else _compile(value)

    @field_validator("metadata")
    @classmethod
    def _metadata_expressions(cls, value: dict[str, str]) -> dict[str, str]:
        for key, expression in value.items():
            try:
                _compile(expression)
            except ValueError as exc:
                raise ValueError(f"metadata {key!r}: {exc}") from None
        return value


class Ack(_Strict):
    status: int = Field(default=200, ge=200, le=299)
    body: str = ""
    content_type: str = "text/plain"


class Source(_Strict):
    name: str = Field(pattern=NAME_PATTERN)
    preset: str | None = None
    auth: Auth = Field(discriminator="type")
    id_field: Literal[PLATFORM_ID_FIELDS]  # type: ignore[valid-type]
    events: str = "[@]"
    event_type: str | None = None
    import_events: list[str] | None = None
    event_id: str | None = None
    account_id: str | None = None
    fetch: Fetch | None = None
    sweep: Sweep | None = None
    mapping: Mapping
    ack: Ack = Field(default_factory=Ack)

    @field_validator("events", "event_type", "event_id", "account_id")
    @classmethod
    def _expression(cls, value: str | None) -> str | None:
        return None if value is None else _compile(value)

    @model_validator(mode="after")
    def _types_need_a_type(self):
        if self.import_events is not None and self.event_type is None:
            raise ValueError("import_events needs event_type")
        return self

    @model_validator(mode="after")
    def _usable_standard_webhooks_key(self):
        # Lenient base64 turned "whsec_" or "whsec_!!!!" into an empty HMAC key, with which anyone can sign.
        if isinstance(self.auth, StandardWebhooksAuth) and self.auth.secret_value() is not None:
            try:
                standard_webhooks_secret(self.auth.secret_value())
            except ValueError as exc:
                raise ValueError(f"source {self.name!r}: its Standard Webhooks secret {exc}") from None
        return self

    @model_validator(mode="after")
    def _fetch_reads_only_its_own_variables(self):
        for call, spec in (("fetch", self.fetch), ("sweep", self.sweep)):
            reserved = sorted(name for name in spec.variables() if reserved_variable(name)) if spec else []
            if reserved:
                raise ValueError(f"source {self.name!r}: its {call} names {', '.join(reserved)}; a source may not read "
                                 "AWS_*, FULLWHERE_* or a built-in platform's variables")
        return self

    def sent_variables(self) -> set[str]:
        """The variables its API calls (fetch and sweep) send."""
        return (self.fetch.variables() if self.fetch else set()) | (self.sweep.variables() if self.sweep else set())


class SourcesDocument(_Strict):
    sources: list[Source]

    @model_validator(mode="after")
    def _unique(self):
        names = [source.name for source in self.sources]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"source names must be unique: {duplicates}")
        from chalicelib.core.registry import builtin_names

        clashes = sorted(set(names) & set(builtin_names()))
        if clashes:
            raise ValueError(f"{clashes} already name built-in connectors")
        # A webhook secret only checks what arrives: no fetch may send it to an API (its own source's included).
        inbound = {source.auth.secret_env for source in self.sources if getattr(source.auth, "secret_env", None)}
        for source in self.sources:
            sent = sorted(inbound & source.sent_variables())
            if sent:
                raise ValueError(f"source {source.name!r}: its fetch or sweep names {', '.join(sent)}, which holds a "
                                 "webhook secret; webhook secrets are never sent")
        return self


def load_preset(name: str) -> dict[str, Any]:
    path = PRESETS_DIR / f"{name}.json"
    if not re.fullmatch(NAME_PATTERN, name) or not path.is_file():
        known = sorted(p.stem for p in PRESETS_DIR.glob("*.json"))
        raise ValueError(f"unknown preset {name!r}; known presets: {known}")
    # Keys starting with "_" are the preset's own notes.
    return {key: value for key, value in json.loads(path.read_text(encoding="utf-8")).items() if not key.startswith("_")}


def _merge(base: Any, override: Any) -> Any:
    """``override`` on top of ``base``: objects merge key by key, anything else is replaced."""
    if isinstance(base, dict) and isinstance(override, dict):
        return {**base, **{key: _merge(base.get(key), value) for key, value in override.items()}}
    return override


def _with_preset(entry: Any) -> Any:
    """A source entry with its preset's values underneath (the entry's own values win)."""
    if not isinstance(entry, dict) or not entry.get("preset"):
        return entry
    return _merge(load_preset(str(entry["preset"])), entry)


def parse_document(text: str, source: str) -> SourcesDocument:
    data = _parse_text(text, source)
    try:
        if isinstance(data, dict) and isinstance(data.get("sources"), list):
            data = {**data, "sources": [_with_preset(entry) for entry in data["sources"]]}
        return SourcesDocument.model_validate(data)
    except ValueError as exc:  # pydantic's ValidationError, or an unknown preset
        detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
        raise SettingsError(f"invalid sources document ({source}): {detail}") from None


def _parse_text(text: str, source: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as json_error:
        if text.lstrip().startswith(("{", "[")):
            raise SettingsError(f"{source} is not valid JSON: {json_error.msg} at line {json_error.lineno}") from None
    import yaml  # only for YAML documents

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SettingsError(f"{source} is neither JSON nor valid YAML ({type(exc).__name__})") from None


def load_sources(settings: SourcesSettings) -> list[Source]:
    """The sources of the document ``settings`` name (none when they name no document)."""
    if settings.file:
        path = Path(settings.file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise SettingsError(f"cannot read SOURCES_FILE {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise SettingsError(f"SOURCES_FILE {path.name} is not UTF-8 text") from None
        return parse_document(text, f"SOURCES_FILE {path.name}").sources
    if settings.secret_id:
        from chalicelib.infra import aws

        return parse_document(aws.read_secret(settings.secret_id), "SOURCES_SECRET_ID").sources
    return []


def _sources_by_name(settings: SourcesSettings) -> dict[str, Source]:
    return {source.name: source for source in load_sources(settings)}


_sources = Refreshed("sources", _sources_by_name)


def get_sources() -> dict[str, Source]:
    """The container's declarative sources by name, loaded (and validated) on first use and read again every
    ``CONFIG_REFRESH_SECONDS``; an invalid new document is refused and the last valid one kept (an unchanged
    one keeps its object, so the connectors built from it are kept too)."""
    return _sources.get(settings_of(SourcesSettings))


def reset_sources() -> None:
    _sources.reset()
