"""Signing for the declarative sources: any source of the sources document named by ``SOURCES_FILE``,
signed the way its entry's ``auth`` declares (the sandbox's own sources use it through their modules); and
:class:`ListApiEmulator`, a generic list API to try a source's ``sweep`` declaration against.

No shipped preset declares a sweep: none of their platforms has a list-by-date call known well enough (Como has
none; Zenchef's is only seen in public code, Partouche's and Chr365's are unknown; docs/platforms.md). The
emulator is therefore no platform's: ``GET /customers?account=&updated_since=&updated_before=&cursor=`` with an
``X-Api-Key`` header, answering ``{"customers": [...], "meta": {"next_cursor": ...}}``, oldest first,
``page_size`` a page, each customer with an ``updated_at`` (ISO 8601).
"""

from __future__ import annotations

import copy
import hmac
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from chalicelib.core.errors import SettingsError
from chalicelib.core.signatures import hmac_digest, standard_webhooks_signature
from chalicelib.domain.sources import NoAuth, Source, StandardWebhooksAuth, TokenAuth, parse_document
from sandbox.emulators.base import EmulatorServer, Request, instant
from sandbox.platforms import MissingSecret, UnknownPlatform

CUSTOMERS_PATH = "/customers"


def entry(name: str, environ: Mapping[str, str]) -> Source:
    """The source ``name`` of the sources document of ``environ["SOURCES_FILE"]``, presets applied."""
    path = environ.get("SOURCES_FILE")
    if not path:
        raise UnknownPlatform(f"no source {name!r}: SOURCES_FILE names no sources document")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read SOURCES_FILE {path}: {exc.strerror}") from None
    found = next((source for source in parse_document(text, f"SOURCES_FILE {Path(path).name}").sources
                  if source.name == name), None)
    if found is None:
        raise UnknownPlatform(f"no source {name!r} in SOURCES_FILE {path}")
    return found


def sign(name: str, body: bytes, environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The headers and query of a genuine request of source ``name`` carrying ``body``."""
    auth = entry(name, environ).auth
    if isinstance(auth, NoAuth):
        return {}, {}
    secret = auth.secret if auth.secret is not None else environ.get(auth.secret_env or "")
    if not secret:
        raise MissingSecret(f"{auth.secret_env} is not configured" if auth.secret_env
                            else f"the secret of source {name!r} is not configured")
    if isinstance(auth, TokenAuth):
        return ({}, {auth.query: secret}) if auth.query else ({auth.header: secret}, {})
    if isinstance(auth, StandardWebhooksAuth):
        message_id, timestamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
        return {"webhook-id": message_id, "webhook-timestamp": timestamp,
                "webhook-signature": standard_webhooks_signature(secret, message_id, timestamp, body)}, {}
    if "{header:" in auth.signed or "{query:" in auth.signed:
        raise NotImplementedError(f"source {name!r} signs headers or query values: sign it with its sender")
    return {auth.header: auth.prefix + hmac_digest(secret.encode(), body, auth.algorithm, auth.encoding)}, {}


class ListApiEmulator(EmulatorServer):
    """A list-by-update-time API with cursor paging, one key per account (``keys``: account → API key)."""

    def __init__(self, keys: dict[str, str] | None = None, page_size: int = 2, **kwargs: Any):
        super().__init__(**kwargs)
        self.keys = dict(keys or {})
        self.page_size = page_size
        self.list_requests = 0  # pages answered 200
        self._customers: list[dict[str, Any]] = []
        self.route("GET", CUSTOMERS_PATH, self._list)

    def add_customer(self, account: str, customer: dict[str, Any]) -> None:
        with self.lock:
            self._customers.append({**copy.deepcopy(customer), "account": account})

    def reset_state(self) -> None:
        self.list_requests = 0
        self._customers.clear()

    def _list(self, request: Request):
        query = request.query
        account = query.get("account", "")
        key = self.keys.get(account)
        if key is None or not hmac.compare_digest(request.headers.get("x-api-key", ""), key):
            return 401, {"error": "unauthorized"}
        since, before = instant(query.get("updated_since")), instant(query.get("updated_before"))
        if since is None:
            return 400, {"error": "updated_since is required (ISO 8601)"}
        try:
            offset = int(query.get("cursor") or 0)
        except ValueError:
            return 400, {"error": "bad cursor"}
        with self.lock:
            matching = sorted((c for c in self._customers if c["account"] == account
                               and (moment := instant(c.get("updated_at"))) is not None and moment >= since
                               and (before is None or moment < before)), key=lambda c: (c["updated_at"], c["id"]))
            page = copy.deepcopy(matching[offset:offset + self.page_size])
            self.list_requests += 1
        more = offset + self.page_size < len(matching)
        return 200, {"customers": page, "meta": {"next_cursor": str(offset + self.page_size) if more else None}}
