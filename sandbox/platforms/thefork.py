"""TheFork in the sandbox: an emulator of the API pieces the bridge uses (docs/platforms.md, "TheFork"), the
sandbox's credentials, webhook signing and the sample guest.

- POST /oauth/token: Auth0 client credentials (auth.thefork.io in production), form-encoded as in
  TheFork's own example (``curl -d 'audience=https://api.thefork.io&grant_type=client_credentials&...'``);
  tokens live 8600 s.
- GET /manager/v1/customers/{id} and /manager/v1/reservations/{id} (api.thefork.io/manager in
  production) with ``Authorization: Bearer``; errors in TheFork's documented shape
  ``{"data": {"code": ...}, "error": ..., "statusCode": ...}``.
- GET /manager/v1/customers?groupUuid&startDate&endDate&limit&page (the sweeps): the uuids of a group's customers
  created or updated between two dates (``YYYY-MM-DD``, both included, compared with the UTC date of each
  customer's last change), ``{"data": [uuid, ...], "totalCount", "page", "limit"}``, most recent first; a client
  limited by ``access`` lists only the groups named there (403 otherwise).

Point ``THEFORK_AUTH_URL`` at ``emulator.url`` and ``THEFORK_API_URL`` at ``emulator.api_url``.
"""

from __future__ import annotations

import copy
import hmac
import secrets
from collections.abc import Mapping
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING, Any

from sandbox.emulators.base import EmulatorServer, Request
from sandbox.platforms import Sample, fixture, guest_uuid, required

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

TOKEN_PATH = "/oauth/token"
API_PREFIX = "/manager"
CUSTOMERS_PREFIX = f"{API_PREFIX}/v1/customers/"
CUSTOMERS_LIST = f"{API_PREFIX}/v1/customers"
GROUP = "c1fa3225-690d-4b86-b255-042b3c218b68"  # the sandbox's group (the webhook samples' groupUuid)
RESERVATIONS_PREFIX = f"{API_PREFIX}/v1/reservations/"
AUDIENCE = "https://api.thefork.io"
TOKEN_TTL_SECONDS = 8600  # docs.thefork.io/B2B-API/authentication

UNAUTHORIZED = {"data": {"code": ""}, "error": "Unauthorized", "statusCode": 401}
FORBIDDEN = {"data": {"code": "FORBIDDEN"}, "error": "Forbidden", "statusCode": 403}


def not_found(code: str) -> dict[str, Any]:
    return {"data": {"code": code}, "error": "Not Found", "statusCode": 404}


