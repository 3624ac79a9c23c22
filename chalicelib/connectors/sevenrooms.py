"""SevenRooms reservation and client webhooks.

SevenRooms' API documentation is gated, so the envelope and the client fetch are second-hand, and how
the push is authenticated is unknown: SEVENROOMS_AUTH chooses a URL token or a body HMAC. When API
credentials are set, the guest's client record is required (a failed fetch is retried rather than
importing the webhook's copy), since it decides the email/phone pair Fullwhere merges on. Sources and
judgement calls: docs/platforms.md (SevenRooms).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import Field, field_validator

from chalicelib.connectors.base import Connector, Context, Event, ParsedWebhook, SweepWindow, WebhookRequest
from chalicelib.connectors.payload import PayloadModel, load_json, validate
from chalicelib.connectors.shared import answer_object, cursor_pages, path_segment, present
from chalicelib.core.errors import Held, RejectedRequest, RetryableError, malformed, unauthorized
from chalicelib.core.normalise import clean_text, display_name, language_code, normalise_email, normalise_phone
from chalicelib.core.signatures import equal
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.domain.tenants import Tenant
from chalicelib.infra.http import Deadline, send
from chalicelib.infra.settings import SettingsModel, secret, sweep_accounts_setting, sweep_minutes_setting
from chalicelib.infra.tokens import TokenCache

WHAT = "SevenRooms API"
TOKEN_PARAMETER = "token"
IMPORTED_EVENTS = ("created", "updated")
TOKEN_LIFETIME_SECONDS = 24 * 3600  # "expires after 24 hours" [V]
EXPORT_PAGE_LIMIT = 400  # the page size public clients ask the reservations export for [S]
EXPORT_MAX_PAGES = 250  # 100,000 reservations in one window: past that the API is looping, not paging
SWEEP_FILTERS = ("venue_id", "venue_group_id")  # what an account is listed by (its entry's `sweep_by`)
# A reservation listed with its `updated` this close to its `created` has not changed since SevenRooms sent
# `created` for it (the documented example differs by a millisecond).
CREATED_MARGIN = timedelta(seconds=1)

# Every key of either entity (and of the fetched client) the mapping may read; documented aliases of
# the client's partly proven keys included. Nothing else of the entity (notes, tickets, custom fields)
# travels through the retry queue.
ID_KEYS = ("id", "client_id", "venue_group_client_id", "venue_id", "venue_group_id")
FIRST_NAME = ("first_name", "firstname")
LAST_NAME = ("last_name", "lastname")
EMAIL = ("email",)
PHONE = ("phone_number", "phone")
PHONE_LOCALE = ("phone_number_locale", "phone_numberlocale", "phone_locale")
LANGUAGE = ("preferred_language_code", "preferred_language")
SALUTATION = ("salutation",)
MARKETING_OPTIN = ("marketing_optin", "marketing_opt_in", "venue_group_marketing_opt_in")
MARKETING_OPT_OUT = ("marketing_opt_outts", "marketing_opt_out_ts")  # when the client opted out
OTHER_KEYS = ("country", "is_contact_private", "reservation_sms_opt_in", "reference_code", "loyalty_id",
              "loyalty_tier", "is_vip", "status", "updated", "deleted")
ENTITY_KEYS = (ID_KEYS + FIRST_NAME + LAST_NAME + EMAIL + PHONE + PHONE_LOCALE + LANGUAGE + SALUTATION
               + MARKETING_OPTIN + MARKETING_OPT_OUT + OTHER_KEYS)

# SevenRooms' salutations in Fullwhere's style ("Mr., Ms."); anything else is kept as the guest wrote it.
CIVILITIES = {"mr": "Mr.", "mrs": "Mrs.", "ms": "Ms.", "miss": "Miss", "mx": "Mx.", "dr": "Dr."}


class SevenRoomsSettings(SettingsModel):
    env_prefix, title = "SEVENROOMS_", "SevenRooms"

    auth: str = Field(
        default="token", pattern=r"^(?i:token|hmac)$",
        description="how SevenRooms' push is authenticated (not public, agree it with SevenRooms): `token` = "
        "`?token=<SEVENROOMS_WEBHOOK_SECRET>` in the URL you register; `hmac` = HMAC-SHA256 of the raw body keyed "
        "with `SEVENROOMS_WEBHOOK_SECRET`, in `SEVENROOMS_SIGNATURE_HEADER`")
    webhook_secret: str | None = secret(
        "a long random secret you choose: the URL token (`token` mode) or the HMAC key (`hmac` mode), the default "
        "tenant's (a tenants document gives each tenant its own `webhook_secret`). Unset, every SevenRooms webhook "
        "answers 503. Make a new one when you switch mode")
    signature_header: str = Field(
        default="X-SevenRooms-Signature",
        description="`hmac` mode only: the header carrying the signature (our guess until SevenRooms documents "
        "its scheme)")
    signature_encoding: str = Field(
        default="hex", pattern=r"^(?i:hex|base64)$",
        description="`hmac` mode only: the signature's encoding, `hex` or `base64` (a `sha256=` prefix is accepted); "
        "our guess until SevenRooms documents its scheme")
    client_id: str | None = Field(
        default=None,
        description="SevenRooms API client id (venue group), for the default tenant only; a tenant's account entry "
        "carries its own `client_id`/`client_secret`. With API credentials, each guest's client record is fetched "
        "(language, salutation, marketing consent) and a failed fetch is retried; without them, only the "
        "webhook's fields are imported")
    client_secret: str | None = secret("SevenRooms API client secret, with `SEVENROOMS_CLIENT_ID`")
    api_url: str = Field(
        default="https://api.sevenrooms.com/2_4",
        description="SevenRooms API base (`https://api.eu.sevenrooms.com/2_4` in the EU, "
        "`https://demo.sevenrooms.com/api-ext/2_4` for the demo)")
    fallback_phone_region: str = Field(
        default="US", pattern=r"^(?i:[a-z]{2}|none)$",
        description="region tried last, after the guest's phone locale or country, the tenant's region and "
        "`DEFAULT_PHONE_REGION`, for a number written without its country code (`none`: no fallback). SevenRooms' "
        "reservation carries no venue country, timezone or currency, and its own example writes a New York "
        "number as `212-555-7056`; tried last, it only rescues a number that would otherwise be dropped")
    sms_optin_is_marketing: bool = Field(
        default=False,
        description="set to `true` only if SevenRooms confirms that a reservation's `reservation_sms_opt_in` is "
        "marketing consent; then it fills `smsOptin` (by default it reads as consent to reservation reminders "
        "and is only kept in metadata)")

    reservations_export_path: str = Field(
        default="/reservations/export", pattern=r"^(/[A-Za-z0-9_./-]*|(?i:none))$",
        description="the reservations export the sweep lists by `updated_since`, appended to `SEVENROOMS_API_URL` "
        "(second-hand: SevenRooms' API documentation is gated); `none`: SevenRooms is not swept")
    sweep_minutes: int | None = sweep_minutes_setting("SevenRooms")
    sweep_accounts: str | None = sweep_accounts_setting("SevenRooms", "venue ids (or venue group ids, with "
                                                        "`SEVENROOMS_SWEEP_BY=venue_group_id`)")
    sweep_by: str = Field(
        default="venue_id", pattern=r"^(?i:venue_id|venue_group_id)$",
        description="what the default tenant's `SEVENROOMS_SWEEP_ACCOUNTS` are: `venue_id` or `venue_group_id` (the "
        "export's filter); a tenant's account entry says it with its own `sweep_by`")

    @field_validator("auth", "signature_encoding", "sweep_by")
    @classmethod
    def _lower_case(cls, value: str) -> str:
        return value.lower()

    @field_validator("fallback_phone_region")
    @classmethod
    def _upper_case(cls, value: str) -> str:
        return value.upper()


class Envelope(PayloadModel):
    entity: dict[str, Any]
    entity_type: str = Field(min_length=1)
    event_type: str = Field(min_length=1)
    updates: Any = None  # an array of {field, previous} [S] (one receiver says object): not used


class SevenRoomsConnector(Connector, platform="sevenrooms", id_field="sevenroomsId",
                          settings=SevenRoomsSettings, secret="webhook_secret"):

    # -- authentication ----------------------------------------------------------------------------
    def verify(self, request: WebhookRequest, tenant: Tenant | None = None) -> None:
        # Each venue group's webhooks are set up with their own secret: a named tenant's is its webhook_secret.
        own: SevenRoomsSettings = self.platform_settings()
        if own.auth == "token":
            return self.query_token(request, TOKEN_PARAMETER, tenant)
        secret = self.webhook_secret(tenant)
        signature = request.required_header(own.signature_header)
        if not _signature_matches(secret, request.body, signature, own.signature_encoding):
            raise unauthorized("SevenRooms signature does not match")

    # -- parsing -----------------------------------------------------------------------------------
    def parse(self, request: WebhookRequest) -> ParsedWebhook:
        document = load_json(request.body)
        if isinstance(document, dict):
            items = [("SevenRooms webhook", document)]
        elif isinstance(document, list):
            items = [(f"SevenRooms webhook item {index}", item) for index, item in enumerate(document)]
        else:
            raise malformed("SevenRooms webhook: body must be an object or an array of objects")
        parsed = ParsedWebhook(events=[])
        for what, item in items:
            envelope = validate(Envelope, item, what)
            event_type = envelope.event_type.strip().lower()
            kind = _entity_kind(envelope.entity_type)
            # An entity whose own `deleted` timestamp is set is deleted, whatever the event says.
            deleted = event_type == "deleted" or bool(envelope.entity.get("deleted"))
            if kind is None or deleted or event_type not in IMPORTED_EVENTS:
                # Other entity types, deletions and unknown event types: acknowledged, counted.
                entity_label = kind or clean_text(envelope.entity_type, 40) or "?"
                parsed.ignored.append(f"{entity_label}.{'deleted' if deleted else event_type[:40]}")
                parsed.ignored_accounts.add(_account(envelope.entity))
                continue
            parsed.events.append(_event(kind, event_type, envelope.entity, what))
        return parsed

    # -- the client fetch --------------------------------------------------------------------------
    def fetch(self, event: Event, context: Context) -> dict[str, Any] | None:
        data = event.data
        client_id = data.get("client_id")
        if not client_id or not _needs_client(data["entity_type"], data["entity"]):
            return data
        own: SevenRoomsSettings = self.platform_settings()
        credentials = self._api_credentials(context, event.account_id, own)
        if credentials is None:
            return data  # no API access configured: the webhook's fields are all there is
        return {**data, "client": _fetch_client(own.api_url, credentials, client_id, context.deadline)}

    def _api_credentials(self, context: Context, account_id: str | None,
                         own: SevenRoomsSettings) -> tuple[str, str] | None:
        """The account's own ``client_id``/``client_secret`` from the tenants document; for the default tenant,
        else the settings'. A named tenant never uses the settings': when the deployment fetches client records
        (they are set) and its account has none, the event is held until they are added."""
        account = context.credentials(self.name, account_id)
        if account.get("client_id") or account.get("client_secret"):
            client_id, client_secret = account.get("client_id"), account.get("client_secret")
            where = "this account's entry in the tenants document"
        elif not context.tenant.owns_every_account:
            if own.client_id or own.client_secret:
                raise Held("this SevenRooms account has no client_id/client_secret in the tenants document (a "
                           "tenant's guests are never fetched with SEVENROOMS_CLIENT_ID)", "not_configured")
            return None  # the deployment fetches no client records: the webhook's fields are all there is
        else:
            client_id, client_secret = own.client_id, own.client_secret
            where = "SEVENROOMS_CLIENT_ID / SEVENROOMS_CLIENT_SECRET"
        if not client_id and not client_secret:
            return None
        if not client_id or not client_secret:
            raise Held(f"SevenRooms API client_id or client_secret missing ({where})", "not_configured")
        return client_id, client_secret

    def check_credentials(self, account_id: str | None, context: Context) -> str | None:
        own: SevenRoomsSettings = self.platform_settings()
        credentials = self._api_credentials(context, account_id, own)
        if credentials is None:
            raise Held("no SevenRooms API client (optional: without one, the webhook's own fields are imported)",
                       "not_configured")
        _request_token(own.api_url, credentials, context.deadline)
        return "the API client got a token"

    # -- the sweep ---------------------------------------------------------------------------------
    def sweep_accounts(self, tenant: Tenant) -> list[str]:
        # An account whose entry says `"sweep_by": "none"` (a venue group whose venues are swept one by one) is
        # left out; every other one is swept, or skipped with the reason when it has no API client.
        own: SevenRoomsSettings = self.platform_settings()
        if own.reservations_export_path.lower() == "none":
            return []
        accounts = super().sweep_accounts(tenant)
        if tenant.owns_every_account:
            return accounts
        return [account for account in accounts
                if (tenant.credentials(self.name, account).get("sweep_by") or "").lower() != "none"]

    def sweep(self, account_id: str, window: SweepWindow, context: Context) -> Iterator[Event] | None:
        """The reservations updated on a venue (or a venue group) in ``window``, from the reservations export
        [S], as the reservation webhook would have sent them; only with this tenant's own API client."""
        own: SevenRoomsSettings = self.platform_settings()
        if own.reservations_export_path.lower() == "none":
            return None
        return self._sweep(own, account_id, window, context)

    def _sweep(self, own: SevenRoomsSettings, account_id: str, window: SweepWindow,
               context: Context) -> Iterator[Event]:
        credentials = self._api_credentials(context, account_id, own)
        if credentials is None:
            raise Held("this SevenRooms account has no API client_id/client_secret: its reservations cannot be "
                       "listed (the webhook's are still imported)", "not_configured")
        entry = context.credentials(self.name, account_id)
        sweep_by = (entry.get("sweep_by") if not context.tenant.owns_every_account else None) or own.sweep_by
        if sweep_by.lower() not in SWEEP_FILTERS:
            raise Held(f"this SevenRooms account's sweep_by {sweep_by[:20]!r} is none of venue_id, venue_group_id",
                       "not_configured")
        url = f"{own.api_url}{own.reservations_export_path}"
        params = {sweep_by.lower(): account_id, "updated_since": _naive_utc(window.since),
                  "limit": str(EXPORT_PAGE_LIMIT)}

        def read_page(cursor: str | None) -> tuple[list[Any], str | None]:
            page_params = params if cursor is None else {**params, "cursor": cursor}
            data = _export_page(own.api_url, credentials, url, page_params, context.deadline)
            # No `results` is an empty export, as public clients read it [S].
            results = data.get("results", [])
            if not isinstance(results, list):
                raise RetryableError(f"{WHAT} reservations export answered results that are not a list")
            cursor = data.get("cursor")
            return results, cursor if isinstance(cursor, str) else None

        pages = cursor_pages(read_page, f"{WHAT} reservations export", EXPORT_MAX_PAGES)
        for page, results in enumerate(pages):
            for index, reservation in enumerate(results):
                event = _swept_reservation(reservation, window, f"SevenRooms export page {page} item {index}")
                if event is not None:
                    yield event

    # -- mapping -----------------------------------------------------------------------------------
    def map(self, guest: dict[str, Any], event: Event, context: Context) -> CustomerImport:
        entity: dict[str, Any] = guest.get("entity") or {}
        client: dict[str, Any] = guest.get("client") or {}
        is_client = guest.get("entity_type") == "client"
        # The fetched client record is the current profile: it wins over the reservation's copy, so
        # every event of one guest sends the same email/phone pair (Fullwhere's merge key).
        sources = [client, entity]
        client_records = [client, entity] if is_client else [client]
        first_name = _first(sources, FIRST_NAME, clean_text)
        last_name = _first(sources, LAST_NAME, clean_text)
        private = any(source.get("is_contact_private") is True for source in sources)
        # The guest's own signals only (client record first): no venue country, timezone or currency
        # reaches the bridge. The fallback comes after the tenant's and the default region, so it never
        # re-reads a number those accept (docs/platforms.md, SevenRooms, "Phone numbers").
        signals = [_region(source.get(key)) for source in sources for key in (*PHONE_LOCALE, "country")]
        fallback = self.platform_settings().fallback_phone_region
        regions = list(dict.fromkeys([*context.phone_regions(*signals), *([fallback] if fallback != "NONE" else [])]))
        sms = entity.get("reservation_sms_opt_in") if not is_client else None
        metadata = {
            "source": "sevenrooms",
            "sevenroomsVenueId": _text(entity.get("venue_id")),
            "sevenroomsVenueGroupId": _text(entity.get("venue_group_id")) or _text(client.get("venue_group_id")),
            "sevenroomsReservationId": None if is_client else _text(entity.get("id")),
            "sevenroomsReferenceCode": None if is_client else _text(entity.get("reference_code")),
            "sevenroomsReservationStatus": None if is_client else _text(entity.get("status")),
            "sevenroomsLoyaltyId": _first(sources, ("loyalty_id",), _text),
            "sevenroomsLoyaltyTier": _first(sources, ("loyalty_tier",), _text),
            "sevenroomsVip": _flag(_first(sources, ("is_vip",), _bool)),
            "sevenroomsReservationSmsOptIn": _flag(sms if isinstance(sms, bool) else None),
        }
        return CustomerImport(
            firstName=first_name,
            lastName=last_name,
            displayName=display_name(first_name, last_name),
            civility=_first(sources, SALUTATION, _civility),
            language=_first(sources, LANGUAGE, language_code),
            email=None if private else _first(sources, EMAIL, normalise_email),
            phoneNumber=None if private else _first(sources, PHONE, lambda value: normalise_phone(value, *regions)),
            emailOptin=_marketing_consent(client_records),
            # Even as marketing consent, a false may mean "not asked": only a stated opt-in is sent.
            smsOptin=True if self.platform_settings().sms_optin_is_marketing and sms is True else None,
            sevenroomsId=guest.get("client_id"),
            metadata=present(metadata),
        )


