"""Oracle OPERA Cloud (OHIP): guest profiles pulled on a schedule, never pushed.

OPERA Cloud sends no webhook, and a Lambda cannot hold the WebSocket its events stream over: the scheduled
``oracle_pull`` function (:mod:`chalicelib.handlers.scheduled_pulls`) dequeues business events with
:func:`dequeue_events`, and :meth:`OracleOperaConnector.fetch` reads each event's profile from the CRM API.
The calls, the token and what is assumed: docs/platforms.md, "Oracle OPERA Cloud".
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import Field

from chalicelib.connectors.base import Connector, Context, Event, ParsedWebhook, WebhookRequest
from chalicelib.connectors.shared import answer_object, path_segment, present
from chalicelib.core.errors import Held, PermanentError, unauthorized
from chalicelib.core.normalise import clean_text, display_name, language_code, normalise_email, normalise_phone
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.domain.tenants import lends_settings
from chalicelib.infra.http import Deadline, send
from chalicelib.infra.settings import SettingsModel, secret
from chalicelib.infra.tokens import TokenCache, request_client_credentials

WHAT_EVENTS = "OHIP business events API"
WHAT_PROFILE = "OPERA CRM API"
WHAT_TOKEN = "OHIP token endpoint"
MAX_DEQUEUE = 20  # "The maximum allowable limit for this API is 20" (int.json)
NOT_PUSHED = ("OPERA Cloud events are pulled from OHIP by the scheduled oracle_pull function, "
              "not pushed: this URL accepts nothing")

CIVILITIES = {"mr": "Mr.", "mrs": "Mrs.", "ms": "Ms.", "miss": "Miss", "dr": "Dr."}
NON_GUEST_PROFILE_TYPES = {"agent", "company", "group", "source", "hotel", "vendor", "contact", "purge",
                           "businessheader", "billingaccount", "activity", "potential", "account"}
IGNORED_NAME_TYPES = {"incognito", "alternate", "phonetic", "external"}
NON_VOICE_PHONES = {"fax", "pager", "telex", "data"}


class OracleSettings(SettingsModel):
    """The default tenant's OHIP access (a tenants document may give it per hotel) and the pull's bounds."""

    env_prefix, title = "ORACLE_", "Oracle OPERA Cloud"

    gateway_url: str | None = Field(default=None, description=(
        "OPERA Cloud's OHIP gateway (`https://<host>`, without a path); the scheduled `oracle_pull` function "
        "dequeues business events there every 5 minutes (OPERA pushes no webhook)"))
    client_id: str | None = Field(default=None, description=(
        "the OHIP integration's client id (token: `POST /oauth/v1/tokens`, Basic auth)"))
    client_secret: str | None = secret("the OHIP integration's client secret (Basic auth of token requests)")
    app_key: str | None = secret("the OHIP application key (`x-app-key` header on every call)")
    enterprise_id: str | None = Field(default=None, description=(
        "sent as the `enterpriseId` header of token requests when set (client-credentials environments)"))
    scope: str = Field(default="urn:opc:hgbu:ws:__myscopes__", description=(
        "scope of the client-credentials token (value from integrators' code, not Oracle's reference)"))
    external_system_code: str | None = Field(default=None, description=(
        "the external system whose business events are dequeued (OPERA Cloud → Interfaces → External Systems)"))
    hotel_ids: str | None = Field(default=None, description=(
        "comma-separated hotel codes polled for the default tenant (with a tenants document: its `oracle` "
        "accounts, each with its own `client_id`, `client_secret`, `app_key`, never the settings above, and "
        "optional `gateway_url`, `enterprise_id`, `external_system_code` overriding them)"))
    profile_events: str = Field(default="NEW PROFILE,UPDATE PROFILE", description=(
        "business event `actionType`s whose profile is fetched and imported; others are ignored"))
    pull_max_events: int = Field(default=200, ge=1, le=10000, description=(
        "events handled per run, all hotels together"))
    pull_budget_seconds: float = Field(default=240.0, gt=0, le=900, description=(
        "time one run may spend, capped by the Lambda's remaining time (raise `oracle_pull`'s "
        "`lambda_timeout` to use it)"))
    email_optin_flag: str = Field(default="optInEmail", description=(
        "the `privacyInfo` flag read as email marketing consent (`allowEmail` = false always means no)"))
    sms_optin_flag: str = Field(default="optInSms", description=(
        "the `privacyInfo` flag read as SMS marketing consent (`allowSMS` = false always means no)"))
    relay_email_domains: str = Field(
        default="guest.booking.com,m.expediapartnercentral.com,agoda-messaging.com",
        description="OTA relay email domains never imported (comma-separated)")


# What a named tenant's hotel must give itself: the OHIP access proper.
OWN_CREDENTIALS = ("client_id", "client_secret", "app_key")


@dataclass(frozen=True)
class OhipCredentials:
    """One hotel's OHIP access: per-hotel values from the tenants document, else the settings."""

    gateway_url: str | None
    client_id: str | None
    client_secret: str | None
    app_key: str | None
    enterprise_id: str | None
    external_system_code: str | None
    scope: str
    # A named tenant's hotel: its OHIP access comes from the tenants document only.
    own_only: bool = False

    @classmethod
    def resolve(cls, settings: OracleSettings, account: Mapping[str, str] | None) -> "OhipCredentials":
        """``account``: the hotel's entry of the tenants document (``credentials_for``). A named tenant's hotel takes
        its OHIP client and application key from it alone, never from the settings (the deployment's access,
        which may open other chains' hotels); where its gateway and external system are may come from either."""
        lent = account is None or lends_settings(account)
        account = account or {}

        def pick(key: str) -> str | None:
            value = account.get(key) or (getattr(settings, key) if lent or key not in OWN_CREDENTIALS else None)
            return value.strip() if isinstance(value, str) and value.strip() else None

        gateway = pick("gateway_url")
        return cls(
            gateway_url=gateway.rstrip("/") if gateway else None,
            client_id=pick("client_id"),
            client_secret=pick("client_secret"),
            app_key=pick("app_key"),
            enterprise_id=pick("enterprise_id"),
            external_system_code=pick("external_system_code"),
            scope=account.get("scope") or settings.scope,
            own_only=not lent,
        )

    def missing(self, pulling: bool = False) -> list[str]:
        """Names of the settings still needed (never their values)."""
        needed = ["gateway_url", "client_id", "client_secret", "app_key"] + (["external_system_code"] if pulling else [])
        return [f"the hotel's {name} in the tenants document" if self.own_only and name in OWN_CREDENTIALS
                else OracleSettings.variable(name) for name in needed if not getattr(self, name)]


