"""Meta (Facebook/Instagram) Lead Ads: ``leadgen`` webhooks of a Page, each lead read from the Graph API.

Meta's webhook carries ids only, so every lead is fetched with the Page's token; a lead gives no stable
person id, so it is imported only with an email or a phone (Fullwhere merges on those). Handshake,
signature, field matching, consent and identity: docs/platforms.md (Meta Lead Ads).
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import Field, field_validator

from chalicelib.connectors.base import Connector, Context, Event, ParsedWebhook, SweepWindow, WebhookRequest
from chalicelib.connectors.payload import PayloadModel, load_json, validate
from chalicelib.connectors.shared import answer_object, cursor_pages, path_segment, present
from chalicelib.core.errors import Held, RetryableError, unauthorized
from chalicelib.core.normalise import clean_text, display_name, normalise_email, normalise_phone
from chalicelib.core.signatures import equal, hex_signature_matches, hmac_sha256_hex
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.infra.http import json_object, parse_retry_after, raise_for_status, send
from chalicelib.infra.settings import SettingsModel, secret, sweep_accounts_setting, sweep_minutes_setting

WHAT = "Meta Graph API"
SIGNATURE_HEADER = "X-Hub-Signature-256"
SIGNATURE_PREFIX = "sha256="
LEADGEN = "leadgen"
# Lead-level fields only: ad fields (ad_id, campaign_id) need the ads_management permission, and the
# webhook already carries the ad and form ids.
LEAD_FIELDS = "id,created_time,form_id,field_data,custom_disclaimer_responses"
# Graph error codes Meta's "Handling Errors" page calls temporary (downtime, throttling) [vendor docs],
# plus the Page (32) and API (613) rate limits, and the Business Use Case rate limits a Page token is subject to
# (80000-80014 on Meta's "Rate Limits" page: 80001 Pages, 80005 LeadGen).
TRANSIENT_GRAPH_CODES = frozenset({1, 2, 4, 17, 32, 341, 613, *range(80000, 80015)})
# Graph error codes of a Page access token that is missing, invalid, expired or revoked (same page: 102 API
# session, 190 access token; 104 "an access token is required"), or that lacks a permission (10, 200-299),
# which Graph answers as HTTP 400: the token's fault, not the lead's, so held until the token is replaced.
CREDENTIAL_GRAPH_CODES = frozenset({10, 102, 104, 190, *range(200, 300)})

# field_data keys, normalised by _key(), in order of preference for each standard key. Meta's own
# standard key comes first; then English, French and Spanish spellings of custom questions.
ALIASES: dict[str, tuple[str, ...]] = {
    "email": ("email", "e_mail", "email_address", "mail", "adresse_email", "adresse_e_mail", "adresse_mail",
              "courriel", "correo", "correo_electronico", "work_email"),
    "phone_number": ("phone_number", "phone", "telephone", "tel", "mobile", "mobile_phone", "cell_phone",
                     "numero_de_telephone", "telephone_portable", "portable", "telefono", "numero_de_telefono",
                     "movil", "celular", "work_phone_number"),
    "first_name": ("first_name", "firstname", "given_name", "prenom", "nombre"),
    "last_name": ("last_name", "lastname", "surname", "family_name", "nom", "nom_de_famille", "apellido",
                  "apellidos"),
    "full_name": ("full_name", "fullname", "name", "nom_complet", "nom_et_prenom", "prenom_et_nom",
                  "nombre_completo", "nombre_y_apellido", "nombre_y_apellidos"),
    "company_name": ("company_name", "company", "entreprise", "societe", "nom_de_l_entreprise", "empresa"),
}
CHECKED = {"1": True, "true": True, "yes": True, "": False, "0": False, "false": False, "no": False}
# The keys each JSON setting may use: Meta's standard field keys, and the opt-ins a checkbox can state.
JSON_SETTING_KEYS = {"field_aliases": tuple(ALIASES), "consent_checkboxes": ("emailOptin", "smsOptin")}
# A lead made by Meta's Lead Ads Testing Tool: every answer is a placeholder such as
# "<test lead: dummy data for FULL_NAME>" and the email is Meta's own. Seen in such leads, not documented by
# Meta (docs/platforms.md, Meta Lead Ads): matched loosely on case and spaces.
TEST_LEAD_PLACEHOLDER = re.compile(r"^\s*<\s*test lead\s*:\s*dummy data for\b[^>]*>\s*$", re.IGNORECASE)
TEST_LEAD_EMAILS = frozenset({"test@fb.com", "test@meta.com"})
TEST_LEAD = "test_lead"
# Sweeps: a Page's lead forms, then each form's leads filtered on time_created (docs/platforms.md, Meta Lead Ads,
# "Sweep"). Graph's page size for both lists, and how many pages one list may take before it is a loop.
SWEEP_PAGE_SIZE = 100
SWEEP_MAX_PAGES = 500


class MetaSettings(SettingsModel):
    env_prefix, title = "META_", "Meta Lead Ads"

    verify_token: str | None = secret(
        "a long random string you choose and type in the Verify Token field of the App Dashboard's Webhooks; "
        "Meta's `GET` handshake must present it")
    app_secret: str | None = secret(
        "the Meta app's App Secret: checks `X-Hub-Signature-256` on every webhook, and signs each Graph call "
        "(`appsecret_proof`)")
    page_access_token: str | None = secret(
        "a long-lived Page access token (`leads_retrieval` and the other permissions in docs/platforms.md), for "
        "the default tenant's Pages; with a tenants document, each Page's `page_access_token` is used instead")
    graph_url: str = Field(default="https://graph.facebook.com/v25.0",
                           description="Graph API base with its pinned version (v25.0 is supported until July 2028)")
    field_aliases: dict[str, list[str]] | None = Field(
        default=None, description="JSON: extra lead-form keys to read as a standard one, tried before the built-in "
        'aliases, e.g. `{"phone_number": ["numero_whatsapp"]}` (keys: `email`, `phone_number`, `first_name`, '
        "`last_name`, `full_name`, `company_name`)")
    consent_checkboxes: dict[str, list[str]] | None = Field(
        default=None, description="JSON: which custom disclaimer checkboxes state marketing consent, e.g. "
        '`{"emailOptin": ["newsletter"], "smsOptin": ["sms"]}`; unset, no opt-in is imported')
    import_test_leads: bool = Field(
        default=False, description="import the leads of Meta's Lead Ads Testing Tool (placeholder answers, "
        "`test@fb.com`, `test@meta.com`) for the default tenant, e.g. for a trial account; off, they are ignored "
        "(`test_lead`). With a tenants document, each tenant's `import_test_leads` applies instead")
    sweep_minutes: int | None = sweep_minutes_setting("Meta Lead Ads")
    sweep_accounts: str | None = sweep_accounts_setting("Meta Lead Ads", "Page ids (read with "
                                                        "`META_PAGE_ACCESS_TOKEN`)")

    @field_validator("field_aliases", "consent_checkboxes", mode="before")
    @classmethod
    def _json_object(cls, value: object, info) -> object:
        allowed = JSON_SETTING_KEYS[info.field_name]
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"must be a JSON object ({exc.msg})") from None
        if isinstance(value, dict) and not set(value) <= set(allowed):
            raise ValueError(f"keys must be among {', '.join(allowed)}")
        return value


class Notification(PayloadModel):
    object: str


class Change(PayloadModel):
    field: str
    value: Any = None


class Entry(PayloadModel):
    id: str | None = None
    changes: list[Change] = []


class PageNotification(Notification):
    entry: list[Entry]


class LeadgenValue(PayloadModel):
    leadgen_id: str | None = None
    page_id: str | None = None
    form_id: str | None = None
    ad_id: str | None = None
    adgroup_id: str | None = None


class MetaLeadAdsConnector(Connector, platform="meta", id_field="metaId", settings=MetaSettings, secret="app_secret"):

    def handshake(self, request: WebhookRequest) -> tuple[int, str, str]:
        own: MetaSettings = self.platform_settings()
        token_ok = equal(request.query.get("hub.verify_token"), own.verify_token)
        if request.query.get("hub.mode") != "subscribe" or not token_ok:
            return _forbidden("hub.mode must be subscribe and hub.verify_token must match META_VERIFY_TOKEN")
        challenge = request.query.get("hub.challenge")
        if not challenge:
            return _forbidden("hub.challenge is missing")
        return 200, challenge, "text/plain"

    def verify(self, request: WebhookRequest) -> None:
        secret = self.webhook_secret()
        header = request.required_header(SIGNATURE_HEADER).strip()
        if not header.startswith(SIGNATURE_PREFIX):
            raise unauthorized(f"{SIGNATURE_HEADER} must be {SIGNATURE_PREFIX}<hex>")
        if not hex_signature_matches(secret, request.body, header[len(SIGNATURE_PREFIX):]):
            raise unauthorized("Meta signature does not match")

    def parse(self, request: WebhookRequest) -> ParsedWebhook:
        document = load_json(request.body)
        subscribed_object = validate(Notification, document, "Meta webhook").object
        if subscribed_object != "page":
            # Another object the app subscribed to (instagram, user, permissions, ...): no lead in it.
            return ParsedWebhook(events=[], ignored=[subscribed_object[:40]])
        notification = validate(PageNotification, document, "Meta webhook")
        events: list[Event] = []
        ignored: list[str] = []
        for entry in notification.entry:
            for change in entry.changes:
                if change.field != LEADGEN:
                    ignored.append(f"page:{change.field}")
                    continue
                value = validate(LeadgenValue, change.value, "Meta leadgen change")
                if not value.leadgen_id:
                    ignored.append("page:leadgen:no-leadgen_id")
                    continue
                events.append(Event(
                    event_id=value.leadgen_id,
                    kind=LEADGEN,
                    account_id=value.page_id or entry.id,
                    data=value.model_dump(exclude_none=True),
                    guest_key=f"lead:{value.leadgen_id}",
                ))
            if not entry.changes:
                ignored.append("page:no-changes")  # e.g. Messenger's entry[].messaging
        return ParsedWebhook(events=events, ignored=ignored)

    def fetch(self, event: Event, context: Context) -> dict[str, Any] | str | None:
        """The lead, or ``"test_lead"`` (the reason it is ignored) for a testing-tool lead nobody opted in to."""
        own: MetaSettings = self.platform_settings()
        url = f"{own.graph_url}/{path_segment(event.data.get('leadgen_id'), 'Meta leadgen_id')}"
        token = self._page_token(event, context, own)
        # The token travels in the Authorization header, which Graph accepts, so no URL carries it;
        # appsecret_proof has no header form and stays a parameter (docs/platforms.md, Meta Lead Ads).
        params = {"fields": LEAD_FIELDS}
        if own.app_secret:
            params["appsecret_proof"] = hmac_sha256_hex(own.app_secret, token.encode())
        response = send("GET", url, context.deadline, what=WHAT, params=params,
                        headers={"Authorization": f"Bearer {token}"})
        _raise_for_graph_error(response)
        lead = answer_object(response, WHAT)
        if not _imports_test_leads(context, own) and is_test_lead(lead):
            # Restaurants check their setup with the testing tool: its leads would all merge into one
            # placeholder customer (test@fb.com) shared by every restaurant.
            return TEST_LEAD
        return lead

    def _page_token(self, event: Event, context: Context, own: MetaSettings) -> str:
        token = context.credentials(self.name, event.account_id).get("page_access_token")
        if not token and context.tenant.owns_every_account:
            token = own.page_access_token
        if not token:
            raise Held("no Page access token for this page (META_PAGE_ACCESS_TOKEN, or the page's "
                       "page_access_token in the tenants document)", "not_configured")
        return token

    def check_credentials(self, account_id: str | None, context: Context) -> str | None:
        # GET /me with a Page token answers that Page: the token works, and is the listed Page's.
        own: MetaSettings = self.platform_settings()
        token = self._page_token(Event(event_id="check", kind="check", account_id=account_id, data={}), context, own)
        params = {"fields": "id,name"}
        if own.app_secret:
            params["appsecret_proof"] = hmac_sha256_hex(own.app_secret, token.encode())
        response = send("GET", f"{own.graph_url}/me", context.deadline, what=WHAT, params=params,
                        headers={"Authorization": f"Bearer {token}"})
        _raise_for_graph_error(response)
        page = str(answer_object(response, WHAT).get("id") or "")[:64]
        if account_id and account_id != "*" and page != account_id:
            raise Held(f"this Page access token is Page {page!r}'s, not {account_id!r}'s", "credentials_rejected")
        return f"the Page access token reads Page {page}" + (" (with appsecret_proof)" if own.app_secret else "")

    def map(self, guest: dict[str, Any], event: Event, context: Context) -> CustomerImport:
        own: MetaSettings = self.platform_settings()
        answers = _answers(guest.get("field_data"))
        aliases = _aliases(own)
        country = (_first(answers, ("country",)) or "").strip()  # Meta's standard question, assumed ISO 3166
        region = country if len(country) == 2 else None
        email = next(filter(None, (normalise_email(answers.get(k)) for k in aliases["email"])), None)
        email = email or _only_email_value(answers)
        phone = next(filter(None, (normalise_phone(answers.get(k), *context.phone_regions(region))
                                   for k in aliases["phone_number"])), None)
        first_name = clean_text(_first(answers, aliases["first_name"]))
        last_name = clean_text(_first(answers, aliases["last_name"]))
        if not first_name and not last_name:
            first_name, last_name = split_full_name(_first(answers, aliases["full_name"]))
        consent = own.consent_checkboxes or {}
        responses = guest.get("custom_disclaimer_responses")
        lead_id = clean_text(guest.get("id")) or event.data["leadgen_id"]
        metadata = {
            "source": "meta",
            "metaLeadId": lead_id,
            "metaPageId": event.account_id,
            "metaFormId": clean_text(guest.get("form_id")) or event.data.get("form_id"),
            "metaAdId": event.data.get("ad_id"),
            "metaAdgroupId": event.data.get("adgroup_id"),
            "metaLeadCreatedTime": clean_text(guest.get("created_time")),
        }
        return CustomerImport(
            firstName=first_name,
            lastName=last_name,
            displayName=display_name(first_name, last_name),
            email=email,
            phoneNumber=phone,
            company=clean_text(_first(answers, aliases["company_name"])),
            emailOptin=checkbox_consent(responses, consent.get("emailOptin")),
            smsOptin=checkbox_consent(responses, consent.get("smsOptin")),
            # The lead id names a form submission, not a person: kept only beside an email or phone.
            metaId=f"lead:{lead_id}" if (email or phone) else None,
            metadata=present(metadata),
        )

    # -- the sweep -----------------------------------------------------------------------------------
    # Meta keeps unacknowledged leadgen webhooks for 36 hours; the sweep reads what it dropped, as long as the
    # leads are retrievable (90 days [S]).
    sweep_reach = timedelta(days=90)

    def sweep(self, account_id: str, window: SweepWindow, context: Context) -> Iterator[Event] | None:
        """The leads created on a Page's forms within ``window``, as the ``leadgen`` webhook names them (same event
        id: the lead id), read with this Page's own token: ``GET /{page-id}/leadgen_forms``, then each form's
        ``GET /{form-id}/leads`` filtered on ``time_created`` [S]."""
        return self._sweep(account_id, window, context)

    def _sweep(self, account_id: str, window: SweepWindow, context: Context) -> Iterator[Event]:
        own: MetaSettings = self.platform_settings()
        token = self._page_token(Event(event_id="sweep", kind="sweep", account_id=account_id, data={}), context, own)
        page = path_segment(account_id, "Meta Page id")
        forms = [form["id"] for form in self._graph_list(f"{page}/leadgen_forms", {"fields": "id"}, token, own, context)
                 if isinstance(form.get("id"), (str, int)) and not isinstance(form.get("id"), bool)]
        # Whole seconds, both ends widened (time_created has no finer grain); the exact window is applied
        # again to each lead's created_time, as the filter's syntax is second-hand.
        filtering = json.dumps([
            {"field": "time_created", "operator": "GREATER_THAN", "value": math.floor(window.since.timestamp()) - 1},
            {"field": "time_created", "operator": "LESS_THAN", "value": math.ceil(window.until.timestamp()) + 1},
        ], separators=(",", ":"))
        for form_id in dict.fromkeys(str(form) for form in forms):
            path = f"{path_segment(form_id, 'Meta form id')}/leads"
            for lead in self._graph_list(path, {"fields": "id,created_time", "filtering": filtering}, token, own,
                                         context):
                event = _swept_lead(lead, account_id, form_id, window)
                if event is not None:
                    yield event

    def _graph_list(self, path: str, params: dict[str, str], token: str, own: MetaSettings,
                    context: Context) -> Iterator[dict[str, Any]]:
        """Every item of a Graph list, page by page (``paging.cursors.after`` while ``paging.next`` is given)."""
        params = {**params, "limit": str(SWEEP_PAGE_SIZE)}
        if own.app_secret:
            params["appsecret_proof"] = hmac_sha256_hex(own.app_secret, token.encode())

        def read_page(after: str | None) -> tuple[list[Any], str | None]:
            response = send("GET", f"{own.graph_url}/{path}", context.deadline, what=WHAT,
                            params=params if after is None else {**params, "after": after},
                            headers={"Authorization": f"Bearer {token}"})
            _raise_for_sweep_error(response)
            body = answer_object(response, WHAT)
            items = body.get("data")
            if not isinstance(items, list):
                raise RetryableError(f"{WHAT} answered a list without data")
            paging = body.get("paging") if isinstance(body.get("paging"), dict) else {}
            cursors = paging.get("cursors") if isinstance(paging.get("cursors"), dict) else {}
            after = cursors.get("after")
            return items, after if paging.get("next") and isinstance(after, str) else None

        for items in cursor_pages(read_page, WHAT, SWEEP_MAX_PAGES):
            yield from (item for item in items if isinstance(item, dict))


def _imports_test_leads(context: Context, own: MetaSettings) -> bool:
    """The tenant's opt-in; the default tenant (no tenants document) has ``META_IMPORT_TEST_LEADS``."""
    if context.tenant.owns_every_account:
        return own.import_test_leads
    return context.tenant.import_test_leads


