"""Meta Lead Ads in the sandbox: an emulator of the Graph API call the connector makes (docs/platforms.md,
"Meta Lead Ads"), the sandbox's app and Page credentials, webhook signing and the sample lead.

- GET /{version}/{lead_id}?appsecret_proof=...&fields=...: one lead, readable with the access token of
  the Page it belongs to, given as ``Authorization: Bearer <token>`` (as Graph accepts it, and as the
  bridge sends it) or as Graph's ``access_token`` parameter. Without ``fields`` Meta returns its default fields
  (``created_time``, ``id``, ``ad_id``, ``form_id``, ``field_data``); with it, only those named, so
  ``custom_disclaimer_responses`` comes back only when asked for (Meta's "Retrieving Leads" page).
- Errors in Graph's shape (``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}``):
  code 190 for a bad token, 100/33 for a lead that does not exist or is not readable with that token,
  and, when ``require_appsecret_proof`` is on ("Require App Secret"), 100 for a missing or wrong
  ``appsecret_proof`` (HMAC-SHA256 of the token keyed with the App Secret).

Point ``META_GRAPH_URL`` at ``emulator.url + "/v25.0"``.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chalicelib.core.signatures import hmac_sha256_hex
from sandbox.emulators.base import EmulatorServer, Request
from sandbox.platforms import Sample, fixture, required

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

DEFAULT_FIELDS = ("created_time", "id", "ad_id", "form_id", "field_data")
_LEAD_PATH = re.compile(r"^/v\d+\.\d+/([^/]+)$")


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
        self.route_prefix("GET", "/v", self._read)

    # -- test helpers ------------------------------------------------------------

    def add_lead(self, page_id: str, lead: dict[str, Any]) -> None:
        with self.lock:
            self._leads[str(lead["id"])] = (page_id, copy.deepcopy(lead))

    def reset_state(self) -> None:
        self.require_appsecret_proof = True
        self.lead_reads = 0
        self._leads.clear()

    # -- handler -------------------------------------------------------------------

    def _read(self, request: Request):
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
            self.lead_reads += 1
            owner, lead = self._leads.get(match.group(1), (None, None))
            if lead is None or owner != page:
                return 400, graph_error(
                    f"Unsupported get request. Object with ID '{match.group(1)}' does not exist, cannot be loaded due"
                    " to missing permissions, or does not support this operation.", 100, "GraphMethodException", 33)
            fields = query["fields"].split(",") if query.get("fields") else DEFAULT_FIELDS
            return 200, {name: copy.deepcopy(lead[name]) for name in ("id", *fields) if name in lead}


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
    }


def sign(body: bytes, environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``X-Hub-Signature-256``: ``sha256=`` + hex HMAC-SHA256 of the body with the App Secret."""
    return {"X-Hub-Signature-256": "sha256=" + hmac_sha256_hex(required(environ, "META_APP_SECRET"), body)}, {}


def _build(sandbox: Sandbox, n: int) -> dict[str, Any]:
    lead_id = str(900000000000 + n)
    sandbox.platforms["meta"].add_lead(PAGE, {**fixture("meta/lead.json"), "id": lead_id, "field_data": [
        {"name": "full_name", "values": [f"Guest{n} Meta"]},
        {"name": "email", "values": [f"guest{n}@meta.sandbox.example"]},
    ]})
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