class OracleOperaConnector(Connector, platform="oracle", id_field="oracleId",
                           settings=OracleSettings, secret="client_secret"):

    def verify(self, request: WebhookRequest) -> None:
        raise unauthorized(NOT_PUSHED)

    def parse(self, request: WebhookRequest) -> ParsedWebhook:
        raise unauthorized(NOT_PUSHED)  # never reached: verify refuses every request

    def fetch(self, event: Event, context: Context) -> dict[str, Any] | None:
        credentials = OhipCredentials.resolve(self.platform_settings(), context.credentials(self.name, event.account_id))
        missing = credentials.missing()
        if missing:
            raise Held(f"OPERA Cloud is not configured for this hotel ({', '.join(missing)})", "not_configured")
        profile = path_segment(event.data.get("profile_id"), "OPERA profile id")  # primaryKey of a business event
        url = f"{credentials.gateway_url}/crm/v1/profiles/{profile}"
        response = ohip_request("GET", url, credentials, event.data["hotel_id"], context.deadline, WHAT_PROFILE)
        if response.status_code == 204:
            raise PermanentError(f"{WHAT_PROFILE} has no profile with this id (204)")
        details, id_list = profile_parts(answer_object(response, WHAT_PROFILE))
        if details is None:
            raise PermanentError(f"{WHAT_PROFILE} answered a profile without profileDetails")
        if _lower(details.get("profileType")) in NON_GUEST_PROFILE_TYPES:
            return None  # a company, travel agent, ... profile: not a guest
        customer = details.get("customer") if isinstance(details.get("customer"), dict) else {}
        anonymization = customer.get("anonymization") if isinstance(customer.get("anonymization"), dict) else {}
        if _lower(anonymization.get("anonymizationStatus")) in {"requested", "anonymized"}:
            return None  # the guest asked to be forgotten: never copy them into a CRM
        return {"profileDetails": details, "profileIdList": id_list}

    def check_credentials(self, account_id: str | None, context: Context) -> str | None:
        # A token only: the business events call is a destructive dequeue, never made to check anything.
        credentials = OhipCredentials.resolve(self.platform_settings(), context.credentials(self.name, account_id))
        missing = credentials.missing(pulling=True)
        if missing:
            raise Held(f"OPERA Cloud is not configured for this hotel ({', '.join(missing)})", "not_configured")
        request_client_credentials(
            f"{credentials.gateway_url}/oauth/v1/tokens", context.deadline, what=WHAT_TOKEN,
            form={"grant_type": "client_credentials", "scope": credentials.scope}, headers=_token_headers(credentials))
        return "the OHIP client and application key got a token"

    def map(self, guest: dict[str, Any], event: Event, context: Context) -> CustomerImport:
        settings: OracleSettings = self.platform_settings()
        details = guest.get("profileDetails") if isinstance(guest.get("profileDetails"), dict) else {}
        customer = details.get("customer") if isinstance(details.get("customer"), dict) else {}
        name = primary_name(customer.get("personName"))
        first_name = clean_text(name.get("givenName"))
        last_name = clean_text(name.get("surname"))
        nationality = _country(customer.get("nationality"))
        citizen = customer.get("citizenCountry") if isinstance(customer.get("citizenCountry"), dict) else {}
        privacy = details.get("privacyInfo")
        metadata = {
            "source": "oracle",
            "oracleHotelId": event.account_id,
            "oracleEventType": clean_text(event.kind),
            "oracleNationality": nationality,
        }
        return CustomerImport(
            firstName=first_name,
            lastName=last_name,
            displayName=display_name(first_name, last_name),
            civility=civility(name.get("namePrefix")) or civility(name.get("nameTitle")),
            language=language_code(customer.get("language")) or language_code(name.get("language")),
            email=primary_email(details, _domains(settings.relay_email_domains)),
            # The guest's address country first (where their phone most likely comes from), then nationality
            # and citizenship; the profile names no hotel country.
            phoneNumber=primary_phone(details, *context.phone_regions(
                address_country(details), nationality, _country(citizen.get("code")))),
            emailOptin=consent(privacy, settings.email_optin_flag, "allowEmail"),
            smsOptin=consent(privacy, settings.sms_optin_flag, "allowSMS"),
            oracleId=profile_id(guest.get("profileIdList")) or clean_text(event.data.get("profile_id")),
            metadata=present(metadata),
        )


