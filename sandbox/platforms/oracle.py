"""Oracle OPERA Cloud in the sandbox: an emulator of the OHIP (Oracle Hospitality Integration Platform) pieces
the bridge uses (docs/platforms.md, "OPERA Cloud"; oracle/hospitality-api-docs rest-api-specs/property/), the
sandbox's credentials and the sample guest. OPERA sends no webhooks: its events are pulled.

- POST /oauth/v1/tokens (oauth.json): Basic client id:secret, ``x-app-key``, optional ``enterpriseId``
  header, form ``grant_type=client_credentials`` + ``scope``; tokens last an hour.
- GET /int/v1/externalSystem/{extSystemCode}/hotels/{hotelId}/businessEvents?limit=N (int.json): a
  destructive dequeue of at most ``limit`` (≤ 20) events of one hotel; 204 when there are none.
- GET /crm/v1/profiles/{profileId} (crm.json ``getProfile``): 404 when unknown.

Every API call needs ``authorization: Bearer <token>``, ``x-app-key`` and ``x-hotelid``.
"""

from __future__ import annotations

import base64
import copy
import hmac
import secrets
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sandbox.emulators.base import EmulatorServer, Request
from sandbox.platforms import Sample, fixture, guest_uuid

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

TOKEN_PATH = "/oauth/v1/tokens"
EVENTS_PREFIX = "/int/v1/externalSystem/"
PROFILES_PREFIX = "/crm/v1/profiles/"
DEFAULT_SCOPE = "urn:opc:hgbu:ws:__myscopes__"
MAX_LIMIT = 20


def make_event(event_id: str, action: str, primary_key: str, hotel_id: str = "HOTEL1",
               module: str = "Profile", created: str = "2026-11-26 10:00:00.0") -> dict[str, Any]:
    """One ``businessEventData`` item in the documented shape (details left out: the bridge ignores them)."""
    return {
        "businessEvent": {
            "header": {
                "moduleName": module,
                "actionType": action,
                "actionId": str(500000 + abs(hash(event_id)) % 100000),
                "primaryKey": primary_key,
                "publisherId": "57475",
                "createdDateTime": created,
                "hotelId": hotel_id,
            },
            "details": [],
        },
        "businessEventId": {"id": event_id},
    }


def _error(status: int, title: str) -> tuple[int, dict[str, Any]]:
    return status, {"type": "https://www.rfc-editor.org/rfc/rfc9110.html", "title": title, "status": status}