class TheForkEmulator(EmulatorServer):
    """Token endpoint plus customer and reservation lookups, with bearer-token checks."""

    def __init__(self, clients: dict[str, str] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.clients = dict(clients or {"thefork-client": "thefork-secret"})  # client id -> secret
        self.token_ttl = TOKEN_TTL_SECONDS
        self.token_requests = 0  # tests assert the bridge caches tokens
        self._tokens: dict[str, str] = {}  # token -> client id
        self._customers: dict[str, dict[str, Any]] = {}
        self._changes: dict[str, tuple[str | None, datetime]] = {}  # customer id -> (group uuid, last change)
        self._reservations: dict[str, dict[str, Any]] = {}
        # client id -> customer/reservation ids it may read (None: everything)
        self.access: dict[str, set[str] | None] = {}
        self.route("POST", TOKEN_PATH, self._token)
        self.route("GET", CUSTOMERS_LIST, self._list_customers)
        self.route_prefix("GET", CUSTOMERS_PREFIX, self._lookup(self._customers, CUSTOMERS_PREFIX, "CUSTOMER_NOT_FOUND"))
        self.route_prefix("GET", RESERVATIONS_PREFIX,
                          self._lookup(self._reservations, RESERVATIONS_PREFIX, "RESERVATION_NOT_FOUND"))

    @property
    def api_url(self) -> str:
        return self.url + API_PREFIX

    # -- test helpers ------------------------------------------------------------

    def add_customer(self, customer: dict[str, Any], group: str | None = None,
                     changed: datetime | None = None) -> None:
        """A customer, readable by id; listed under ``group`` as changed at ``changed`` (default: now)."""
        with self.lock:
            self._customers[customer["customerUuid"]] = copy.deepcopy(customer)
            self._changes[customer["customerUuid"]] = (group, changed or datetime.now(timezone.utc))

    def add_reservation(self, reservation: dict[str, Any]) -> None:
        with self.lock:
            self._reservations[reservation["reservationUuid"]] = copy.deepcopy(reservation)

    def revoke_tokens(self) -> None:
        """Invalidate every issued token (the next API call gets 401)."""
        with self.lock:
            self._tokens.clear()

    def token_clients(self) -> list[str]:
        """The client id of every token request, in order."""
        return [r.form().get("client_id", "") for r in self.requests_matching("POST", TOKEN_PATH)]

    def reset_state(self) -> None:
        self.token_ttl = TOKEN_TTL_SECONDS
        self.token_requests = 0
        self._tokens.clear()
        self._customers.clear()
        self._changes.clear()
        self._reservations.clear()
        self.access.clear()

    # -- handlers ------------------------------------------------------------------

    def _token(self, request: Request):
        if not request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            return 400, {"error": "invalid_request", "error_description": "expected a form-encoded body"}
        form = request.form()
        secret = self.clients.get(form.get("client_id", ""))
        if secret is None or not hmac.compare_digest(form.get("client_secret", ""), secret):
            return 401, {"error": "access_denied", "error_description": "Unauthorized"}
        if form.get("grant_type") != "client_credentials":
            return 403, {"error": "unauthorized_client", "error_description": "Grant type not allowed"}
        if form.get("audience") != AUDIENCE:
            return 403, {"error": "access_denied", "error_description": "Service not found"}
        with self.lock:
            self.token_requests += 1
            token = secrets.token_urlsafe(24)
            self._tokens[token] = form["client_id"]
            ttl = self.token_ttl
        return 200, {"access_token": token, "expires_in": ttl, "token_type": "Bearer"}

    def _list_customers(self, request: Request):
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        query = request.query
        with self.lock:
            client_id = self._tokens.get(token) if scheme.lower() == "bearer" else None
            if client_id is None:
                return 401, UNAUTHORIZED
            try:
                group = query["groupUuid"]
                start, end = date.fromisoformat(query["startDate"]), date.fromisoformat(query["endDate"])
                limit, page = int(query.get("limit", 100)), int(query.get("page", 1))
            except (KeyError, ValueError):
                return 400, {"data": {"code": "BAD_REQUEST"}, "error": "Bad Request", "statusCode": 400}
            if not 0 < limit <= 10000 or page < 1:
                return 400, {"data": {"code": "BAD_REQUEST"}, "error": "Bad Request", "statusCode": 400}
            allowed = self.access.get(client_id)
            if allowed is not None and group not in allowed:
                return 403, FORBIDDEN
            changed = sorted(((moment, uuid) for uuid, (owner, moment) in self._changes.items()
                              if owner == group and start <= moment.astimezone(timezone.utc).date() <= end),
                             reverse=True)
        uuids = [uuid for _, uuid in changed]
        return 200, {"data": uuids[(page - 1) * limit:page * limit], "totalCount": len(uuids), "page": page,
                     "limit": limit}

    def _lookup(self, store: dict[str, dict[str, Any]], prefix: str, not_found_code: str):
        def handler(request: Request):
            scheme, _, token = request.headers.get("authorization", "").partition(" ")
            entity_id = request.route[len(prefix):]
            with self.lock:
                client_id = self._tokens.get(token) if scheme.lower() == "bearer" else None
                if client_id is None:
                    return 401, UNAUTHORIZED
                allowed = self.access.get(client_id)
                found = store.get(entity_id)
                if found is None or (allowed is not None and entity_id not in allowed):
                    return 404, not_found(not_found_code)
                return 200, copy.deepcopy(found)

        return handler


# -- the sandbox's TheFork --------------------------------------------------------------------------

SECRETS = {
    "thefork_webhook_token": "sandbox-thefork-token",
    "thefork_client_id": "sandbox-thefork-client",
    "thefork_client_secret": "sandbox-thefork-secret",
}


def emulator() -> TheForkEmulator:
    return TheForkEmulator(clients={SECRETS["thefork_client_id"]: SECRETS["thefork_client_secret"]})


def environment(emulator: TheForkEmulator) -> dict[str, str]:
    return {
        "THEFORK_WEBHOOK_TOKEN": SECRETS["thefork_webhook_token"],
        "THEFORK_CLIENT_ID": SECRETS["thefork_client_id"],
        "THEFORK_CLIENT_SECRET": SECRETS["thefork_client_secret"],
        "THEFORK_API_URL": emulator.api_url,
        "THEFORK_AUTH_URL": emulator.url,
        "THEFORK_SWEEP_ACCOUNTS": GROUP,
    }


def sign(body: bytes, environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """TheFork signs nothing: the webhook URL carries the token (``?token=``)."""
    return {"Content-Type": "application/json"}, {"token": required(environ, "THEFORK_WEBHOOK_TOKEN")}


def _build(sandbox: Sandbox, n: int) -> dict[str, Any]:
    customer_uuid = guest_uuid("thefork", n)
    customer = {**fixture("thefork/customer.json"), "customerUuid": customer_uuid, "firstName": f"Guest{n}",
                "lastName": "Fork", "email": f"guest{n}@thefork.sandbox.example", "phone": None}
    sandbox.platforms["thefork"].add_customer(customer, group=GROUP)
    return {**fixture("thefork/customer_created.json"), "uuid": customer_uuid}


SAMPLE = Sample("thefork", "theForkId", _build, lambda n: guest_uuid("thefork", n))
