"""The generic connector behind every declarative source (see :mod:`chalicelib.domain.sources`).

One instance per source in the sources document: it verifies with the declared scheme, finds the
events with JMESPath, optionally fetches the guest by id, and maps it with the declared expressions,
through the same normalisation as the built-in connectors.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import quote

import httpx

from chalicelib.connectors.base import Connector, Context, Event, ParsedWebhook, SweepWindow, WebhookRequest
from chalicelib.connectors.payload import load_json
from chalicelib.connectors.shared import cursor_pages, instant, path_segment, present
from chalicelib.core.errors import Held, PermanentError, RetryableError, SettingsError, malformed, unauthorized
from chalicelib.core.normalise import clean_text, display_name, language_code, normalise_email, normalise_phone
from chalicelib.core.signatures import equal, hmac_digest, standard_webhooks_valid
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.domain.sources import (
    HmacAuth,
    NoAuth,
    Source,
    StandardWebhooksAuth,
    Sweep,
    TokenAuth,
    environment_value,
)
from chalicelib.domain.tenants import Tenant
from chalicelib.infra.http import raise_for_status, send
from chalicelib.infra.settings import Settings

SWEEP_MAX_PAGES = 1000  # past that, a source's list API is looping rather than paging


def search(expression: str | None, data: Any) -> Any:
    if expression is None:
        return None
    compiled = _compiled(expression)
    from jmespath.exceptions import JMESPathError

    try:
        # What compiled.search(data) does, without building a new interpreter (and its method cache)
        # for every call: half the cost of a search, the declarative sources' per-event hot spot.
        return _interpreter().visit(compiled.parsed, data)
    except JMESPathError:
        # A value of a type the expression cannot take (join() over a number, ...): the payload does not
        # hold what the source declares, as if the value were absent (not an error 500).
        return None


@functools.lru_cache(maxsize=1024)
def _compiled(expression: str) -> Any:
    # A source's expressions are few and fixed: parse each once (jmespath.search looks it up every call).
    import jmespath  # only declarative sources use it

    return jmespath.compile(expression)


@functools.lru_cache(maxsize=1)
def _interpreter() -> Any:
    # Stateless apart from a cache of its visit methods, so one serves every thread (jmespath 1.x).
    from jmespath.visitor import TreeInterpreter

    return TreeInterpreter()


_SIGNED_SLOTS = re.compile(r"\{header:(?P<header>[A-Za-z0-9_-]+)\}|\{query:(?P<query>[A-Za-z0-9_.-]+)\}")


class DeclarativeConnector(Connector):
    """One source of the sources document. It has no settings model: its secret is declared in the
    document (inline, or the environment variable its ``secret_env`` names)."""

    def __init__(self, source: Source):
        self.source = source
        self.name = source.name
        self.id_field = source.id_field
        self.ack_status = source.ack.status
        self.ack_body = source.ack.body
        self.ack_content_type = source.ack.content_type
        if source.sweep is not None and source.sweep.max_interval_hours:
            self.sweep_max_interval = timedelta(hours=source.sweep.max_interval_hours)

    # -- authentication --------------------------------------------------------------------------
    def configured(self) -> bool:
        if isinstance(self.source.auth, NoAuth):
            return True
        tenants = self._tenants_with_own_secrets()
        return tenants if tenants is not None else bool(self.source.auth.secret_value())

    def webhook_secret(self, tenant: Tenant | None = None) -> str:
        # Each account of a source registers its webhook with its own secret: a named tenant's is its
        # webhook_secret, in the form the source's auth takes; the source's own is the default tenant's.
        if tenant is not None and not tenant.owns_every_account:
            return tenant.own_webhook_secret(self.name)
        secret = None if isinstance(self.source.auth, NoAuth) else self.source.auth.secret_value()
        if not secret:
            raise SettingsError(f"the secret of source {self.name!r} is not configured")
        return secret

    def verify(self, request: WebhookRequest, tenant: Tenant | None = None) -> None:
        auth = self.source.auth
        if isinstance(auth, NoAuth):
            return  # explicitly declared: this source is authenticated by nothing
        secret = self.webhook_secret(tenant)
        if isinstance(auth, HmacAuth):
            given = request.required_header(auth.header)
            expected = auth.prefix + hmac_digest(secret.encode(), self._signed(auth, request), auth.algorithm, auth.encoding)
            if auth.encoding == "hex":
                given, expected = given.strip().lower(), expected.lower()
            if not equal(given.strip(), expected):
                raise unauthorized(f"{auth.header} does not match")
        elif isinstance(auth, TokenAuth):
            given = request.query.get(auth.query) if auth.query else request.header(auth.header)
            if not equal(given, secret):
                raise unauthorized("token missing or wrong")
        elif isinstance(auth, StandardWebhooksAuth):
            if not standard_webhooks_valid(secret, request.headers, request.body, auth.tolerance_seconds):
                raise unauthorized("Standard Webhooks signature missing, wrong or outside the time tolerance")

    @staticmethod
    def _signed(auth: HmacAuth, request: WebhookRequest) -> bytes:
        """The bytes the sender signed, from the declared template (the body stays raw bytes)."""
        before, _, after = auth.signed.partition("{body}")

        def value(slot: re.Match) -> str:
            return (request.header(slot["header"]) or "") if slot["header"] else request.query.get(slot["query"], "")

        def render(template: str) -> bytes:
            # One pass: a header holding "{query:...}" is signed as those characters, not as the query's value.
            return _SIGNED_SLOTS.sub(value, template).encode()

        return render(before) + request.body + render(after)

    # -- events ----------------------------------------------------------------------------------
    def parse(self, request: WebhookRequest) -> ParsedWebhook:
        source = self.source
        document = load_json(request.body)
        found = search(source.events, document)
        if isinstance(found, dict):
            found = [found]
        if not isinstance(found, list):
            raise malformed(f"{self.name} webhook: no events at {source.events!r}")
        parsed = ParsedWebhook(events=[])
        for item in found:
            if not isinstance(item, dict):
                raise malformed(f"{self.name} webhook: an event at {source.events!r} is not an object")
            event_type = clean_text(_scalar(search(source.event_type, item)))
            account_id = clean_text(_scalar(search(source.account_id, item)))
            if source.import_events is not None and event_type not in source.import_events:
                parsed.ignored.append(event_type or "(no type)")
                parsed.ignored_accounts.add(account_id)
                continue
            guest_id = self._guest_id(item)
            event_id = clean_text(_scalar(search(source.event_id, item))) or _digest(item)
            parsed.events.append(Event(
                event_id=event_id,
                kind=event_type or self.name,
                account_id=account_id,
                data=item,
                guest_key=f"id:{guest_id}" if guest_id else None,
            ))
        return parsed

    def _guest_id(self, item: dict[str, Any]) -> str | None:
        expression = self.source.fetch.id if self.source.fetch else self.source.mapping.id
        return clean_text(_scalar(search(expression, item)))

    def fetch(self, event: Event, context: Context) -> dict[str, Any] | None:
        spec = self.source.fetch
        if spec is None:
            return event.data
        guest_id = clean_text(_scalar(search(spec.id, event.data)))
        if not guest_id:
            raise PermanentError(f"{self.name}: no id at {spec.id!r} to fetch the guest with")
        what = f"{self.name} API"
        variable = self._variables(context, event.account_id)
        url = _fill(spec.url, f"source {self.name!r} fetch url",
                    self._url_value(spec.url, guest_id, f"{self.name}: the value at {spec.id!r}"), variable)
        headers = {key: _fill(value, f"source {self.name!r} header {key}", lambda _: _header_id(guest_id, spec.id, key),
                              variable)
                   for key, value in spec.headers.items()}
        body = _render_body(spec.body, guest_id, self.name, variable) if spec.method == "POST" else None
        response = send(spec.method, url, context.deadline, what=what, headers=headers, json=body)
        if response.status_code in spec.not_found_statuses:
            raise PermanentError(f"{what} has no guest with this id ({response.status_code})")
        document = _json_answer(response, what)
        guest = search(spec.result, document)
        if not isinstance(guest, dict):
            raise PermanentError(f"{what} answered without a guest at {spec.result!r}")
        return guest

    def _variables(self, context: Context, account_id: str | None) -> Callable[[str, str], str]:
        """Where a fetch's ``${NAME}`` is read: the environment for the default tenant; for a named tenant, its
        account's entry in the tenants document (``{"COMO_API_KEY": ...}``) and never the environment, which holds
        the deployment's credentials: missing, the event is held until the entry gives it."""
        if context.tenant.owns_every_account:
            return environment_value
        account = context.credentials(self.name, account_id)

        def own(name: str, what: str) -> str:
            value = account.get(name)
            if not value:
                raise Held(f"{what} needs {name}, which this account's entry in the tenants document does not give "
                           "(a tenant's guests are never fetched with the deployment's variables)", "not_configured")
            return value

        return own

    @staticmethod
    def _url_value(template: str, value: str, what: str) -> Callable[[re.Match], str]:
        """How an id goes into the url at its slot (a fetch's ``{id}``, a sweep's ``{account}``): one quoted path
        segment before the query (``..``, ``/`` and the like refused: the id must not move the path the API's
        credentials go to), a quoted value after."""
        query_starts = template.find("?")

        def encoded(slot: re.Match) -> str:
            if 0 <= query_starts < slot.start():
                return quote(value, safe="")
            return path_segment(value, what)

        return encoded

    # -- the sweep -------------------------------------------------------------------------------
    def sweep_accounts(self, tenant: Tenant) -> list[str]:
        if self.source.sweep is None:
            return []
        if tenant.owns_every_account:
            return list(dict.fromkeys(account for account in self.source.sweep.accounts if account))
        return super().sweep_accounts(tenant)

    def sweep_minutes(self, settings: Settings) -> int:
        # A source has no settings model: its own interval, if any, is in its sweep declaration.
        own = self.source.sweep.minutes if self.source.sweep is not None else None
        return settings.sweep_minutes if own is None else own

    def sweep(self, account_id: str, window: SweepWindow, context: Context) -> Iterator[Event] | None:
        """What the source's declared list call gives for ``account_id`` in ``window``, each item turned into the
        event its webhook carries (so parse's ids, fetch and map read it unchanged); None: no sweep declared."""
        if self.source.sweep is None:
            return None
        return self._sweep(self.source.sweep, account_id, window, context)

    def _sweep(self, spec: Sweep, account_id: str, window: SweepWindow, context: Context) -> Iterator[Event]:
        what = f"{self.name} API"
        variable = self._variables(context, account_id)
        try:
            url = _fill(spec.url, f"source {self.name!r} sweep url",
                        self._url_value(spec.url, account_id, f"{self.name} account id"), variable, slots=_SWEEP_SLOTS)
            headers = {key: _fill(value, f"source {self.name!r} sweep header {key}",
                                  lambda _: _header_id(account_id, "the account", key), variable, slots=_SWEEP_SLOTS)
                       for key, value in spec.headers.items()}
        except SettingsError as exc:
            # The default tenant's variable is not set: this source is not swept (and the run says why), it is
            # no reason to stop the sweep of every other platform.
            raise Held(str(exc), "not_configured") from None
        filters = {spec.since_parameter: _written(window.since, spec.time_format)}
        if spec.until_parameter:
            filters[spec.until_parameter] = _written(window.until, spec.time_format)

        def read_page(cursor: str | None) -> tuple[list[Any], str | None]:
            # The cursor is the API's data: it travels as one quoted query value, never read as a template.
            params = filters if cursor is None else {**(filters if spec.next_page_keeps_filters else {}),
                                                     spec.next_page_parameter: cursor}
            # Merged into the url's own query (httpx's params= would replace it).
            response = send("GET", str(httpx.URL(url).copy_merge_params(params)), context.deadline, what=what,
                            headers=headers)
            document = _json_answer(response, what)
            found = search(spec.items, document)
            items = [found] if isinstance(found, dict) else [] if found is None else found
            if not isinstance(items, list):
                raise RetryableError(f"{what} answered without a list at {spec.items!r}")
            return items, _scalar(search(spec.next_page, document)) if spec.next_page else None

        for items in cursor_pages(read_page, what, SWEEP_MAX_PAGES):
            for item in items:
                event = self._swept_event(spec, item, account_id, window)
                if event is not None:
                    yield event

    def _swept_event(self, spec: Sweep, item: Any, account_id: str, window: SweepWindow) -> Event | None:
        """The event the webhook would carry for a listed ``item``, as :meth:`parse` reads it; None when it is not
        one to import (not an object, a type the source ignores, outside the window)."""
        if not isinstance(item, dict):
            return None
        if spec.item_time is not None:
            moment = _instant(search(spec.item_time, item))
            # A listed item with no readable time is kept: listing it twice costs no Fullwhere call.
            if moment is not None and not window.since <= moment < window.until:
                return None
        event = search(spec.event, item)
        if not isinstance(event, dict):
            return None
        source = self.source
        event_type = clean_text(_scalar(search(source.event_type, event)))
        if source.import_events is not None and event_type not in source.import_events:
            return None
        guest_id = self._guest_id(event)
        return Event(
            event_id=clean_text(_scalar(search(source.event_id, event))) or _digest(event),
            kind=event_type or self.name,
            # The account the event names, as its webhook would be routed; else the one it was listed for.
            account_id=clean_text(_scalar(search(source.account_id, event))) or account_id,
            data=event,
            guest_key=f"id:{guest_id}" if guest_id else None,
        )

    def map(self, guest: dict[str, Any], event: Event, context: Context) -> CustomerImport:
        mapping = self.source.mapping
        text = {name: clean_text(_scalar(search(getattr(mapping, name), guest)))
                for name in ("firstName", "lastName", "displayName", "civility", "company", "description")}
        civility = text["civility"]
        if civility and mapping.civility_map:
            civility = mapping.civility_map.get(civility, civility)
        metadata = {"source": self.name, **present({key: clean_text(_scalar(search(expression, guest)))
                                                    for key, expression in mapping.metadata.items()})}
        phone_region = clean_text(_scalar(search(mapping.phone_region, guest)))
        return CustomerImport(**{
            "firstName": text["firstName"],
            "lastName": text["lastName"],
            "displayName": text["displayName"] or display_name(text["firstName"], text["lastName"]),
            "civility": civility,
            "company": text["company"],
            "description": text["description"],
            "email": normalise_email(_scalar(search(mapping.email, guest))),
            "phoneNumber": normalise_phone(_scalar(search(mapping.phoneNumber, guest)), *context.phone_regions(phone_region)),
            "language": language_code(_scalar(search(mapping.language, guest))),
            "emailOptin": _consent(search(mapping.emailOptin, guest)),
            "smsOptin": _consent(search(mapping.smsOptin, guest)),
            self.id_field: clean_text(_scalar(search(mapping.id, guest))),
            "metadata": metadata,
        })


