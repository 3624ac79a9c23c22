"""TheFork Manager B2B API webhooks (``customerCreated``/``customerUpdated``, ``reservationCreated``/``reservationUpdated``).

Authentication [vendor docs, docs.thefork.io/B2B-API/event-webhook-flow]: no signature; the URL we give
TheFork carries a token we generate (``?token=...``). It is compared in constant time with
``THEFORK_WEBHOOK_TOKEN`` and, like every query value, never logged.

The webhook carries ids only (``entityType``, ``eventType``, ``uuid``, plus ``groupUuid`` and, for
reservations, ``restaurantUuid``; an older version of the page shows neither, so both are optional).
``customer*`` events → ``GET {THEFORK_API_URL}/v1/customers/{uuid}``; ``reservation*`` events →
``GET {THEFORK_API_URL}/v1/reservations/{uuid}``, then the customer behind its ``customerUuid`` (none for
a walk-in: nothing to import). Review events and anything else are acknowledged and ignored. URLs are
built from our setting and a uuid checked against a strict pattern, so a payload cannot redirect our
token.

Token [vendor docs, docs.thefork.io/B2B-API/authentication]: Auth0 client credentials,
``POST {THEFORK_AUTH_URL}/oauth/token`` with a **form-encoded** body (``audience=https://api.thefork.io&
grant_type=client_credentials&client_id=...&client_secret=...``: TheFork's own example is
``curl -d '...'``). A token lives 8600 s and TheFork asks not to request a new one before the old one
expires, so it is cached per container for its lifetime (less one minute) and renewed early only when
the API answers 401.

Acknowledgement: ``200`` [vendor docs] with ``{"data":{}}`` within a few seconds [second-hand:
api-evangelist/lafourchette's capture of the same page].

Mapping (customer object of the decoded B2B contract): ``firstName``, ``lastName``, ``email``, ``phone``,
``locale`` → language, ``civility`` (values undocumented on this object; the booking request's enum
``mr``, ``mrs``, ``ms``, ``mx``, ``doctor``, ... is assumed), ``optins.restaurantNewsletter`` → ``emailOptin``
(``true`` only: the field defaults to ``false`` and "when false is provided it will not unsubscribe the
diner", so ``false`` states no refusal), ``customerUuid`` → ``theForkId``. The customer object documents
no SMS consent: ``smsOptin`` stays null. Allergies, notes and other health-adjacent or internal fields
are never imported.

Tenant routing: ``restaurantUuid``, else ``groupUuid`` (customer events carry only the group).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from pydantic import Field

from chalicelib.connectors.base import (
    Connector,
    Context,
    Event,
    ParsedWebhook,
    PayloadModel,
    WebhookRequest,
    load_json,
    validate,
)
from chalicelib.core.errors import PermanentError, RetryableError, malformed, unauthorized
from chalicelib.core.normalise import clean_text, display_name, language_code, normalise_email, normalise_phone
from chalicelib.core.signatures import equal
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.infra.http import Deadline, json_object, raise_for_status, send
from chalicelib.infra.settings import Settings
from chalicelib.infra.tokens import TokenCache, read_token_response

# eventType → the entity it is about (and the API collection to fetch it from).
IMPORTED_EVENTS = {
    "customerCreated": "customer",
    "customerUpdated": "customer",
    "reservationCreated": "reservation",
    "reservationUpdated": "reservation",
}
AUDIENCE = "https://api.thefork.io"
WHAT = "TheFork API"
# TheFork ids are UUIDs; anything else in a URL path (slashes, dots) is refused.
UUID_PATTERN = r"^[0-9A-Za-z][0-9A-Za-z-]{0,63}$"
_UUID = re.compile(UUID_PATTERN)

# TheFork's civility codes (enum of the booking request body; the customer object leaves the values
# undocumented) → Fullwhere's style ("e.g., Mr., Ms."). Others (mr_and_mrs: two people; company; titles
# such as ambassador or duchess) are left null rather than guessed.
CIVILITIES = {
    "mr": "Mr.",
    "mrs": "Mrs.",
    "ms": "Ms.",
    "mx": "Mx.",
    "doctor": "Dr.",
    "dr": "Dr.",
    "professor": "Prof.",
}


class Notification(PayloadModel):
    entityType: str = Field(min_length=1)
    eventType: str = Field(min_length=1)
    uuid: str = Field(pattern=UUID_PATTERN)
    groupUuid: str | None = None
    restaurantUuid: str | None = None


class TheForkConnector(Connector):
    name = "thefork"
    secret_setting = "thefork_webhook_token"
    id_field = "theForkId"
    ack_body = '{"data":{}}'
    ack_content_type = "application/json"

    def verify(self, request: WebhookRequest, settings: Settings) -> None:
        if not equal(request.query.get("token"), self.webhook_secret(settings)):
            raise unauthorized("TheFork token query parameter missing or wrong")

    def sign(self, body: bytes, settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
        return {"Content-Type": "application/json"}, {"token": self.webhook_secret(settings)}

    def parse(self, request: WebhookRequest) -> ParsedWebhook:
        notification = validate(Notification, load_json(request.body), "TheFork webhook")
        entity = IMPORTED_EVENTS.get(notification.eventType)
        if entity is None:
            return ParsedWebhook(events=[], ignored=[f"{notification.entityType}:{notification.eventType}"])
        if notification.entityType.lower() != entity:
            raise malformed(f"TheFork webhook: entityType {notification.entityType[:40]!r} does not match "
                            f"eventType {notification.eventType!r}")
        group = clean_text(notification.groupUuid, max_length=64)
        restaurant = clean_text(notification.restaurantUuid, max_length=64)
        event = Event(
            event_id=f"{entity}/{notification.eventType}/{notification.uuid}",
            kind=notification.eventType,
            account_id=restaurant or group,
            data={"entity": entity, "uuid": notification.uuid, "groupUuid": group, "restaurantUuid": restaurant},
            guest_key=f"{entity}:{notification.uuid}",
        )
        return ParsedWebhook(events=[event])

    def fetch(self, event: Event, context: Context) -> dict[str, Any] | None:
        client = _Client(context, context.credentials(self.name, event.account_id))
        if event.data["entity"] == "reservation":
            reservation = client.get("reservations", event.data["uuid"])
            customer_uuid = reservation.get("customerUuid")
            if not customer_uuid:
                return None  # a walk-in: no customer record behind the reservation
            if not isinstance(customer_uuid, str) or not _UUID.match(customer_uuid):
                raise PermanentError(f"{WHAT} gave a reservation whose customerUuid is not a uuid")
            customer = client.get("customers", customer_uuid)
            return {"customer": customer, "customer_uuid": customer_uuid, "reservation": {
                key: reservation.get(key)
                for key in ("reservationUuid", "restaurantUuid", "status", "reservationChannel")
            }}
        return {"customer": client.get("customers", event.data["uuid"]), "customer_uuid": event.data["uuid"]}

    def map(self, guest: dict[str, Any], event: Event, context: Context) -> CustomerImport:
        customer = guest.get("customer") if isinstance(guest.get("customer"), dict) else {}
        reservation = guest.get("reservation") if isinstance(guest.get("reservation"), dict) else {}
        first_name = clean_text(customer.get("firstName"))
        last_name = clean_text(customer.get("lastName"))
        locale = clean_text(customer.get("locale"), max_length=20)
        optins = customer.get("optins")
        metadata = {
            "source": "thefork",
            "theForkGroupUuid": event.data.get("groupUuid"),
            "theForkRestaurantUuid": clean_text(reservation.get("restaurantUuid")) or event.data.get("restaurantUuid"),
            "theForkOriginRestaurantUuid": clean_text(customer.get("originRestaurantUuid")),
            "theForkReservationUuid": clean_text(reservation.get("reservationUuid")),
            "theForkReservationStatus": clean_text(reservation.get("status")),
            "theForkReservationChannel": clean_text(reservation.get("reservationChannel")),
            "theForkVip": "true" if customer.get("isVip") is True else None,
        }
        return CustomerImport(
            firstName=first_name,
            lastName=last_name,
            displayName=display_name(first_name, last_name),
            civility=civility(customer.get("civility")),
            language=language_code(locale),
            email=normalise_email(customer.get("email")),
            # Read in the tenant's region, then the locale's country (fr_FR → FR), then the address country.
            phoneNumber=normalise_phone(customer.get("phone"), context.phone_region, locale_region(locale),
                                        clean_text(customer.get("country"), max_length=2)),
            # restaurantNewsletter defaults to false and a false "will not unsubscribe the diner": only true
            # states consent. No SMS consent is documented on the customer object.
            emailOptin=True if isinstance(optins, dict) and optins.get("restaurantNewsletter") is True else None,
            theForkId=clean_text(customer.get("customerUuid")) or clean_text(guest.get("customer_uuid")),
            metadata={key: value for key, value in metadata.items() if value},
        )


def civility(value: object) -> str | None:
    text = clean_text(value, max_length=40)
    return CIVILITIES.get(text.lower().rstrip(".")) if text else None


def locale_region(locale: str | None) -> str | None:
    """``fr_FR`` → ``FR`` (TheFork's locale pattern is ``^([a-z]{2,3})(?:_([A-Z]{2}))?$``)."""
    match = re.fullmatch(r"[A-Za-z]{2,3}[-_]([A-Za-z]{2})", locale or "")
    return match.group(1).upper() if match else None


class _Client:
    """GETs on the B2B API with the cached bearer token of the credentials in use."""

    def __init__(self, context: Context, account_credentials: dict[str, str]):
        settings = context.settings
        self.deadline = context.deadline
        self.api_url = settings.thefork_api_url
        self.auth_url = settings.thefork_auth_url
        # A tenant may give an account its own API client; otherwise the settings' one is used.
        self.client_id = account_credentials.get("client_id") or settings.thefork_client_id
        self.client_secret = account_credentials.get("client_secret") or settings.thefork_client_secret
        if not self.client_id or not self.client_secret:
            raise PermanentError("TheFork client id or secret not configured")

    def get(self, collection: str, uuid: str) -> dict[str, Any]:
        url = f"{self.api_url}/v1/{collection}/{quote(uuid, safe='')}"
        response = _tokens.authorised(
            (self.auth_url, self.client_id),
            lambda: _request_token(self.auth_url, self.client_id, self.client_secret, self.deadline),
            lambda token: send("GET", url, self.deadline, what=WHAT,
                               headers={"Authorization": f"Bearer {token}", "Accept": "application/json"}),
            refused=f"{WHAT} refused a fresh token (401): check the client's access to this restaurant",
        )
        raise_for_status(response, WHAT)
        body = json_object(response)
        if body is None:
            raise RetryableError(f"{WHAT} answered 2xx without a JSON object")
        return body


def _request_token(auth_url: str, client_id: str, client_secret: str, deadline: Deadline) -> tuple[str, float]:
    what = "TheFork token endpoint"
    # Form-encoded, as in TheFork's own example (curl -d 'audience=...&grant_type=...').
    response = send("POST", f"{auth_url}/oauth/token", deadline, what=what, data={
        "audience": AUDIENCE,
        "grant_type": "client_credentials",
        "client_id": client_id,
        "client_secret": client_secret,
    })
    return read_token_response(response, what, default_lifetime=8600.0)  # TheFork documents 8600 s


# TheFork asks not to request a token before the previous one expires: renew one minute before.
_tokens = TokenCache(margin_seconds=60)


