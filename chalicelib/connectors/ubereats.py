"""Uber Eats order webhooks (``orders.notification``, ``orders.scheduled.notification``).

The webhook carries ids only: the order is fetched with a client-credentials token, from a URL built
from the configured base, never from the webhook's ``resource_href`` (a payload must not point our token
at another host). The eater's phone is Uber's relay line and is never imported; ``eaters[].id`` becomes
``ubereatsId``. Signature, token limits and the id's stability: docs/platforms.md, "Uber Eats".
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from pydantic import Field, field_validator

from chalicelib.connectors.base import Connector, Context, Event, ParsedWebhook, SweepWindow, WebhookRequest
from chalicelib.connectors.payload import PayloadModel, load_json, validate
from chalicelib.connectors.shared import answer_object, cursor_pages, instant, path_segment, present
from chalicelib.core.errors import Held, RetryableError, malformed, unauthorized
from chalicelib.core.normalise import clean_text, display_name
from chalicelib.core.signatures import hex_signature_matches
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.domain.tenants import Tenant
from chalicelib.infra.http import send
from chalicelib.infra.settings import SettingsModel, secret, sweep_accounts_setting, sweep_minutes_setting
from chalicelib.infra.tokens import TokenCache, request_client_credentials

IMPORTED_EVENTS = ("orders.notification", "orders.scheduled.notification")
WHAT = "Uber Eats API"
ORDERS_PAGE_SIZE = 50  # the most one page of a store's orders holds [S]
ORDERS_MAX_PAGES = 500  # 25,000 orders of one store in one window: past that the API is looping, not paging
# When a listed order was placed, under the names public clients read [S] (the v2 order's is `placed_at` [V]).
ORDER_TIMES = ("created_time", "placed_at", "created_at")


class UberEatsSettings(SettingsModel):
    env_prefix, title = "UBEREATS_", "Uber Eats"

    client_id: str | None = Field(default=None, description="the Uber Eats app's client id")
    client_secret: str | None = secret("the Uber Eats app's client secret; it also signs the webhooks")
    api_url: str = Field(default="https://api.uber.com", description="Uber Eats API")
    auth_url: str = Field(default="https://auth.uber.com", description="Uber's token endpoint")
    scope: str = Field(default="eats.store.orders.read", description="scope of the client-credentials token")
    orders_list_path: str = Field(
        default="/v1/delivery/store/{store_id}/orders", pattern=r"^(/[A-Za-z0-9_./{}-]*|(?i:none))$",
        description="a store's orders list the sweep reads by creation time, appended to `UBEREATS_API_URL` "
        "(`{store_id}`: the store); second-hand, so check it is enabled for the app; `none`: Uber Eats is not swept")
    sweep_minutes: int | None = sweep_minutes_setting("Uber Eats")

    @field_validator("orders_list_path")
    @classmethod
    def _one_store(cls, value: str) -> str:
        # Without the store in the path, one tenant's sweep would list every store the app sees.
        if value.lower() != "none" and "{store_id}" not in value:
            raise ValueError("must contain {store_id} (or be none)")
        return value

    sweep_accounts: str | None = sweep_accounts_setting("Uber Eats", "store ids (`meta.user_id`)")


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
            raise Held("Uber Eats client id or secret not configured", "not_configured")
        return self._authorised_get(settings, url, context)

    def check_credentials(self, account_id: str | None, context: Context) -> str | None:
        # One token from the app's client credentials (the same for every store); one of Uber's 100 an hour.
        settings: UberEatsSettings = self.platform_settings()
        if not settings.client_id or not settings.client_secret:
            raise Held("Uber Eats client id or secret not configured", "not_configured")
        _request_token(settings, context)
        return f"the app's client credentials got a token (scope {settings.scope})"

    def sweep_accounts(self, tenant: Tenant) -> list[str]:
        settings: UberEatsSettings = self.platform_settings()
        return [] if settings.orders_list_path.lower() == "none" else super().sweep_accounts(tenant)

    def sweep(self, account_id: str, window: SweepWindow, context: Context) -> Iterator[Event] | None:
        """The orders placed at store ``account_id`` in ``window``, from the store's orders list [S], as
        ``orders.notification`` events naming each order (the fetch then reads it as for the webhook)."""
        settings: UberEatsSettings = self.platform_settings()
        if settings.orders_list_path.lower() == "none":
            return None
        return self._sweep(settings, account_id, window, context)

    def _sweep(self, settings: UberEatsSettings, store_id: str, window: SweepWindow,
               context: Context) -> Iterator[Event]:
        # The app's client credentials are the integration's own (a store authorises the app): the ones every
        # tenant's orders are fetched with. A tenant's wall is its list of stores, the only ones swept for it.
        if not settings.client_id or not settings.client_secret:
            raise Held("Uber Eats client id or secret not configured", "not_configured")
        url = settings.api_url + settings.orders_list_path.replace(
            "{store_id}", path_segment(store_id, "Uber Eats store id"))
        params = {"start_time": _iso(window.since), "end_time": _iso(window.until),
                  "page_size": str(ORDERS_PAGE_SIZE)}

        def read_page(next_page: str | None) -> tuple[list[Any], str | None]:
            page = self._authorised_get(settings, url, context,
                                        params if next_page is None else {**params, "next_page_token": next_page})
            orders = page.get("data", page.get("orders", []))
            if not isinstance(orders, list):
                raise RetryableError(f"{WHAT} orders list answered orders that are not a list")
            pagination = page.get("pagination_data") if isinstance(page.get("pagination_data"), dict) else page
            next_page = pagination.get("next_page_token")  # a paging cursor, not a credential
            return orders, next_page if isinstance(next_page, str) else None

        for orders in cursor_pages(read_page, f"{WHAT} orders list", ORDERS_MAX_PAGES):
            for order in orders:
                event = _swept_order(order, store_id, window)
                if event is not None:
                    yield event

    def _authorised_get(self, settings: UberEatsSettings, url: str, context: Context,
                        params: dict[str, str] | None = None) -> dict[str, Any]:
        response = _tokens.authorised(
            (settings.auth_url, settings.client_id, settings.scope),
            lambda: _request_token(settings, context),
            lambda token: send("GET", url, context.deadline, what=WHAT, params=params,
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


def _request_token(settings: UberEatsSettings, context: Context) -> tuple[str, float]:
    return request_client_credentials(
        f"{settings.auth_url}/oauth/v2/token", context.deadline, what="Uber Eats token endpoint",
        form={"client_id": settings.client_id, "client_secret": settings.client_secret,
              "grant_type": "client_credentials", "scope": settings.scope})


def _swept_order(order: Any, store_id: str, window: SweepWindow) -> Event | None:
    """The ``orders.notification`` the webhook sent for a listed order; None outside ``window`` (its creation time
    read again: the list's filters are second-hand; an order without a readable time is kept)."""
    if not isinstance(order, dict):
        return None
    order_id = clean_text(order.get("id")) or clean_text(order.get("order_id"))
    if not order_id:
        return None
    created = next((moment for moment in map(instant, (order.get(key) for key in ORDER_TIMES)) if moment), None)
    if created is not None and not window.since <= created < window.until:
        return None
    return Event(
        # Uber's notification id is not in the list: the order is named instead (the id is for the logs; the
        # guest_key and the eater's ubereatsId are the webhook's).
        event_id=f"sweep/order/{order_id}",
        kind="orders.notification",
        account_id=store_id,
        data={"order_id": order_id},
        guest_key=f"order:{order_id}",
    )


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _last_segment(href: str | None) -> str | None:
    if not href:
        return None
    return href.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0] or None
