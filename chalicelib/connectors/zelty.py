"""Zelty (French restaurant POS) webhooks, version ``v2``.

Everything known about Zelty's webhooks is second-hand and its customer object is not public, so each
guess is a documented default that ZELTY_CUSTOMER_PATHS overrides, or a refusal: unsigned ``v1``
webhooks could be forged and are refused. The customer travels in the webhook (no fetch). Sources,
defaults and judgement calls: docs/platforms.md (Zelty).
"""

from __future__ import annotations

import fnmatch
import functools
import json
import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chalicelib.connectors.base import Connector, Context, Event, ParsedWebhook, WebhookRequest
from chalicelib.connectors.payload import PayloadModel, load_json, validate
from chalicelib.connectors.shared import present
from chalicelib.core.errors import SettingsError, describe_validation_error, unauthorized
from chalicelib.core.normalise import clean_text, display_name, normalise_email, normalise_phone
from chalicelib.core.signatures import hex_signature_matches
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.domain.tenants import Tenant
from chalicelib.infra.settings import SettingsModel, secret

SIGNATURE_HEADER = "x-zelty-hmac-sha256"


class ZeltySettings(SettingsModel):
    env_prefix, title = "ZELTY_", "Zelty"

    # Validated on first use by customer_paths(), so that a mistake answers 503 naming the setting.
    customer_paths: str | None = Field(
        default=None,
        description="JSON: which events carry a customer and where, which Zelty key holds each field, extra "
        "metadata, where an order carrying its customer flat keeps each field, and the delivery-platform "
        "channels whose relay contacts are not imported. Unset, the defaults in docs/platforms.md (order events: "
        "`data.customer`, else the fields flat on the order `data`: `customer_id`, `first_name`, `last_name`, "
        "`email`, `phone`; `customer.created`/`customer.updated`: `data`; customer keys `id`, `fname`, `name`, "
        "`mail`, `phone`, `sms_optin`, `mail_optin`). Zelty's customer object is not public, so this is where a "
        "correction goes")
    webhook_secret: str | None = secret(
        "the `secret_key` you chose and registered with Zelty's `POST /webhooks` (version `v2`); it keys the "
        "`x-zelty-hmac-sha256` signature. The default tenant's: a tenants document gives each tenant its own "
        "`webhook_secret`. Unsigned (`v1`) webhooks are refused")


SETTING = ZeltySettings.variable("customer_paths")

# Every section is replaced as a whole by the same section of ZELTY_CUSTOMER_PATHS; sections left out
# keep these defaults. Event paths and relay paths start at the envelope; field and metadata paths
# start at the customer object. A path is a dotted key ("data.customer", "addresses.0.zip"), or a list
# of such paths tried in turn.
DEFAULT_CUSTOMER_PATHS: dict[str, Any] = {
    # Event name (exact, or a glob such as "order.*"; an exact name wins) → where the customer is;
    # null = ignored on purpose. Customer events are named explicitly (their names are unknown) so that
    # a deletion or merge event can never import a customer by accident.
    "events": {
        "order.*": "data.customer",
        "customer.created": "data",
        "customer.updated": "data",
    },
    # Fullwhere field → Zelty's key, as Fullwhere's own metadata.zelty mirror names them.
    "fields": {
        "id": "id",
        "first_name": "fname",
        "last_name": "name",
        "email": "mail",
        "phone": "phone",
        "sms_optin": "sms_optin",
        "email_optin": "mail_optin",
    },
    # Fullwhere metadata key → Zelty's key (values sent as strings).
    "metadata": {
        "zeltyOrderCount": "nb_orders",
        "zeltyTurnover": "turnover",
    },
    # Orders that carry their customer flat, as fields of the order itself (a report on consumers of
    # GET /orders, unconfirmed): read only when the event's customer path above holds no customer object,
    # for events listed here. The order's own "id" is the order's, so the customer id is "customer_id";
    # no opt-in or metadata is read from an order. null turns the flat shape off.
    "flat": {
        "events": {"order.*": "data"},
        "fields": {
            "id": "customer_id",
            "first_name": "first_name",
            "last_name": "last_name",
            "email": "email",
            "phone": "phone",
        },
    },
    # Orders relayed from delivery platforms carry the platform's relay contact: when one of these paths
    # holds one of these values (compared in lower case, letters and digits only), the email, phone and
    # opt-ins are not imported.
    "relay": {
        "paths": ["data.source", "data.channel"],
        "values": ["deliveroo", "ubereats", "justeat"],
    },
}

CUSTOMER_FIELDS = Literal["id", "first_name", "last_name", "email", "phone", "sms_optin", "email_optin"]
# Metadata keys the connector fills itself.
RESERVED_METADATA = ("source", "zeltyRestaurantId", "zeltyBrandId", "zeltyOrderId", "zeltyChannel")

_PATH = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")


def _paths(value: object) -> tuple[str, ...]:
    """A path or a non-empty list of paths, each a dotted key such as ``data.customer``."""
    paths = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, (list, tuple)) else ()
    if not paths or not all(isinstance(path, str) and _PATH.match(path) for path in paths):
        raise ValueError("a path is a dotted key such as data.customer, or a non-empty list of them")
    return paths


