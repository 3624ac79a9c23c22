"""Zelty in the sandbox: its webhook secret, webhook signing and the sample guest; and, for the tests, an
emulator of Zelty's webhook registration and of the deliveries it then sends (docs/platforms.md, "Zelty").

The bridge never calls Zelty (the customer travels in the webhook), so the sandbox runs no Zelty emulator
(``emulator()`` is None); :class:`ZeltyEmulator` plays the side an operator and Zelty play:

- ``POST /webhooks`` (``Authorization: Bearer <API key>``): ``{"<event_name>": {"target", "version"}, ...,
  "secret_key": "..."}``. The secret is chosen by the integrator; ``version`` is ``v1`` or ``v2`` (``2``
  is refused, as integrators report). Where ``secret_key`` goes in the body is unknown: top level here.
- ``GET /webhooks``: the registrations and the masked secret.
- :meth:`ZeltyEmulator.delivery`: the request Zelty would send for one event, following its
  registration: a ``v2`` body carries ``x-zelty-hmac-sha256`` = hex HMAC-SHA256 of the raw body with the
  secret; a ``v1`` body arrives bare.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chalicelib.core.signatures import hmac_sha256_hex
from sandbox.emulators.base import EmulatorServer, HttpError, Request
from sandbox.platforms import Sample, fixture, guest_uuid, required

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

VERSIONS = ("v1", "v2")


class ZeltyEmulator(EmulatorServer):
    def __init__(self, api_key: str, **kwargs: Any):
        super().__init__(**kwargs)
        self.api_key = api_key
        self.route("POST", "/webhooks", self._register)
        self.route("GET", "/webhooks", self._list)
        self.reset_state()

    def reset_state(self) -> None:
        self.webhooks: dict[str, dict[str, str]] = {}
        self.secret_key: str | None = None

    # -- the API an operator calls ------------------------------------------------------------
    def _authorise(self, request: Request) -> None:
        if request.headers.get("authorization") != f"Bearer {self.api_key}":
            raise HttpError(401, {"error": "Unauthorized"})

    def _register(self, request: Request) -> tuple[int, Any]:
        self._authorise(request)
        if not isinstance(request.body, dict):
            raise HttpError(400, {"error": "body must be a JSON object"})
        body = dict(request.body)
        secret = body.pop("secret_key", None)
        for event_name, registration in body.items():
            if not isinstance(registration, dict) or not registration.get("target"):
                raise HttpError(400, {"error": f"{event_name}: target is required"})
            if registration.get("version") not in VERSIONS:
                raise HttpError(400, {"error": f"{event_name}: version must be one of {list(VERSIONS)}"})
        with self.lock:
            if secret is not None:
                self.secret_key = str(secret)
            for event_name, registration in body.items():
                self.webhooks[event_name] = {"target": registration["target"], "version": registration["version"]}
        return self._list(request)

    def _list(self, request: Request) -> tuple[int, Any]:
        self._authorise(request)
        with self.lock:
            return 200, {"secret_key": "****" if self.secret_key else None, "webhooks": dict(self.webhooks)}

    # -- what Zelty sends ---------------------------------------------------------------------
    def envelope(self, event_name: str, data: Any, restaurant_id: int | None = 10445, brand_id: int | None = 1,
                 event_id: str | None = None) -> dict[str, Any]:
        """The documented envelope (``version`` follows the registration: "2" for v2)."""
        registration = self._registration(event_name)
        return {
            "event_id": event_id or str(uuid.uuid4()),
            "event_name": event_name,
            "created_at": "2026-08-28T09:00:00Z",
            "version": registration["version"].lstrip("v"),
            "brand_id": brand_id,
            "restaurant_id": restaurant_id,
            "data": data,
        }

    def delivery(self, payload: dict[str, Any] | bytes, event_name: str | None = None) -> tuple[str, bytes, dict[str, str]]:
        """``(target, body, headers)`` of Zelty's POST for ``payload`` (an envelope, or raw bytes)."""
        body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        name = event_name or (payload.get("event_name") if isinstance(payload, dict) else None)
        registration = self._registration(name)
        headers = {"Content-Type": "application/json"}
        if registration["version"] == "v2" and self.secret_key:
            headers["x-zelty-hmac-sha256"] = hmac.new(self.secret_key.encode(), body, hashlib.sha256).hexdigest()
        return registration["target"], body, headers

    def _registration(self, event_name: str | None) -> dict[str, str]:
        with self.lock:
            registration = self.webhooks.get(event_name or "")
        if registration is None:
            raise LookupError(f"no webhook registered for {event_name!r}: Zelty would not send it")
        return registration


# -- the sandbox's Zelty ----------------------------------------------------------------------------

SECRETS = {"zelty": "sandbox-zelty-secret"}


def environment(emulator: None = None) -> dict[str, str]:
    return {"ZELTY_WEBHOOK_SECRET": SECRETS["zelty"]}


def sign(body: bytes, environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``x-zelty-hmac-sha256``: hex HMAC-SHA256 of the body with the webhook secret (a ``v2`` registration)."""
    return {"x-zelty-hmac-sha256": hmac_sha256_hex(required(environ, "ZELTY_WEBHOOK_SECRET"), body)}, {}


def _build(sandbox: Sandbox, n: int) -> dict[str, Any]:
    payload = fixture("zelty/order_ended.json")
    payload["event_id"] = guest_uuid("zelty-event", n)
    payload["data"]["id"] = 88000000 + n
    payload["data"]["customer"].update(id=4800000 + n, fname=f"Guest{n}", name="Zelty",
                                       mail=f"guest{n}@zelty.sandbox.example", phone=None)
    return payload


SAMPLE = Sample("zelty", "zeltyId", _build, lambda n: str(4800000 + n))
