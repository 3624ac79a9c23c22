"""Oracle Simphony POS: STS Gen2 Notifications (``POST /webhooks/simphony``).

Each notification is verified (``Digest`` = Base64 HMAC-SHA256 of the body, keyed with the key named by
``Key-Id``) and acknowledged, but nothing is imported: notifications name checks, never a guest. Keys,
rotation and why nothing is imported: docs/platforms.md (Oracle Simphony).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

from pydantic import Field

from chalicelib.connectors.base import Connector, Context, Event, ParsedWebhook, WebhookRequest
from chalicelib.connectors.payload import PayloadModel, load_json, validate
from chalicelib.core.errors import SettingsError, unauthorized
from chalicelib.core.signatures import equal
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.domain.tenants import Tenant, base64_key
from chalicelib.infra.settings import SettingsModel, secret


class SimphonySettings(SettingsModel):
    env_prefix, title = "SIMPHONY_", "Oracle Simphony"

    # Parsed when a notification arrives (hmac_keys below), not at load: a malformed value makes this
    # webhook answer 503 without breaking /health or the other platforms.
    hmac_keys: str | None = secret('Simphony notification keys as JSON `{"<keyId>": "<base64 hmacKey>"}`, the '
                                   "pairs you registered (several during a key rotation); the default tenant's: a "
                                   "tenants document gives each tenant its own `hmac_keys`")


class MessageType(PayloadModel):
    id: str = Field(min_length=1)


class Resource(PayloadModel):
    orgShortName: str | None = None


class Message(PayloadModel):
    id: str | None = None
    messageType: MessageType
    # The organisation that registered the key (tenant routing); not every message type is known to carry it.
    resource: Resource | None = None


class Notification(PayloadModel):
    messages: list[Message]


class OracleSimphonyConnector(Connector, platform="simphony", id_field="oracleId",
                              settings=SimphonySettings, secret="hmac_keys"):

    def verify(self, request: WebhookRequest, tenant: Tenant | None = None) -> None:
        # Each organisation registers its own keys: a named tenant's are its hmac_keys in the tenants document.
        if tenant is not None and not tenant.owns_every_account:
            keys = decoded_keys(tenant.own_hmac_keys(self.name), f"tenant {tenant.id!r}'s simphony hmac_keys")
        else:
            keys = hmac_keys(self.webhook_secret())
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

    def parse(self, request: WebhookRequest) -> ParsedWebhook:
        notification = validate(Notification, load_json(request.body), "Simphony notification")
        # Notifications identify checks, configuration or employees, never a guest: nothing to import.
        return ParsedWebhook(events=[], ignored=[message.messageType.id[:80] for message in notification.messages],
                             ignored_accounts={message.resource.orgShortName if message.resource else None
                                               for message in notification.messages})

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
    return decoded_keys(document, "SIMPHONY_HMAC_KEYS")


def decoded_keys(document: dict[str, Any], what: str) -> dict[str, bytes]:
    """Key-Id → raw key bytes; a key that is not Base64 is a SettingsError naming ``what`` and the Key-Id."""
    keys: dict[str, bytes] = {}
    for key_id, encoded in document.items():
        key = base64_key(encoded)
        if not key:
            # The key id is not secret (it travels in every request's Key-Id header).
            raise SettingsError(f"{what}: the key of Key-Id {key_id[:64]!r} is not Base64")
        keys[key_id] = key
    return keys


def body_digest(key: bytes, body: bytes) -> str:
    """Base64(HMAC-SHA256(key, body)), as Simphony sends it in ``Digest``."""
    return base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