def _scalar(value: Any) -> Any:
    """Numbers become strings (ids are often numeric); objects and lists are not a field's value."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return str(value)
    return value if isinstance(value, str) else None


def _consent(value: Any) -> bool | None:
    """An explicit yes/no only; anything else is "not stated" (None), never a guess."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "false", "no", "0"):
        return value.strip().lower() in ("true", "yes", "1")
    return None


def _digest(item: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(item, sort_keys=True, default=str).encode()).hexdigest()[:16]


# The operator's ${NAME} placeholders and the {id} slot (a sweep's: {account}), found in one pass over the template.
_SLOTS = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*)\}|\{id\}")
_SWEEP_SLOTS = re.compile(r"\$\{(?P<name>[A-Z][A-Z0-9_]*)\}|\{account\}")


def _fill(template: str, what: str, id_text: Callable[[re.Match], str],
          variable: Callable[[str, str], str] = environment_value, slots: re.Pattern = _SLOTS) -> str:
    """``template`` (from the sources document) with its ``${NAME}`` read by ``variable`` (the environment, or a
    named tenant's account entry) and each ``{id}`` replaced by ``id_text(slot)``, in one pass: what is inserted is
    never read again, so an id holding ``${AWS_SECRET_ACCESS_KEY}`` travels as those characters, never as the
    variable."""
    return slots.sub(lambda slot: variable(slot["name"], what) if slot["name"] else id_text(slot), template)