def _channel(value: object) -> str:
    return re.sub(r"[^a-z0-9]", "", value.lower()) if isinstance(value, str) else ""


class RelayRule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    paths: tuple[str, ...]
    values: frozenset[str]

    @field_validator("paths", mode="before")
    @classmethod
    def _check_paths(cls, value: Any) -> tuple[str, ...]:
        return _paths(value)

    @field_validator("values", mode="before")
    @classmethod
    def _normalise_values(cls, value: Any) -> frozenset[str]:
        if not isinstance(value, list) or not all(isinstance(v, str) and _channel(v) for v in value):
            raise ValueError("values must be a list of channel names")
        return frozenset(_channel(v) for v in value)


def _event_paths(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {name: None if path is None else _paths(path) for name, path in value.items()}


def _field_paths(value: Any) -> Any:
    if not isinstance(value, dict):
        return value
    return {name: _paths(path) for name, path in value.items()}


def _locate(events: dict[str, tuple[str, ...] | None], event_name: str) -> tuple[str, ...] | None:
    """An exact event name wins over a glob; ``None`` when no entry names the event (or it is null)."""
    if event_name in events:
        return events[event_name]
    for pattern, paths in events.items():
        if any(ch in pattern for ch in "*?[") and fnmatch.fnmatchcase(event_name, pattern):
            return paths
    return None


class FlatRule(BaseModel):
    """Where an order that carries its customer as its own fields keeps them."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    events: dict[str, tuple[str, ...] | None] = Field(min_length=1)
    fields: dict[CUSTOMER_FIELDS, tuple[str, ...]] = Field(min_length=1)

    @field_validator("events", mode="before")
    @classmethod
    def _check_events(cls, value: Any) -> Any:
        return _event_paths(value)

    @field_validator("fields", mode="before")
    @classmethod
    def _check_fields(cls, value: Any) -> Any:
        return _field_paths(value)


class CustomerPaths(BaseModel):
    """The validated ``ZELTY_CUSTOMER_PATHS`` document."""

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    events: dict[str, tuple[str, ...] | None] = Field(min_length=1)
    fields: dict[CUSTOMER_FIELDS, tuple[str, ...]]
    metadata: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    flat: FlatRule | None = None
    relay: RelayRule | None = None

    @field_validator("events", mode="before")
    @classmethod
    def _check_events(cls, value: Any) -> Any:
        return _event_paths(value)

    @field_validator("fields", "metadata", mode="before")
    @classmethod
    def _check_fields(cls, value: Any) -> Any:
        return _field_paths(value)

    @model_validator(mode="after")
    def _check(self) -> "CustomerPaths":
        if not self.fields:
            raise ValueError("fields must map at least one field")
        reserved = sorted(set(self.metadata) & set(RESERVED_METADATA))
        if reserved:
            raise ValueError(f"metadata keys {reserved} are filled by the connector")
        if any(not key for key in self.metadata):
            raise ValueError("metadata keys must not be empty")
        return self

    def locate(self, event_name: str) -> tuple[str, ...] | None:
        """Where the customer is in this event, or ``None`` when the event carries none."""
        return _locate(self.events, event_name)

    def locate_flat(self, event_name: str) -> tuple[str, ...] | None:
        """Where an order carrying its customer flat is in this event, or ``None``."""
        return None if self.flat is None else _locate(self.flat.events, event_name)


@functools.lru_cache(maxsize=8)
def customer_paths(raw: str | None) -> CustomerPaths:
    """The configured customer paths (the defaults when unset); a clear :class:`SettingsError` otherwise.

    Error messages name the setting and the offending keys, never its content.
    """
    document: Any = {}
    if raw:
        try:
            document = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise SettingsError(f"{SETTING} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        if not isinstance(document, dict):
            raise SettingsError(f"{SETTING} must be a JSON object")
    try:
        return CustomerPaths.model_validate({**DEFAULT_CUSTOMER_PATHS, **document})
    except ValidationError as exc:
        raise SettingsError(f"invalid {SETTING}: {describe_validation_error(exc)}") from None


def resolve(document: Any, path: str) -> Any:
    """The value at a dotted path (list items by index), or ``None``."""
    value = document
    for key in path.split("."):
        if isinstance(value, dict):
            value = value.get(key)
        elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
            value = value[int(key)]
        else:
            return None
    return value


def _first_scalar(document: Any, paths: tuple[str, ...]) -> str | int | float | bool | None:
    for path in paths:
        value = resolve(document, path)
        if isinstance(value, (str, int, float, bool)) and value != "":
            return value
    return None


class Envelope(PayloadModel):
    event_id: str = Field(min_length=1)
    event_name: str = Field(min_length=1)
    created_at: str | None = None
    version: str | None = None
    brand_id: str | None = None
    restaurant_id: str | None = None
    data: Any = None


class ZeltyConnector(Connector, platform="zelty", id_field="zeltyId", settings=ZeltySettings, secret="webhook_secret"):

    def verify(self, request: WebhookRequest, tenant: Tenant | None = None) -> None:
        # Each brand registers the webhook with its own secret_key: a named tenant's is its webhook_secret.
        secret = self.webhook_secret(tenant)
        signature = request.header(SIGNATURE_HEADER)
        if not signature:
            # v1 webhooks are sent unsigned: accepting them would let anyone write customers into the CRM.
            raise unauthorized(
                "missing x-zelty-hmac-sha256: Zelty signs only v2 webhooks; register this URL with version v2 and "
                "the secret_key set as ZELTY_WEBHOOK_SECRET (or the tenant's webhook_secret)"
            )
        if not hex_signature_matches(secret, request.body, signature):
            raise unauthorized("Zelty signature does not match")

    def parse(self, request: WebhookRequest) -> ParsedWebhook:
        document = load_json(request.body)
        envelope = validate(Envelope, document, "Zelty webhook")
        paths = customer_paths(self.platform_settings().customer_paths)
        locations = paths.locate(envelope.event_name)
        account = envelope.restaurant_id or envelope.brand_id
        if locations is None:
            return ParsedWebhook(events=[], ignored=[envelope.event_name], ignored_accounts={account})
        customer = next(
            (found for path in locations if isinstance(found := resolve(document, path), dict) and found), None
        )
        if customer is not None:
            fields = _read(customer, paths.fields)
            metadata = {
                key: _metadata_value(value) for key, keys in paths.metadata.items()
                if (value := _first_scalar(customer, keys)) is not None
            }
        else:
            # No nested customer: the order may carry it as its own fields. Only then, so that an order's
            # own keys never override or mix with a customer object that is there.
            fields, metadata = _flat_fields(document, paths, envelope.event_name), {}
            if not fields:
                return ParsedWebhook(events=[], ignored=[f"{envelope.event_name}:no-customer"],
                                     ignored_accounts={account})

        relay_channel = None
        if paths.relay is not None:
            relay_channel = next(
                (channel for path in paths.relay.paths
                 if (channel := _channel(resolve(document, path))) in paths.relay.values),
                None,
            )
        data = envelope.data if isinstance(envelope.data, dict) else {}
        order_id = data.get("id") if envelope.event_name.startswith("order.") else None
        customer_id = _text(fields.get("id"))
        event = Event(
            event_id=envelope.event_id,
            kind=envelope.event_name,
            account_id=account,
            # Only what the mapping needs travels (and waits in the retry queue), not the whole order.
            data={
                "customer": fields,
                "metadata": metadata,
                "relay_channel": relay_channel,
                "restaurant_id": envelope.restaurant_id,
                "brand_id": envelope.brand_id,
                "order_id": _text(order_id),
            },
            guest_key=f"customer:{customer_id}" if customer_id else None,
        )
        return ParsedWebhook(events=[event])

    def map(self, guest: dict[str, Any], event: Event, context: Context) -> CustomerImport:
        customer = guest.get("customer") or {}
        relayed = bool(guest.get("relay_channel"))
        first_name = clean_text(_text(customer.get("first_name")))
        last_name = clean_text(_text(customer.get("last_name")))
        metadata = {
            **(guest.get("metadata") or {}),
            "source": "zelty",
            "zeltyRestaurantId": guest.get("restaurant_id"),
            "zeltyBrandId": guest.get("brand_id"),
            "zeltyOrderId": guest.get("order_id"),
            "zeltyChannel": guest.get("relay_channel"),
        }
        return CustomerImport(
            firstName=first_name,
            lastName=last_name,
            displayName=display_name(first_name, last_name),
            # A delivery platform's relay contact reaches its call centre, not the diner.
            email=None if relayed else normalise_email(_text(customer.get("email"))),
            phoneNumber=None if relayed else normalise_phone(_text(customer.get("phone")), *context.phone_regions()),
            # Zelty's own consent flags; absent or unreadable = not stated (null, never a guessed false).
            smsOptin=None if relayed else _flag(customer.get("sms_optin")),
            emailOptin=None if relayed else _flag(customer.get("email_optin")),
            zeltyId=clean_text(_text(customer.get("id"))),
            metadata=present(metadata),
        )


def _read(source: Any, keys: dict[str, tuple[str, ...]]) -> dict[str, str | int | float | bool]:
    return {field: value for field, paths in keys.items() if (value := _first_scalar(source, paths)) is not None}


def _flat_fields(document: Any, paths: CustomerPaths, event_name: str) -> dict[str, str | int | float | bool]:
    """The customer fields an order carries flat, from the first order object that has any."""
    for path in paths.locate_flat(event_name) or ():
        order = resolve(document, path)
        if isinstance(order, dict) and paths.flat is not None and (fields := _read(order, paths.flat.fields)):
            return fields
    return {}


def _text(value: object) -> str | None:
    """Ids and phones may come as JSON numbers."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value if isinstance(value, str) else None


def _metadata_value(value: str | int | float | bool) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return clean_text(str(value)) or ""


_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


def _flag(value: object) -> bool | None:
    """A consent flag as Zelty may send it (JSON boolean, 0/1, "true"/"false"); anything else is not stated."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
    return None
