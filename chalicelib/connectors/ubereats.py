"""Uber Eats order webhooks (``orders.notification``, ``orders.scheduled.notification``).

The webhook carries ids only: the order is fetched with a client-credentials token, from a URL built
from the configured base, never from the webhook's ``resource_href`` (a payload must not point our token
at another host). The eater's phone is Uber's relay line and is never imported; ``eaters[].id`` becomes
``ubereatsId``. Signature, token limits and the id's stability: docs/platforms.md, "Uber Eats".
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from chalicelib.connectors.base import Connector, Context, Event, ParsedWebhook, WebhookRequest
from chalicelib.connectors.payload import PayloadModel, load_json, validate
from chalicelib.connectors.shared import answer_object, path_segment, present
from chalicelib.core.errors import PermanentError, malformed, unauthorized
from chalicelib.core.normalise import clean_text, display_name
from chalicelib.core.signatures import hex_signature_matches
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.infra.http import send
from chalicelib.infra.settings import SettingsModel, secret
from chalicelib.infra.tokens import TokenCache, request_client_credentials

IMPORTED_EVENTS = ("orders.notification", "orders.scheduled.notification")
WHAT = "Uber Eats API"


class UberEatsSettings(SettingsModel):
    env_prefix, title = "UBEREATS_", "Uber Eats"

    client_id: str | None = Field(default=None, description="the Uber Eats app's client id")
    client_secret: str | None = secret("the Uber Eats app's client secret; it also signs the webhooks")
    api_url: str = Field(default="https://api.uber.com", description="Uber Eats API")
    auth_url: str = Field(default="https://auth.uber.com", description="Uber's token endpoint")
    scope: str = Field(default="eats.store.orders.read", description="scope of the client-credentials token")


class Meta(PayloadModel):
    user_id: str | None = None
    resource_id: str | None = None


class Notification(PayloadModel):
    event_id: str = Field(min_length=1)
    event_type: str
    meta: Meta | None = None
    resource_href: str | None = None


class UberEatsConnector(Connector, platform="ubereats", id_field="ubereatsId",
                        settings=UberEatsSettings, secret="client_secret"):

    def verify(self, request: WebhookRequest) -> None:
        signature = request.required_header("X-Uber-Signature")
        if not hex_signature_matches(self.webhook_secret(), request.body, signature):
            raise unauthorized("Uber Eats signature does not match")

    def parse(self, request: WebhookRequest) -> ParsedWebhook:
        notification = validate(Notification, load_json(request.body), "Uber Eats webhook")
        if notification.event_type not in IMPORTED_EVENTS:
            return ParsedWebhook(events=[], ignored=[notification.event_type])
        meta = notification.meta or Meta()
        order_id = meta.resource_id or _last_segment(notification.resource_href)
        if not order_id:
            raise malformed("Uber Eats webhook: no order id in meta.resource_id or resource_href")
        event = Event(
            event_id=notification.event_id,
            kind=notification.event_type,
            account_id=meta.user_id,
            data={"order_id": order_id},
            guest_key=f"order:{order_id}",
        )
        return ParsedWebhook(events=[event])

    def fetch(self, event: Event, context: Context) -> dict[str, Any] | None:
        settings: UberEatsSettings = self.platform_settings()
        url = f"{settings.api_url}/v2/eats/order/{path_segment(event.data.get('order_id'), 'Uber Eats order id')}"
        if not settings.client_id or not settings.client_secret:
            raise PermanentError("Uber Eats client id or secret not configured")
        response = _tokens.authorised(
            (settings.auth_url, settings.client_id, settings.scope),
            lambda: request_client_credentials(
                f"{settings.auth_url}/oauth/v2/token", context.deadline, what="Uber Eats token endpoint",
                form={"client_id": settings.client_id, "client_secret": settings.client_secret,
                      "grant_type": "client_credentials", "scope": settings.scope}),
            lambda token: send("GET", url, context.deadline, what=WHAT,
                               headers={"Authorization": f"Bearer {token}", "Accept-Encoding": "gzip"}),
            refused=f"{WHAT} refused a fresh token (401): check the app's scopes",
        )
        return answer_object(response, WHAT)

    def map(self, guest: dict[str, Any], event: Event, context: Context) -> CustomerImport:
        eater = guest.get("eater") if isinstance(guest.get("eater"), dict) else {}
        first_name = clean_text(eater.get("first_name"))
        last_initial = clean_text(eater.get("last_name"))
        store = guest.get("store") if isinstance(guest.get("store"), dict) else {}
        metadata = {
            "source": "ubereats",
            "ubereatsOrderId": clean_text(guest.get("id")),
            "ubereatsDisplayId": clean_text(guest.get("display_id")),
            "ubereatsStoreId": clean_text(store.get("id")) or event.account_id,
            "ubereatsOrderType": clean_text(guest.get("type")),
            "ubereatsBrand": clean_text(guest.get("brand")),
        }
        # eater.phone is Uber's anonymized relay line (with phone_code): never the guest's contact.
        return CustomerImport(
            firstName=first_name,
            lastName=last_initial,
            displayName=display_name(first_name, last_initial),
            ubereatsId=eater_id(guest, first_name),
            metadata=present(metadata),
        )


def eater_id(order: dict[str, Any], first_name: str | None) -> str | None:
    """The id of the eater who placed the order, from ``eaters[]``.

    One participant: theirs. A group order: the one participant whose first name is the orderer's;
    if that is ambiguous, no id (a wrong id would merge two people in the CRM).
    """
    eaters = [e for e in order.get("eaters") or [] if isinstance(e, dict) and clean_text(e.get("id"))]
    if len(eaters) == 1:
        return clean_text(eaters[0]["id"])
    matching = [e for e in eaters if first_name and clean_text(e.get("first_name")) == first_name]
    return clean_text(matching[0]["id"]) if len(matching) == 1 else None


# Uber limits client-credentials token requests to 100 an hour: keep each until 5 minutes before expiry.
_tokens = TokenCache(margin_seconds=300)


def _last_segment(href: str | None) -> str | None:
    if not href:
        return None
    return href.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or None