def _event(kind: str, event_type: str, raw_entity: dict[str, Any], what: str) -> Event:
    entity = {key: value for key, value in raw_entity.items()
              if key in ENTITY_KEYS and (value is None or isinstance(value, (str, int, float, bool)))}
    entity_id = _text(entity.get("id"))
    # A reservation names its guest in client_id; a client entity is the client (id, else client_id).
    client_id = _text(entity.get("client_id")) if kind == "reservation" else entity_id or _text(entity.get("client_id"))
    key = entity_id or client_id
    if not key:
        raise malformed(f"{what}: entity has no id or client_id")
    return Event(
        event_id=f"{kind}/{key}/{event_type}/{_text(entity.get('updated')) or ''}",
        kind=f"{kind}.{event_type}",
        account_id=_account(entity),
        data={"entity_type": kind, "entity": entity, "client_id": client_id},
        guest_key=f"{kind}:{key}",
    )


def _swept_reservation(reservation: Any, window: SweepWindow, what: str) -> Event | None:
    """The event the webhook sent for ``reservation`` (same id: ``created`` while it is unchanged since its creation,
    else ``updated``, with its ``updated`` time); None for a deleted one, or one updated outside ``window``."""
    if not isinstance(reservation, dict) or reservation.get("deleted"):
        return None
    updated, created = _instant(reservation.get("updated")), _instant(reservation.get("created"))
    # Outside the window: the API's filter is second-hand, so it is applied again. A reservation with no readable
    # time is kept (listing it twice costs no Fullwhere call; missing it would lose a guest).
    if updated is not None and not window.since <= updated < window.until:
        return None
    unchanged = updated is not None and created is not None and abs(updated - created) <= CREATED_MARGIN
    try:
        return _event("reservation", "created" if unchanged else "updated", reservation, what)
    except RejectedRequest:
        return None  # neither id nor client_id: the webhook would have been refused too


