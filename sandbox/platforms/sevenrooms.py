"""SevenRooms in the sandbox: an emulator of the API calls the bridge makes (docs/platforms.md, "SevenRooms"),
the sandbox's credentials, webhook signing and the sample guest.

- POST {base}/auth: form-encoded ``client_id`` and ``client_secret`` → ``{"status": 200, "msg":
  "Successfully authenticated.", "data": {"token", "token_expiration_datetime"}}``; the token "expires
  after 24 hours" and goes back raw (no ``Bearer``) in ``Authorization`` [V: Concierge API OpenAPI].
- GET {base}/clients/{client_id} → ``{"data": {...client...}}`` [S: a production consumer].
- GET {base}/reservations/export?venue_id|venue_group_id&updated_since&limit&cursor → ``{"data": {"results":
  [...reservations...], "cursor": ...}}`` [S: public clients; the docs are gated]: the sweep's list call. Here the
  reservations updated at or after ``updated_since`` (ISO 8601, read as UTC when it has no zone), oldest first,
  ``limit`` (at most 400) a page, the cursor opaque.

The base path is the API version, as on SevenRooms' servers (``https://api.sevenrooms.com/2_4``): point
``SEVENROOMS_API_URL`` at ``emulator.api_url``. Error bodies are not published; these are plausible
``{"status", "msg"}`` objects in the success body's style.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

from sandbox.emulators.base import EmulatorServer, Request
from sandbox.platforms import Sample, fixture, required

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

API_PREFIX = "/2_4"
AUTH_PATH = f"{API_PREFIX}/auth"
CLIENTS_PREFIX = f"{API_PREFIX}/clients/"
EXPORT_PATH = f"{API_PREFIX}/reservations/export"
EXPORT_MAX_LIMIT = 400
TOKEN_TTL = timedelta(hours=24)


class SevenRoomsEmulator(EmulatorServer):
    """The token endpoint and client lookup, with raw-token checks."""

    def __init__(self, client_id: str = "sevenrooms-client", client_secret: str = "sevenrooms-secret", **kwargs: Any):
        super().__init__(**kwargs)
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_requests = 0  # tokens issued: tests assert the bridge caches them
        self.client_requests = 0  # client lookups answered 200
        self.export_requests = 0  # export pages answered 200
        self._tokens: set[str] = set()
        self._clients: dict[str, dict[str, Any]] = {}
        self._reservations: dict[str, dict[str, Any]] = {}
        self.route("POST", AUTH_PATH, self._auth)
        self.route_prefix("GET", CLIENTS_PREFIX, self._client)
        self.route("GET", EXPORT_PATH, self._export)

    @property
    def api_url(self) -> str:
        return self.url + API_PREFIX

    # -- test helpers ------------------------------------------------------------

    def add_client(self, client: dict[str, Any]) -> None:
        with self.lock:
            self._clients[client["id"]] = copy.deepcopy(client)

    def add_reservation(self, reservation: dict[str, Any]) -> None:
        """A reservation the export lists (its ``updated``, ``venue_id`` and ``venue_group_id`` filter it)."""
        with self.lock:
            self._reservations[reservation["id"]] = copy.deepcopy(reservation)

    def revoke_tokens(self) -> None:
        """Invalidate every issued token (the next lookup gets 401), to test renewal."""
        with self.lock:
            self._tokens.clear()

    def reset_state(self) -> None:
        self.token_requests = 0
        self.client_requests = 0
        self.export_requests = 0
        self._tokens.clear()
        self._clients.clear()
        self._reservations.clear()

    # -- handlers ------------------------------------------------------------------

    def _auth(self, request: Request):
        form = request.form()
        if not (hmac.compare_digest(form.get("client_id", ""), self.client_id)
                and hmac.compare_digest(form.get("client_secret", ""), self.client_secret)):
            return 401, {"status": 401, "msg": "Invalid client_id or client_secret."}
        expires = datetime.now(timezone.utc).replace(tzinfo=None) + TOKEN_TTL
        with self.lock:
            self.token_requests += 1
            token = secrets.token_hex(32)
            self._tokens.add(token)
        return 200, {"status": 200, "msg": "Successfully authenticated.",
                     "data": {"token": token, "token_expiration_datetime": expires.isoformat()}}

    def _client(self, request: Request):
        token = request.headers.get("authorization", "")
        with self.lock:
            if token not in self._tokens:
                return 401, {"status": 401, "msg": "Invalid or expired token."}
            client = self._clients.get(unquote(request.route[len(CLIENTS_PREFIX):]))
            if client is None:
                return 404, {"status": 404, "msg": "Client not found."}
            self.client_requests += 1
            return 200, {"status": 200, "data": copy.deepcopy(client)}


    def _export(self, request: Request):
        token = request.headers.get("authorization", "")
        query = request.query
        since = _instant(query.get("updated_since", ""))
        filters = [(key, query[key]) for key in ("venue_id", "venue_group_id") if query.get(key)]
        if since is None or len(filters) != 1:
            return 400, {"status": 400, "msg": "updated_since and one of venue_id, venue_group_id are required."}
        try:
            limit = min(int(query.get("limit") or EXPORT_MAX_LIMIT), EXPORT_MAX_LIMIT)
            offset = int(query.get("cursor") or 0)
        except ValueError:
            return 400, {"status": 400, "msg": "Invalid limit or cursor."}
        key, value = filters[0]
        with self.lock:
            if token not in self._tokens:
                return 401, {"status": 401, "msg": "Invalid or expired token."}
            matching = sorted((r for r in self._reservations.values()
                               if r.get(key) == value and (_instant(r.get("updated") or "") or since) >= since),
                              key=lambda r: (r.get("updated") or "", r["id"]))
            page = copy.deepcopy(matching[offset:offset + limit])
            self.export_requests += 1
        more = offset + limit < len(matching)
        return 200, {"status": 200, "data": {"results": page, "cursor": str(offset + limit) if more else None}}


def _instant(text: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


# -- the sandbox's SevenRooms -----------------------------------------------------------------------

SECRETS = {
    "sevenrooms_webhook_secret": "sandbox-sevenrooms-token",
    "sevenrooms_client_id": "sandbox-sevenrooms-client",
    "sevenrooms_client_secret": "sandbox-sevenrooms-secret",
}


def emulator() -> SevenRoomsEmulator:
    return SevenRoomsEmulator(client_id=SECRETS["sevenrooms_client_id"], client_secret=SECRETS["sevenrooms_client_secret"])


def environment(emulator: SevenRoomsEmulator) -> dict[str, str]:
    return {
        "SEVENROOMS_WEBHOOK_SECRET": SECRETS["sevenrooms_webhook_secret"],
        "SEVENROOMS_CLIENT_ID": SECRETS["sevenrooms_client_id"],
        "SEVENROOMS_CLIENT_SECRET": SECRETS["sevenrooms_client_secret"],
        "SEVENROOMS_API_URL": emulator.api_url,
    }


def sign(body: bytes, environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """As ``SEVENROOMS_AUTH`` says: the secret as ``?token=`` (the default), or an HMAC-SHA256 of the body in
    ``SEVENROOMS_SIGNATURE_HEADER``, hex or base64 (``SEVENROOMS_SIGNATURE_ENCODING``)."""
    secret = required(environ, "SEVENROOMS_WEBHOOK_SECRET")
    if (environ.get("SEVENROOMS_AUTH") or "token").lower() == "token":
        return {}, {"token": secret}
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    hex_encoded = (environ.get("SEVENROOMS_SIGNATURE_ENCODING") or "hex").lower() == "hex"
    header = environ.get("SEVENROOMS_SIGNATURE_HEADER") or "X-SevenRooms-Signature"
    return {header: digest.hex() if hex_encoded else base64.b64encode(digest).decode()}, {}


def _build(sandbox: Sandbox, n: int) -> dict[str, Any]:
    client_id = f"sandbox-client-{n}"
    client = {**fixture("sevenrooms/client.json")["data"], "id": client_id, "first_name": f"Guest{n}",
              "last_name": "Rooms", "email": f"guest{n}@sevenrooms.sandbox.example", "phone_number": None}
    sandbox.platforms["sevenrooms"].add_client(client)
    payload = fixture("sevenrooms/reservation_created.json")
    payload["entity"].update(id=f"sandbox-reservation-{n}", client_id=client_id, first_name=f"Guest{n}",
                             last_name="Rooms", email=client["email"], phone_number=None)
    return payload


SAMPLE = Sample("sevenrooms", "sevenroomsId", _build, lambda n: f"sandbox-client-{n}")