def is_test_lead(lead: dict[str, Any]) -> bool:
    """Whether the lead comes from Meta's Lead Ads Testing Tool: a placeholder answer, or Meta's own
    test email, in any field."""
    for value in _answers(lead.get("field_data")).values():
        if TEST_LEAD_PLACEHOLDER.match(value) or normalise_email(value) in TEST_LEAD_EMAILS:
            return True
    return False


def _key(name: object) -> str:
    """A field or checkbox key compared loosely: case, accents and punctuation folded (``E-mail`` → ``e_mail``,
    ``Prénom`` → ``prenom``, ``Numéro de téléphone`` → ``numero_de_telephone``)."""
    if not isinstance(name, str):
        return ""
    text = unicodedata.normalize("NFKD", name.casefold())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return re.sub(r"[\W_]+", "_", text).strip("_")


def _answers(field_data: object) -> dict[str, str]:
    """``field_data`` as normalised key → first non-empty value (the first field wins on a key clash)."""
    answers: dict[str, str] = {}
    for item in field_data if isinstance(field_data, list) else []:
        if not isinstance(item, dict) or not isinstance(item.get("values"), list):
            continue
        value = next((v for v in item["values"] if isinstance(v, str) and v.strip()), None)
        if value is not None:
            answers.setdefault(_key(item.get("name")), value)
    return answers