def _json_answer(response: httpx.Response, what: str) -> Any:
    raise_for_status(response, what)
    try:
        # Any JSON, not only an object (answer_object): the declared expression may index into a list.
        return response.json()
    except ValueError:
        raise RetryableError(f"{what} answered 2xx with a body that is not JSON") from None


def _header_id(guest_id: str, expression: str, header: str) -> str:
    # A header value cannot carry line breaks or other control characters (nor non-ASCII, for httpx).
    if not all(32 <= ord(char) < 127 for char in guest_id):
        raise PermanentError(f"the id at {expression!r} is not usable in the {header} header")
    return guest_id


def _render_body(template: Any, guest_id: str, name: str, variable: Callable[[str, str], str]) -> Any:
    # The id stays a JSON string inside the template's structure: httpx encodes it, nothing parses it again.
    if isinstance(template, str):
        return _fill(template, f"source {name!r} fetch body", lambda _: guest_id, variable)
    if isinstance(template, dict):
        return {key: _render_body(value, guest_id, name, variable) for key, value in template.items()}
    if isinstance(template, list):
        return [_render_body(value, guest_id, name, variable) for value in template]
    return template


def _written(moment: datetime, time_format: str) -> str:
    """A window's bound as a sweep declares its API takes it."""
    moment = moment.astimezone(timezone.utc)
    if time_format == "unix":
        return str(int(moment.timestamp()))
    if time_format == "unix_ms":
        return str(int(moment.timestamp() * 1000))
    if time_format == "date":
        return moment.date().isoformat()
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _instant(value: Any) -> datetime | None:
    """A listed item's time: ISO 8601 (UTC when it has no zone), or Unix seconds or milliseconds (also written as
    a string of digits); else None."""
    if isinstance(value, str) and value.strip().isdigit():
        return instant(int(value.strip()))
    return instant(value)