# -- the polling API ------------------------------------------------------------------------------

def dequeue_events(credentials: OhipCredentials, hotel_id: str, limit: int, deadline: Deadline) -> list[dict[str, str]]:
    """Dequeue up to ``limit`` (≤ 20) business events of one hotel, reduced to their headers.

    OPERA removes them from its queue as it answers: the caller must keep them safe from here on.
    """
    url = (f"{credentials.gateway_url}/int/v1/externalSystem/"
           f"{path_segment(credentials.external_system_code, 'OPERA external system code')}"
           f"/hotels/{path_segment(hotel_id, 'OPERA hotel id')}/businessEvents")
    response = ohip_request("GET", url, credentials, hotel_id, deadline, WHAT_EVENTS,
                            params={"limit": max(1, min(MAX_DEQUEUE, limit))})
    if response.status_code == 204:
        return []
    items = answer_object(response, WHAT_EVENTS).get("businessEventData") or []
    if not isinstance(items, list):
        raise PermanentError(f"{WHAT_EVENTS} answered businessEventData that is not a list")
    return [pulled_event(item, hotel_id) for item in items if isinstance(item, dict)]


def pulled_event(item: dict[str, Any], hotel_id: str) -> dict[str, str]:
    """The header of one dequeued business event, as the position store keeps it (ids only)."""
    business_event = item.get("businessEvent") if isinstance(item.get("businessEvent"), dict) else {}
    header = business_event.get("header") if isinstance(business_event.get("header"), dict) else {}
    event_id_block = item.get("businessEventId") if isinstance(item.get("businessEventId"), dict) else {}
    module = _text(header.get("moduleName"))
    event_id = _text(event_id_block.get("id"))
    if not event_id:
        action_id = _text(header.get("actionId"))
        # actionId is unique within a module only; without either, a hash of the header stands in.
        event_id = (f"{module}:{action_id}" if action_id else
                    "h:" + hashlib.sha256(json.dumps(header, sort_keys=True, default=str).encode()).hexdigest()[:24])
    return {
        "id": event_id,
        "action": (_text(header.get("actionType")) or "").upper(),
        "module": module or "",
        "key": _text(header.get("primaryKey")) or "",
        "hotel": _text(header.get("hotelId")) or hotel_id,
        "at": _text(header.get("createdDateTime")) or "",
    }