def _naive_utc(moment: datetime) -> str:
    """``moment`` as SevenRooms writes its own times: ISO 8601 without a zone, read as UTC [I]."""
    return moment.astimezone(timezone.utc).replace(tzinfo=None, microsecond=0).isoformat()


def _instant(value: object) -> datetime | None:
    """A SevenRooms timestamp (ISO 8601; UTC when it has no zone [I]), or None."""
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace(" ", "T", 1).replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def _export_page(api_url: str, credentials: tuple[str, str], url: str, params: dict[str, str],
                 deadline: Deadline) -> dict[str, Any]:
    """One page of the reservations export: ``{"data": {"results": [...], "cursor": ...}}`` [S]."""
    response = _tokens.authorised(
        (api_url, credentials[0]),
        lambda: _request_token(api_url, credentials, deadline),
        lambda token: send("GET", url, deadline, what=WHAT, headers={"Authorization": token}, params=params),
        refused=f"{WHAT} refused a fresh token (401): check the SevenRooms API credentials",
    )
    return answer_object(response, WHAT, "data")


def _account(entity: dict[str, Any]) -> str | None:
    """Tenant routing: the venue; a client belongs to a venue group and may have no venue."""
    return _text(entity.get("venue_id")) or _text(entity.get("venue_group_id"))


