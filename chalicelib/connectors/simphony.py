"""Oracle Simphony POS: STS Gen2 Notifications (``POST /webhooks/simphony``).

Authentication [vendor docs, ../shared/platforms/hospitality.md §2.2.1]: every notification carries a
``Digest`` header, the Base64 of the HMAC-SHA256 of the raw (ASCII) body keyed with the Base64-decoded
``hmacKey`` the integrator registered, and a ``Key-Id`` header naming that key. ``SIMPHONY_HMAC_KEYS``
is a JSON object ``{"<keyId>": "<base64 hmacKey>"}``: several keys may be listed, so a key can be
rotated (``PUT …/notifications/registration``) without refusing notifications signed with the old one.
An unknown ``Key-Id``, a missing or wrong ``Digest``, or no keys configured: 401. Keys that are not a
JSON object of Base64 strings are a configuration error: 503, and Simphony's notification is lost
(it never retries), so check the setting when you deploy.

No guest is imported. A ``CheckNotification`` carries ``checkRef`` and a status only [vendor docs];
the check itself (``GET {basePath}/checks/{checkRef}``) has no documented guest identity, so the
bridge verifies each notification and acknowledges it (200, within Simphony's 15 s, no retries on
their side) and counts every message as ``ignored``. ``map`` is never reached.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

from pydantic import Field

from chalicelib.connectors.base import (
    Connector,
    Context,
    Event,
    ParsedWebhook,
    PayloadModel,
    WebhookRequest,
    load_json,
    validate,
)
from chalicelib.core.errors import SettingsError, unauthorized
from chalicelib.core.signatures import equal
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.infra.settings import Settings


class MessageType(PayloadModel):
    id: str = Field(min_length=1)


class Message(PayloadModel):
    id: str | None = None
    messageType: MessageType


class Notification(PayloadModel):
    messages: list[Message]


class OracleSimphonyConnector(Connector):
    name = "simphony"
    secret_setting = "simphony_hmac_keys"
    id_field = "oracleId"

    def verify(self, request: WebhookRequest, settings: Settings) -> None:
        keys = hmac_keys(self.webhook_secret(settings))
        key_id = (request.header("key-id") or "").strip()
        digest = (request.header("digest") or "").strip()
        if not key_id:
            raise unauthorized("missing Key-Id header")
        if not digest:
            raise unauthorized("missing Digest header")
        key = keys.get(key_id)
        if key is None:
            raise unauthorized("unknown Key-Id")
        if not equal(digest, body_digest(key, request.body)):
            raise unauthorized("Simphony Digest does not match")

    def sign(self, body: bytes, settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
        keys = hmac_keys(self.webhook_secret(settings))
        key_id, key = next(iter(keys.items()))
        return {"Content-Type": "application/json", "Key-Id": key_id, "Digest": body_digest(key, body)}, {}

    def parse(self, request: WebhookRequest) -> ParsedWebhook:
        notification = validate(Notification, load_json(request.body), "Simphony notification")
        # Notifications identify checks, configuration or employees, never a guest: nothing to import.
        return ParsedWebhook(events=[], ignored=[message.messageType.id[:80] for message in notification.messages])

    def map(self, guest: dict[str, Any], event: Event, context: Context) -> CustomerImport:
        raise NotImplementedError("Simphony notifications carry no guest: nothing is mapped")


def hmac_keys(setting: str) -> dict[str, bytes]:
    """``SIMPHONY_HMAC_KEYS`` decoded: Key-Id → raw key bytes. A malformed value is a SettingsError (503)."""
    try:
        document = json.loads(setting)
    except json.JSONDecodeError:
        raise SettingsError("SIMPHONY_HMAC_KEYS is not valid JSON") from None
    if not isinstance(document, dict) or not document:
        raise SettingsError("SIMPHONY_HMAC_KEYS must be a JSON object {\"<keyId>\": \"<base64 hmacKey>\"}")
    keys: dict[str, bytes] = {}
    for key_id, encoded in document.items():
        try:
            key = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else b""
        except (binascii.Error, ValueError):
            key = b""
        if not key:
            # The key id is not secret (it travels in every request's Key-Id header).
            raise SettingsError(f"SIMPHONY_HMAC_KEYS: the key of Key-Id {key_id[:64]!r} is not Base64")
        keys[key_id] = key
    return keys


def body_digest(key: bytes, body: bytes) -> str:
    """Base64(HMAC-SHA256(key, body)), as Simphony sends it in ``Digest``."""
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