def _aliases(own: MetaSettings) -> dict[str, tuple[str, ...]]:
    """The built-in aliases, each list preceded by the operator's ``META_FIELD_ALIASES`` for that key."""
    extra = own.field_aliases or {}
    return {field: tuple(dict.fromkeys([*(_key(k) for k in extra.get(field, [])), *keys]))
            for field, keys in ALIASES.items()}


def _first(answers: dict[str, str], keys: tuple[str, ...]) -> str | None:
    return next((answers[key] for key in keys if key in answers), None)


def _only_email_value(answers: dict[str, str]) -> str | None:
    """The email of a form whose email question has a key we don't know (``"эл._адрес"``): the one
    email-shaped answer, if there is exactly one."""
    emails = {email for value in answers.values() if (email := normalise_email(value))}
    return emails.pop() if len(emails) == 1 else None


def split_full_name(full_name: str | None) -> tuple[str | None, str | None]:
    """``"Joe Example"`` → (``Joe``, ``Example``); the first word is the first name, the rest the last name."""
    text = clean_text(full_name)
    if not text:
        return None, None
    first, _, rest = text.partition(" ")
    return first, rest or None


def checkbox_consent(responses: object, checkbox_keys: list[str] | None) -> bool | None:
    """The answer to the configured consent checkboxes: ``True`` if one is checked, ``False`` if those on
    the form are all unchecked, ``None`` when none is configured or none was on the form."""
    if not checkbox_keys or not isinstance(responses, list):
        return None
    wanted = {_key(key) for key in checkbox_keys}
    states = [_checked(r.get("is_checked")) for r in responses
              if isinstance(r, dict) and _key(r.get("checkbox_key")) in wanted]
    states = [state for state in states if state is not None]
    return any(states) if states else None