def profile_events(settings: OracleSettings) -> set[str]:
    return {name.strip().upper() for name in settings.profile_events.split(",") if name.strip()}


def pipeline_event(pulled: dict[str, str], hotel_id: str) -> Event:
    """The pipeline's event for a dequeued profile event (account = the polled hotel)."""
    return Event(
        event_id=f"{hotel_id}/{pulled['id']}",
        kind=pulled["action"],
        account_id=hotel_id,
        data={"profile_id": pulled["key"], "hotel_id": hotel_id, "business_event_id": pulled["id"]},
        guest_key=f"profile:{pulled['key']}",
    )


# -- OHIP calls -----------------------------------------------------------------------------------

def ohip_request(method: str, url: str, credentials: OhipCredentials, hotel_id: str, deadline: Deadline,
                 what: str, **kwargs: Any) -> httpx.Response:
    """One OHIP call with a cached token, renewed once if OHIP answers 401."""
    key = (credentials.gateway_url, credentials.client_id, credentials.app_key, credentials.enterprise_id,
           credentials.scope)
    return _tokens.authorised(
        key,
        lambda: request_client_credentials(
            f"{credentials.gateway_url}/oauth/v1/tokens", deadline, what=WHAT_TOKEN,
            form={"grant_type": "client_credentials", "scope": credentials.scope}, headers=_token_headers(credentials)),
        lambda token: send(method, url, deadline, what=what, headers={
            "authorization": f"Bearer {token}",
            "x-app-key": credentials.app_key or "",
            "x-hotelid": hotel_id,
            "Accept": "application/json",
        }, **kwargs),
        refused=f"{what} refused a fresh token (401): check the application's access to this hotel",
    )


def _token_headers(credentials: OhipCredentials) -> dict[str, str]:
    basic = base64.b64encode(f"{credentials.client_id}:{credentials.client_secret}".encode()).decode()
    headers = {"Authorization": f"Basic {basic}", "x-app-key": credentials.app_key or ""}
    if credentials.enterprise_id:
        headers["enterpriseId"] = credentials.enterprise_id
    return headers


# OHIP tokens last an hour: keep each until 5 minutes before it expires.
_tokens = TokenCache(margin_seconds=300)


# -- mapping helpers ------------------------------------------------------------------------------

def profile_parts(body: dict[str, Any]) -> tuple[dict[str, Any] | None, list[Any]]:
    """``(profileDetails, profileIdList)`` from the schema's shape, or from the spec example's
    ``{"profiles": {"profileInfo": [{"profile": …, "profileIdList": …}]}}``."""
    if isinstance(body.get("profileDetails"), dict):
        return body["profileDetails"], _list(body.get("profileIdList"))
    profiles = body.get("profiles") if isinstance(body.get("profiles"), dict) else {}
    info = next((item for item in _list(profiles.get("profileInfo")) if isinstance(item, dict)), None)
    if info and isinstance(info.get("profile"), dict):
        return info["profile"], _list(info.get("profileIdList"))
    return None, []


def primary_name(names: Any) -> dict[str, Any]:
    """The ``Primary`` personName; else the first of another or no type. Never an incognito, alternate,
    phonetic or external name."""
    candidates = [name for name in _list(names) if isinstance(name, dict)]
    for name in candidates:
        if _lower(name.get("nameType")) == "primary":
            return name
    return next((name for name in candidates if _lower(name.get("nameType")) not in IGNORED_NAME_TYPES), {})