def _entity_kind(entity_type: str) -> str | None:
    lowered = entity_type.lower()
    if "reservation" in lowered:
        return "reservation"
    if "client" in lowered:
        return "client"
    return None


def _needs_client(kind: str, entity: dict[str, Any]) -> bool:
    """A reservation never carries language or salutation; a client entity does when it has either key."""
    if kind == "reservation":
        return True
    return not any(key in entity for key in LANGUAGE + SALUTATION)


def _signature_matches(secret: str, body: bytes, given: str, encoding: str) -> bool:
    given = given.strip()
    if given[:7].lower() == "sha256=":
        given = given[7:]
    # Hex is compared case-insensitively; base64 is case-sensitive.
    return equal(given.lower() if encoding == "hex" else given, _encoded(_digest(secret, body), encoding))


def _digest(secret: str, body: bytes) -> bytes:
    return hmac.new(secret.encode(), body, hashlib.sha256).digest()


def _encoded(digest: bytes, encoding: str) -> str:
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


def _fetch_client(api_url: str, credentials: tuple[str, str], client_id: str, deadline: Deadline) -> dict[str, Any]:
    url = f"{api_url}/clients/{path_segment(client_id, 'SevenRooms client id')}"
    response = _tokens.authorised(
        (api_url, credentials[0]),
        lambda: _request_token(api_url, credentials, deadline),
        lambda token: send("GET", url, deadline, what=WHAT, headers={"Authorization": token}),
        refused=f"{WHAT} refused a fresh token (401): check the SevenRooms API credentials",
    )
    return answer_object(response, WHAT, "data")