def _checked(value: object) -> bool | None:
    """Meta's ``is_checked`` is a string, ``"1"`` or ``""`` in its example; anything else unknown is no answer."""
    if isinstance(value, bool):
        return value
    return CHECKED.get(value.strip().lower()) if isinstance(value, str) else None


def _raise_for_graph_error(response) -> None:
    """Graph answers throttling and outages as HTTP 400 with an error code: those are retried."""
    if 200 <= response.status_code < 300:
        return
    error = (json_object(response) or {}).get("error")
    if isinstance(error, dict) and (error.get("is_transient") is True or error.get("code") in TRANSIENT_GRAPH_CODES):
        raise RetryableError(f"{WHAT} answered {response.status_code} with temporary error code {error.get('code')}",
                             parse_retry_after(response.headers.get("Retry-After")))
    if isinstance(error, dict) and error.get("code") in CREDENTIAL_GRAPH_CODES:
        raise Held(f"{WHAT} refused the Page access token (error code {error.get('code')})", "credentials_rejected")
    raise_for_status(response, WHAT)


def _swept_lead(lead: dict[str, Any], page_id: str, form_id: str, window: SweepWindow) -> Event | None:
    """The event the leadgen webhook gave ``lead`` (its data as the webhook's change value, so :meth:`fetch`
    reads the lead as usual); None for a lead without an id, or created outside ``window``."""
    lead_id = lead.get("id")
    lead_id = str(lead_id) if isinstance(lead_id, (str, int)) and not isinstance(lead_id, bool) else ""
    if not lead_id.strip():
        return None
    created = _graph_time(lead.get("created_time"))
    # A lead without a readable time is kept: listed twice it costs nothing, missed it is lost.
    if created is not None and not window.since <= created < window.until:
        return None
    return Event(event_id=lead_id, kind=LEADGEN, account_id=page_id,
                 data={"leadgen_id": lead_id, "page_id": page_id, "form_id": form_id}, guest_key=f"lead:{lead_id}")