def civility(value: Any) -> str | None:
    text = clean_text(value, max_length=20)
    return CIVILITIES.get(text.lower().rstrip(".")) if text else None


def primary_email(details: dict[str, Any], relay_domains: set[str]) -> str | None:
    """The primary email (else the first by display order) that is valid and not an OTA relay."""
    emails = details.get("emails") if isinstance(details.get("emails"), dict) else {}
    entries = [info.get("email") for info in _list(emails.get("emailInfo"))
               if isinstance(info, dict) and isinstance(info.get("email"), dict)]
    for entry in _by_preference(entries):
        email = normalise_email(entry.get("emailAddress"))
        if email and not _is_relay(email, relay_domains):
            return email
    return None


def primary_phone(details: dict[str, Any], *regions: str | None) -> str | None:
    """The primary voice number (else mobiles first, then by display order), in E.164."""
    phones = details.get("telephones") if isinstance(details.get("telephones"), dict) else {}
    entries = [info.get("telephone") for info in _list(phones.get("telephoneInfo"))
               if isinstance(info, dict) and isinstance(info.get("telephone"), dict)]
    voice = [entry for entry in entries if _lower(entry.get("phoneTechType")) not in NON_VOICE_PHONES]
    for entry in _by_preference(voice, prefer_mobile=True):
        phone = normalise_phone(entry.get("phoneNumber"), *regions)
        if phone:
            return phone
    return None


def address_country(details: dict[str, Any]) -> str | None:
    """``country.code`` of the primary address (else the first that has one), e.g. ``US``."""
    addresses = details.get("addresses") if isinstance(details.get("addresses"), dict) else {}
    entries = [info.get("address") for info in _list(addresses.get("addressInfo"))
               if isinstance(info, dict) and isinstance(info.get("address"), dict)]
    entries.sort(key=lambda entry: entry.get("primaryInd") is not True)  # stable: primary first
    for entry in entries:
        country = entry.get("country") if isinstance(entry.get("country"), dict) else {}
        code = _country(country.get("code"))
        if code:
            return code
    return None


def consent(privacy: Any, flag: str, allow_flag: str) -> bool | None:
    """Marketing consent from ``privacyInfo``: the opt-in flag; a channel the guest does not allow at
    all (``allowEmail``/``allowSMS`` false) is a refusal; neither stated → None (not a guessed false)."""
    if not isinstance(privacy, dict):
        return None
    if privacy.get(allow_flag) is False:
        return False
    value = privacy.get(flag)
    return value if isinstance(value, bool) else None


def profile_id(id_list: Any) -> str | None:
    """The OPERA profile id from ``profileIdList`` (the entry of type ``Profile``)."""
    for entry in _list(id_list):
        if isinstance(entry, dict) and _lower(entry.get("type")) == "profile":
            return clean_text(_text(entry.get("id")))
    return None


def _by_preference(entries: list[dict[str, Any]], prefer_mobile: bool = False) -> list[dict[str, Any]]:
    def rank(item: tuple[int, dict[str, Any]]) -> tuple:
        position, entry = item
        mobile = "mobile" in {_lower(entry.get("phoneUseType")), _lower(entry.get("phoneTechType"))}
        order = entry.get("orderSequence")
        return (entry.get("primaryInd") is not True, prefer_mobile and not mobile,
                order if isinstance(order, (int, float)) and order >= 0 else float("inf"), position)

    return [entry for _, entry in sorted(enumerate(entries), key=rank)]


def _is_relay(email: str, relay_domains: set[str]) -> bool:
    domain = email.rpartition("@")[2]
    return any(domain == relay or domain.endswith("." + relay) for relay in relay_domains)


def _domains(setting: str) -> set[str]:
    return {domain.strip().lower().lstrip("@") for domain in setting.split(",") if domain.strip()}


def _country(value: Any) -> str | None:
    text = clean_text(value, max_length=20)
    return text.upper() if text and len(text) == 2 and text.isalpha() else None


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _lower(value: Any) -> str:
    return value.strip().lower() if isinstance(value, str) else ""


def _text(value: Any) -> str | None:
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    return text or None
