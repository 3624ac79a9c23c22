"""Meta Lead Ads in the sandbox: an emulator of the Graph API call the connector makes (docs/platforms.md,
"Meta Lead Ads"), the sandbox's app and Page credentials, webhook signing and the sample lead.

- GET /{version}/{lead_id}?appsecret_proof=...&fields=...: one lead, readable with the access token of
  the Page it belongs to, given as ``Authorization: Bearer <token>`` (as Graph accepts it, and as the
  bridge sends it) or as Graph's ``access_token`` parameter. Without ``fields`` Meta returns its default fields
  (``created_time``, ``id``, ``ad_id``, ``form_id``, ``field_data``); with it, only those named, so
  ``custom_disclaimer_responses`` comes back only when asked for (Meta's "Retrieving Leads" page).
- GET /{version}/me: with a Page access token, that Page's ``id`` and ``name`` (``tenants check``).
- GET /{version}/{page_id}/leadgen_forms and GET /{version}/{form_id}/leads (the sweeps): Graph lists, newest
  lead first, ``limit`` items a page (25 by default), paged by ``after`` (``paging.cursors.after``, with
  ``paging.next`` only while more remain); ``filtering`` takes ``time_created`` compared with
  ``GREATER_THAN[_OR_EQUAL]``/``LESS_THAN[_OR_EQUAL]`` a Unix time. Only the token's own Page and its forms are
  listed. With ``edge_call_limit`` set, a Page's list calls beyond it answer Business Use Case throttling
  (code 80005) with ``X-Business-Use-Case-Usage`` naming ``estimated_time_to_regain_access`` in minutes.
- Errors in Graph's shape (``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}``):
  code 190 for a bad token, 100/33 for a lead that does not exist or is not readable with that token,
  and, when ``require_appsecret_proof`` is on ("Require App Secret"), 100 for a missing or wrong
  ``appsecret_proof`` (HMAC-SHA256 of the token keyed with the App Secret).

Point ``META_GRAPH_URL`` at ``emulator.url + "/v25.0"``.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import json
import re
import secrets
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from chalicelib.core.signatures import hmac_sha256_hex
from sandbox.emulators.base import EmulatorServer, Request
from sandbox.platforms import Sample, fixture, required

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

DEFAULT_FIELDS = ("created_time", "id", "ad_id", "form_id", "field_data")
_LEAD_PATH = re.compile(r"^/v\d+\.\d+/([^/]+)$")
_EDGE_PATH = re.compile(r"^/v\d+\.\d+/([^/]+)/(leadgen_forms|leads)$")
GRAPH_TIME = "%Y-%m-%dT%H:%M:%S%z"  # 2015-02-28T08:49:14+0000
COMPARISONS = {
    "GREATER_THAN": lambda created, value: created > value,
    "GREATER_THAN_OR_EQUAL": lambda created, value: created >= value,
    "LESS_THAN": lambda created, value: created < value,
    "LESS_THAN_OR_EQUAL": lambda created, value: created <= value,
}


def graph_error(message: str, code: int, error_type: str = "OAuthException", subcode: int | None = None) -> dict:
    error: dict[str, Any] = {"message": message, "type": error_type, "code": code, "fbtrace_id": secrets.token_urlsafe(8)}
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


class MetaGraphEmulator(EmulatorServer):
    """Leads per Page, each Page with its own access token."""

    def __init__(self, app_secret: str, page_tokens: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.app_secret = app_secret
        self.page_tokens = dict(page_tokens or {})  # page id -> Page access token
        self.require_appsecret_proof = True
        self.lead_reads = 0
        self._leads: dict[str, tuple[str, dict[str, Any]]] = {}  # lead id -> (page id, lead)
        self._forms: dict[str, tuple[str, dict[str, Any]]] = {}  # form id -> (page id, form)
        self.list_calls = 0  # leadgen_forms and leads lists answered (throttled ones too)
        self.edge_call_limit: int | None = None  # list calls a Page may make before it is throttled
        self.regain_minutes = 5
        self._edge_calls: dict[str, int] = {}
        self.route_prefix("GET", "/v", self._read)

    # -- test helpers ------------------------------------------------------------

    def add_lead(self, page_id: str, lead: dict[str, Any]) -> None:
        """A lead of ``page_id``; its ``form_id`` becomes one of the Page's forms if it is not yet."""
        with self.lock:
            self._leads[str(lead["id"])] = (page_id, copy.deepcopy(lead))
            if lead.get("form_id") is not None and str(lead["form_id"]) not in self._forms:
                self._forms[str(lead["form_id"])] = (page_id, {"id": str(lead["form_id"]), "status": "ACTIVE"})

    def add_form(self, page_id: str, form_id: str, status: str = "ACTIVE") -> None:
        with self.lock:
            self._forms[form_id] = (page_id, {"id": form_id, "status": status})

    def reset_state(self) -> None:
        self.require_appsecret_proof = True
        self.lead_reads = 0
        self.list_calls = 0
        self.edge_call_limit = None
        self.regain_minutes = 5
        self._edge_calls.clear()
        self._leads.clear()
        self._forms.clear()

    # -- handler -------------------------------------------------------------------

    def _read(self, request: Request):
        edge = _EDGE_PATH.match(request.route)
        if edge:
            return self._list(request, edge.group(1), edge.group(2))
        match = _LEAD_PATH.match(request.route)
        if not match:
            return 400, graph_error("Unknown path components", 2500)
        query = request.query
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        token = bearer.strip() if scheme.lower() == "bearer" else query.get("access_token", "")
        with self.lock:
            page = next((p for p, t in self.page_tokens.items() if token and hmac.compare_digest(t, token)), None)
            if page is None:
                return 400, graph_error("Invalid OAuth access token - Cannot parse access token", 190)
            if self.require_appsecret_proof:
                expected = hmac.new(self.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
                if not hmac.compare_digest(query.get("appsecret_proof", ""), expected):
                    return 400, graph_error("API calls from the server require an appsecret_proof argument", 100,
                                            "GraphMethodException")
            if match.group(1) == "me":  # a Page token's /me is its Page
                return 200, {"id": page, "name": "Sandbox Page"}
            self.lead_reads += 1
            owner, lead = self._leads.get(match.group(1), (None, None))
            if lead is None or owner != page:
                return 400, graph_error(
                    f"Unsupported get request. Object with ID '{match.group(1)}' does not exist, cannot be loaded due"
                    " to missing permissions, or does not support this operation.", 100, "GraphMethodException", 33)
            fields = query["fields"].split(",") if query.get("fields") else DEFAULT_FIELDS
            return 200, {name: copy.deepcopy(lead[name]) for name in ("id", *fields) if name in lead}

    def _page_of(self, request: Request) -> tuple[str | None, Any]:
        """The Page whose token (and appsecret_proof) authorises ``request``, or (None, the error answer)."""
        query = request.query
        scheme, _, bearer = request.headers.get("authorization", "").partition(" ")
        token = bearer.strip() if scheme.lower() == "bearer" else query.get("access_token", "")
        page = next((p for p, t in self.page_tokens.items() if token and hmac.compare_digest(t, token)), None)
        if page is None:
            return None, (400, graph_error("Invalid OAuth access token - Cannot parse access token", 190))
        if self.require_appsecret_proof:
            expected = hmac.new(self.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(query.get("appsecret_proof", ""), expected):
                return None, (400, graph_error("API calls from the server require an appsecret_proof argument", 100,
                                               "GraphMethodException"))
        return page, None

    def _list(self, request: Request, node: str, edge: str):
        query = request.query
        with self.lock:
            page, refused = self._page_of(request)
            if page is None:
                return refused
            self.list_calls += 1
            self._edge_calls[page] = self._edge_calls.get(page, 0) + 1
            if self.edge_call_limit is not None and self._edge_calls[page] > self.edge_call_limit:
                usage = {page: [{"type": "pages", "call_count": 100, "total_cputime": 20, "total_time": 20,
                                 "estimated_time_to_regain_access": self.regain_minutes}]}
                return 400, graph_error("There have been too many leadgen api calls to this Page account. Wait a "
                                        "bit and try again.", 80005), {"X-Business-Use-Case-Usage": json.dumps(usage)}
            unreadable = 400, graph_error(
                f"Unsupported get request. Object with ID '{node}' does not exist, cannot be loaded due to missing "
                "permissions, or does not support this operation.", 100, "GraphMethodException", 33)
            if edge == "leadgen_forms":
                if node != page:
                    return unreadable
                items = [copy.deepcopy(form) for owner, form in self._forms.values() if owner == page]
                items.sort(key=lambda form: form["id"])
            else:
                owner, _ = self._forms.get(node, (None, None))
                if owner != page:
                    return unreadable
                try:
                    matches = _time_filters(query.get("filtering"))
                except ValueError as exc:
                    return 400, graph_error(f"(#100) Invalid parameter: filtering {exc}", 100)
                fields = query["fields"].split(",") if query.get("fields") else DEFAULT_FIELDS
                leads = [lead for lead_page, lead in self._leads.values()
                         if lead_page == page and str(lead.get("form_id")) == node and matches(_created(lead))]
                leads.sort(key=lambda lead: (_created(lead), str(lead["id"])), reverse=True)
                items = [{name: copy.deepcopy(lead[name]) for name in ("id", *fields) if name in lead} for lead in leads]
        try:
            limit = max(1, min(int(query.get("limit") or 25), 1000))
            start = int(base64.urlsafe_b64decode(query["after"]).decode()) if query.get("after") else 0
        except ValueError:
            return 400, graph_error("(#100) Invalid parameter: limit or after", 100)
        end = start + limit
        paging: dict[str, Any] = {"cursors": {"before": _cursor(start), "after": _cursor(min(end, len(items)))}}
        if end < len(items):
            next_query = {key: value for key, value in query.items() if key not in ("access_token", "after")}
            paging["next"] = f"{self.url}{request.route}?{urlencode({**next_query, 'after': _cursor(end)})}"
        return 200, {"data": items[start:end], "paging": paging}


def _cursor(offset: int) -> str:
    return base64.urlsafe_b64encode(str(offset).encode()).decode()


def _created(lead: dict[str, Any]) -> int:
    """A lead's ``created_time`` as Unix seconds (0 when it has none)."""
    value = lead.get("created_time")
    if isinstance(value, (int, float)):
        return int(value)
    return int(datetime.strptime(value, GRAPH_TIME).timestamp()) if isinstance(value, str) else 0


def _time_filters(filtering: str | None):
    """A predicate on a lead's creation time from Graph's ``filtering`` (``time_created`` only)."""
    rules = json.loads(filtering) if filtering else []
    if not isinstance(rules, list):
        raise ValueError("must be a JSON list")
    checks = []
    for rule in rules:
        if not isinstance(rule, dict) or rule.get("field") != "time_created" or rule.get("operator") not in COMPARISONS:
            raise ValueError("supports time_created with GREATER_THAN(_OR_EQUAL) or LESS_THAN(_OR_EQUAL)")
        checks.append((COMPARISONS[rule["operator"]], int(rule.get("value"))))
    return lambda created: all(compare(created, value) for compare, value in checks)


def graph_time(moment: datetime | None = None) -> str:
    """``moment`` (default: now) as Graph writes a lead's ``created_time``."""
    return (moment or datetime.now(timezone.utc)).astimezone(timezone.utc).strftime(GRAPH_TIME)


# -- the sandbox's Meta -----------------------------------------------------------------------------

SECRETS = {
    "meta_app_secret": "sandbox-meta-app-secret",
    "meta_verify_token": "sandbox-meta-verify",
    "meta_page_token": "sandbox-meta-page-token",
}
PAGE = "123123123"  # the sandbox's one Page, readable with its Page token


def emulator() -> MetaGraphEmulator:
    return MetaGraphEmulator(app_secret=SECRETS["meta_app_secret"], page_tokens={PAGE: SECRETS["meta_page_token"]})


def environment(emulator: MetaGraphEmulator) -> dict[str, str]:
    return {
        "META_APP_SECRET": SECRETS["meta_app_secret"],
        "META_VERIFY_TOKEN": SECRETS["meta_verify_token"],
        "META_PAGE_ACCESS_TOKEN": SECRETS["meta_page_token"],
        "META_GRAPH_URL": emulator.url + "/v25.0",
        "META_SWEEP_ACCOUNTS": PAGE,
    }


def sign(body: bytes, environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``X-Hub-Signature-256``: ``sha256=`` + hex HMAC-SHA256 of the body with the App Secret."""
    return {"X-Hub-Signature-256": "sha256=" + hmac_sha256_hex(required(environ, "META_APP_SECRET"), body)}, {}


def _build(sandbox: Sandbox, n: int) -> dict[str, Any]:
    lead_id = str(900000000000 + n)
    # Created now, as a guest of the sandbox is: the sweeps list leads by creation time.
    answers = [{"name": "full_name", "values": [f"Guest{n} Meta"]},
               {"name": "email", "values": [f"guest{n}@meta.sandbox.example"]}]
    sandbox.platforms["meta"].add_lead(PAGE, {**fixture("meta/lead.json"), "id": lead_id, "created_time": graph_time(),
                                              "field_data": answers})
    webhook = fixture("meta/leadgen_webhook.json")
    change = webhook["entry"][0]["changes"][0]
    change["value"].update(leadgen_id=int(lead_id), page_id=int(PAGE))
    webhook["entry"][0]["changes"] = [change]
    return webhook


def sample_test_lead_answers(email: str = "test@fb.com") -> list[dict[str, Any]]:
    """The answers of a lead made by Meta's Lead Ads Testing Tool, as restaurants report them (Meta does not
    document them): a placeholder per question, and Meta's own test email."""
    placeholders = [{"name": key, "values": [f"<test lead: dummy data for {key.upper()}>"]}
                    for key in ("full_name", "phone_number", "company_name")]
    return [*placeholders, {"name": "email", "values": [email]}]


SAMPLE = Sample("meta", "metaId", _build, lambda n: f"lead:{900000000000 + n}")