def _graph_time(value: object) -> datetime | None:
    """A Graph time (``2015-02-28T08:49:14+0000``, or Unix seconds), or None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str):
        return None
    for pattern in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
        try:
            return datetime.strptime(value.strip(), pattern).astimezone(timezone.utc)
        except ValueError:
            continue
    return None


def _raise_for_sweep_error(response) -> None:
    """:func:`_raise_for_graph_error`, plus the wait a throttled Page token is given: Graph sends no Retry-After
    but ``X-Business-Use-Case-Usage`` names ``estimated_time_to_regain_access`` in minutes (Meta's "Rate
    Limits" page)."""
    try:
        _raise_for_graph_error(response)
    except Held:
        raise
    except RetryableError as exc:
        if exc.retry_after is None:
            exc.retry_after = regain_seconds(response.headers.get("X-Business-Use-Case-Usage"))
        raise


def regain_seconds(header: str | None) -> float | None:
    """The longest ``estimated_time_to_regain_access`` (minutes) of an ``X-Business-Use-Case-Usage`` header,
    in seconds; None without one."""
    try:
        usage = json.loads(header) if header else None
    except ValueError:
        return None
    minutes = [entry.get("estimated_time_to_regain_access")
               for entries in (usage.values() if isinstance(usage, dict) else [])
               for entry in (entries if isinstance(entries, list) else []) if isinstance(entry, dict)]
    minutes = [value for value in minutes if isinstance(value, (int, float)) and not isinstance(value, bool)
               and value > 0]
    return max(minutes) * 60.0 if minutes else None


def _forbidden(reason: str) -> tuple[int, str, str]:
    return 403, json.dumps({"error": "forbidden", "reason": reason}), "application/json"