class OhipEmulator(EmulatorServer):
    def __init__(self, clients: dict[str, str], app_keys: set[str], external_system_code: str,
                 enterprise_id: str | None = None, scope: str = DEFAULT_SCOPE, **kwargs: Any):
        super().__init__(**kwargs)
        self.clients = dict(clients)  # client id -> client secret
        self.app_keys = set(app_keys)
        self.external_system_code = external_system_code
        self.enterprise_id = enterprise_id
        self.scope = scope
        self.token_requests = 0
        self.dequeue_calls = 0
        self.profile_calls = 0
        self._tokens: set[str] = set()
        self._queues: dict[str, deque[dict[str, Any]]] = {}
        self._profiles: dict[str, dict[str, Any]] = {}
        self.route("POST", TOKEN_PATH, self._token)
        self.route_prefix("GET", EVENTS_PREFIX, self._authorised(self._business_events))
        self.route_prefix("GET", PROFILES_PREFIX, self._authorised(self._profile))

    # -- test helpers ------------------------------------------------------------

    def enqueue(self, hotel_id: str, *items: dict[str, Any]) -> None:
        """Business events OPERA queued for our external system at ``hotel_id``."""
        with self.lock:
            self._queues.setdefault(hotel_id, deque()).extend(copy.deepcopy(item) for item in items)

    def queued(self, hotel_id: str) -> int:
        with self.lock:
            return len(self._queues.get(hotel_id, ()))

    def add_profile(self, profile_id: str, response: dict[str, Any]) -> None:
        with self.lock:
            self._profiles[profile_id] = copy.deepcopy(response)

    def revoke_tokens(self) -> None:
        with self.lock:
            self._tokens.clear()

    def reset_state(self) -> None:
        self.token_requests = self.dequeue_calls = self.profile_calls = 0
        self._tokens.clear()
        self._queues.clear()
        self._profiles.clear()

    # -- handlers ------------------------------------------------------------------

    def _token(self, request: Request):
        scheme, _, encoded = request.headers.get("authorization", "").partition(" ")
        try:
            client_id, _, secret = base64.b64decode(encoded).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            client_id, secret = "", ""
        expected = self.clients.get(client_id)
        if scheme.lower() != "basic" or expected is None or not hmac.compare_digest(secret, expected):
            return 401, {"error": "invalid_client"}
        if request.headers.get("x-app-key") not in self.app_keys:
            return 401, {"error": "invalid_client", "error_description": "unknown application key"}
        if self.enterprise_id and request.headers.get("enterpriseid") != self.enterprise_id:
            return 400, {"error": "invalid_request", "error_description": "enterpriseId"}
        form = request.form()
        if form.get("grant_type") != "client_credentials":
            return 400, {"error": "unsupported_grant_type"}
        if form.get("scope") != self.scope:
            return 401, {"error": "invalid_scope"}
        with self.lock:
            self.token_requests += 1
            token = secrets.token_urlsafe(24)
            self._tokens.add(token)
        return 200, {"access_token": token, "expires_in": 3600, "token_type": "Bearer",
                     "oracle_tk_context": "user_assertion"}

    def _authorised(self, handler):
        def wrapped(request: Request):
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            with self.lock:
                valid = scheme.lower() == "bearer" and token in self._tokens
            if not valid:
                return _error(401, "Unauthorized")
            if request.headers.get("x-app-key") not in self.app_keys:
                return _error(401, "Invalid application key")
            if not request.headers.get("x-hotelid"):
                return _error(400, "x-hotelid is required")
            return handler(request)

        return wrapped

    def _business_events(self, request: Request):
        # /int/v1/externalSystem/{extSystemCode}/hotels/{hotelId}/businessEvents
        parts = request.route[len(EVENTS_PREFIX):].split("/")
        if len(parts) != 4 or parts[1] != "hotels" or parts[3] != "businessEvents":
            return _error(404, "Not Found")
        ext_system, hotel_id = parts[0], parts[2]
        if ext_system != self.external_system_code:
            return _error(404, "External system not found")
        try:
            limit = int(request.query.get("limit", MAX_LIMIT))
        except ValueError:
            return _error(400, "limit must be an integer")
        if not 1 <= limit <= MAX_LIMIT:
            return _error(400, f"The maximum allowable limit for this API is {MAX_LIMIT}")
        with self.lock:
            self.dequeue_calls += 1
            queue = self._queues.get(hotel_id, deque())
            items = [queue.popleft() for _ in range(min(limit, len(queue)))]
        if not items:
            return 204, None
        return 200, {"businessEventData": items, "dataValueMapping": []}

    def _profile(self, request: Request):
        profile_id = request.route[len(PROFILES_PREFIX):]
        with self.lock:
            self.profile_calls += 1
            profile = self._profiles.get(profile_id)
        if profile is None:
            return _error(404, "Profile not found")
        return 200, copy.deepcopy(profile)


# -- the sandbox's OPERA Cloud ----------------------------------------------------------------------

SECRETS = {
    "oracle_client_id": "sandbox-ohip-client",
    "oracle_client_secret": "sandbox-ohip-secret",
    "oracle_app_key": "sandbox-ohip-app-key",
}
HOTEL, SYSTEM = "HOTEL1", "FULLWHERE"  # the hotel the bridge pulls, and its external system code


def emulator() -> OhipEmulator:
    return OhipEmulator(clients={SECRETS["oracle_client_id"]: SECRETS["oracle_client_secret"]},
                        app_keys={SECRETS["oracle_app_key"]}, external_system_code=SYSTEM)


def environment(emulator: OhipEmulator) -> dict[str, str]:
    return {
        "ORACLE_GATEWAY_URL": emulator.url,
        "ORACLE_CLIENT_ID": SECRETS["oracle_client_id"],
        "ORACLE_CLIENT_SECRET": SECRETS["oracle_client_secret"],
        "ORACLE_APP_KEY": SECRETS["oracle_app_key"],
        "ORACLE_EXTERNAL_SYSTEM_CODE": SYSTEM,
        "ORACLE_HOTEL_IDS": HOTEL,
    }


def sign(body: bytes, environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    raise NotImplementedError("OPERA Cloud sends no webhooks (events are pulled): there is no request to sign")


def _build(sandbox: Sandbox, n: int) -> None:
    """Puts the guest's profile and its NEW PROFILE business event in OHIP, for the scheduled pull."""
    profile_id = str(5000000 + n)
    profile = copy.deepcopy(fixture("oracle/profile.json"))
    profile["profileIdList"] = [{"type": "Profile", "id": profile_id}]
    details = profile["profileDetails"]
    details["customer"]["personName"][0].update(givenName=f"Guest{n}", surname="Opera")
    details.setdefault("emails", {})["emailInfo"] = [
        {"email": {"emailAddress": f"guest{n}@opera.sandbox.example", "primaryInd": True, "type": "HOME"}}]
    details.pop("telephones", None)
    ohip = sandbox.platforms["oracle"]
    ohip.add_profile(profile_id, profile)
    ohip.enqueue(HOTEL, make_event(guest_uuid("oracle-event", n), "NEW PROFILE", profile_id, hotel_id=HOTEL))
    return None


SAMPLE = Sample("oracle", "oracleId", _build, lambda n: str(5000000 + n), pulled=True)
