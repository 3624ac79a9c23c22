"""Emulator of the Graph API call the Meta Lead Ads connector makes (shared/platforms/reservations.md §4.4).

- GET /{version}/{lead_id}?access_token=...&appsecret_proof=...&fields=...: one lead, readable with the
  access token of the Page it belongs to. Without ``fields`` Meta returns its default fields
  (``created_time``, ``id``, ``ad_id``, ``form_id``, ``field_data``); with it, only those named, so
  ``custom_disclaimer_responses`` comes back only when asked for (Meta's "Retrieving Leads" page).
- Errors in Graph's shape (``{"error": {"message", "type", "code", "error_subcode", "fbtrace_id"}}``):
  code 190 for a bad token, 100/33 for a lead that does not exist or is not readable with that token,
  and, when ``require_appsecret_proof`` is on ("Require App Secret"), 100 for a missing or wrong
  ``appsecret_proof`` (HMAC-SHA256 of the token keyed with the App Secret).

Point ``META_GRAPH_URL`` at ``emulator.url + "/v25.0"``. Webhook signatures are made by the tests.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import re
import secrets
from typing import Any

from sandbox.emulators.base import EmulatorServer, Request

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
        token = query.get("access_token", "")
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