def _request_token(api_url: str, credentials: tuple[str, str], deadline: Deadline) -> tuple[str, float]:
    what = "SevenRooms auth endpoint"
    response = send("POST", f"{api_url}/auth", deadline, what=what,
                    data={"client_id": credentials[0], "client_secret": credentials[1]})
    # Not OAuth's shape: {"data": {"token", "token_expiration_datetime"}}.
    data = answer_object(response, what, "data")
    token = data.get("token")
    if not isinstance(token, str) or not token:
        raise RetryableError(f"{what} answered without a token")
    return token, _lifetime(data.get("token_expiration_datetime"))


def _lifetime(expiration: object) -> float:
    """Seconds until ``token_expiration_datetime`` (format unpublished: ISO 8601, UTC when naive), at most 24 h."""
    seconds = float(TOKEN_LIFETIME_SECONDS)
    if isinstance(expiration, str):
        try:
            expires = datetime.fromisoformat(expiration.strip().replace(" ", "T", 1))
        except ValueError:
            return seconds
        if expires.tzinfo is None:
            expires = expires.replace(tzinfo=timezone.utc)
        left = (expires - datetime.now(timezone.utc)).total_seconds()
        # Already past: the zone was guessed wrong. Keep the documented 24 h; a 401 renews it anyway.
        if left > 0:
            seconds = min(seconds, left)
    return seconds


