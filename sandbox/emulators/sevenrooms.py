"""Emulator of the SevenRooms API calls the bridge makes (shared/platforms/reservations.md §2.4).

- POST {base}/auth: form-encoded ``client_id`` and ``client_secret`` → ``{"status": 200, "msg":
  "Successfully authenticated.", "data": {"token", "token_expiration_datetime"}}``; the token "expires
  after 24 hours" and goes back raw (no ``Bearer``) in ``Authorization`` [V: Concierge API OpenAPI].
- GET {base}/clients/{client_id} → ``{"data": {...client...}}`` [S: a production consumer].

The base path is the API version, as on SevenRooms' servers (``https://api.sevenrooms.com/2_4``): point
``SEVENROOMS_API_URL`` at ``emulator.api_url``. Error bodies are not published; these are plausible
``{"status", "msg"}`` objects in the success body's style.
"""

from __future__ import annotations

import copy
import hmac
import secrets
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import unquote

from sandbox.emulators.base import EmulatorServer, Request

API_PREFIX = "/2_4"
AUTH_PATH = f"{API_PREFIX}/auth"
CLIENTS_PREFIX = f"{API_PREFIX}/clients/"
TOKEN_TTL = timedelta(hours=24)


class SevenRoomsEmulator(EmulatorServer):
    """The token endpoint and client lookup, with raw-token checks."""

    def __init__(self, client_id: str = "sevenrooms-client", client_secret: str = "sevenrooms-secret", **kwargs: Any):
        super().__init__(**kwargs)
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_requests = 0  # tokens issued: tests assert the bridge caches them
        self.client_requests = 0  # client lookups answered 200
        self._tokens: set[str] = set()
        self._clients: dict[str, dict[str, Any]] = {}
        self.route("POST", AUTH_PATH, self._auth)
        self.route_prefix("GET", CLIENTS_PREFIX, self._client)

    @property
    def api_url(self) -> str:
        return self.url + API_PREFIX

    # -- test helpers ------------------------------------------------------------

    def add_client(self, client: dict[str, Any]) -> None:
        with self.lock:
            self._clients[client["id"]] = copy.deepcopy(client)

    def revoke_tokens(self) -> None:
        """Invalidate every issued token (the next lookup gets 401), to test renewal."""
        with self.lock:
            self._tokens.clear()

    def reset_state(self) -> None:
        self.token_requests = 0
        self.client_requests = 0
        self._tokens.clear()
        self._clients.clear()

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
