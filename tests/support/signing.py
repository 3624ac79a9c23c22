"""Each platform's real signing scheme, used by tests to sign fixtures exactly as the platform would."""

from __future__ import annotations

import hashlib
import hmac


def hmac_hex(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def deliveroo_headers(body: bytes, secret: str, guid: str = "1499765769", legacy: bool = False) -> dict[str, str]:
    """``X-Deliveroo-Hmac-Sha256`` = hex HMAC-SHA256 of ``GUID + " " + body`` (legacy: ``GUID + " \\n " + body``)."""
    separator = b" \n " if legacy else b" "
    return {
        "Content-Type": "application/json",
        "X-Deliveroo-Sequence-Guid": guid,
        "X-Deliveroo-Hmac-Sha256": hmac_hex(secret, guid.encode() + separator + body),
    }


def ubereats_headers(body: bytes, client_secret: str) -> dict[str, str]:
    """``X-Uber-Signature`` = lower-case hex HMAC-SHA256 of the raw body with the client secret."""
    return {"Content-Type": "application/json", "X-Uber-Signature": hmac_hex(client_secret, body)}


def hmac_base64(secret: str, message: bytes, algorithm=hashlib.sha256) -> str:
    import base64

    return base64.b64encode(hmac.new(secret.encode(), message, algorithm).digest()).decode()


def standard_webhooks_headers(body: bytes, secret: str, message_id: str, timestamp: int) -> dict[str, str]:
    """Standard Webhooks v1: ``webhook-signature: v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>``,
    the key being the base64 after ``whsec_``."""
    import base64

    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{message_id}.{timestamp}.".encode() + body
    signature = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp), "webhook-signature": f"v1,{signature}"}