# Kept per (API URL, client id) until 5 minutes before they expire.
_tokens = TokenCache()


def _first(sources: list[dict[str, Any]], keys: tuple[str, ...], convert) -> Any:
    """The first usable value of ``keys`` across ``sources``, in order, after ``convert``."""
    for source in sources:
        for key in keys:
            value = convert(source.get(key))
            if value is not None:
                return value
    return None


def _marketing_consent(records: list[dict[str, Any]]) -> bool | None:
    """``True`` when the client opted in; ``False`` only for a recorded opt-out; else not stated (None).

    ``marketing_optin`` is false for a client who was never asked as much as for one who refused, and
    Fullwhere only fills null fields: a ``false`` from "never asked" would block a later opt-in for good.
    """
    for record in records:
        value = _first([record], MARKETING_OPTIN, _bool)
        if value is True:
            return True
        if value is False:
            return False if any(_text(record.get(key)) for key in MARKETING_OPT_OUT) else None
    return None


def _text(value: object) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return str(value)
    return clean_text(value)


def _bool(value: object) -> bool | None:
    return value if isinstance(value, bool) else None


def _flag(value: bool | None) -> str | None:
    return None if value is None else str(value).lower()


def _civility(value: object) -> str | None:
    text = clean_text(value, max_length=20)
    if text is None:
        return None
    return CIVILITIES.get(text.rstrip(".").lower(), text)


def _region(value: object) -> str | None:
    """A region code from ``US``, ``en-US`` or ``en_US``; None for anything else (e.g. a country name)."""
    text = clean_text(value, max_length=10)
    if not text:
        return None
    region = text.replace("_", "-").split("-")[-1]
    return region.upper() if len(region) == 2 and region.isalpha() else None
