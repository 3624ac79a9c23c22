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
