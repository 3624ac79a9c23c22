"""Signature and token checks, all in constant time.

Every comparison of something secret goes through :func:`equal`, which is ``hmac.compare_digest`` on
bytes: its time does not depend on where the first differing byte is, so a forger learns nothing from
response times.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time


def equal(given: str | bytes | None, expected: str | bytes | None) -> bool:
    """Constant-time equality; ``None`` or empty never matches (an unset secret must not accept "")."""
    if not given or not expected:
        return False
    given_bytes = given.encode() if isinstance(given, str) else given
    expected_bytes = expected.encode() if isinstance(expected, str) else expected
    return hmac.compare_digest(given_bytes, expected_bytes)


def hmac_sha256_hex(secret: str | bytes, message: bytes) -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def hex_signature_matches(secret: str | None, message: bytes, signature: str | None) -> bool:
    """Compare a lower-case hex HMAC-SHA256 of ``message`` with a received hex signature (any case)."""
    if not secret or not signature:
        return False
    return equal(signature.strip().lower(), hmac_sha256_hex(secret, message))


def hmac_digest(secret: bytes, message: bytes, algorithm: str, encoding: str) -> str:
    """HMAC of ``message`` with ``algorithm`` (sha1/sha256/sha512), as lower-case hex or base64."""
    digest = hmac.new(secret, message, getattr(hashlib, algorithm)).digest()
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode()


# Shorter keys can be guessed; the spec advises 24 to 64 random bytes.
STANDARD_WEBHOOKS_MIN_KEY_BYTES = 16


def standard_webhooks_secret(secret: str) -> bytes:
    """The key of a Standard Webhooks secret: base64 after the ``whsec_`` prefix. Anything but strict base64 of at
    least 16 bytes raises ``ValueError``: lenient decoding made ``whsec_!!!!`` an empty key, which anyone can sign
    with. The message never holds the secret."""
    try:
        key = base64.b64decode(secret.strip().removeprefix("whsec_"), validate=True)
    except (ValueError, TypeError):  # binascii.Error is a ValueError
        raise ValueError("is not base64 after its whsec_ prefix") from None
    if len(key) < STANDARD_WEBHOOKS_MIN_KEY_BYTES:
        raise ValueError(f"decodes to a key of {len(key)} bytes; at least {STANDARD_WEBHOOKS_MIN_KEY_BYTES} are needed")
    return key


def standard_webhooks_signature(secret: str, message_id: str, timestamp: str, body: bytes) -> str:
    """``v1,<base64 HMAC-SHA256 of "id.timestamp.body">`` (Standard Webhooks v1.0.0)."""
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + hmac_digest(standard_webhooks_secret(secret), signed, "sha256", "base64")


def standard_webhooks_valid(secret: str, headers, body: bytes, tolerance_seconds: int, now: float | None = None) -> bool:
    """Check ``webhook-id``/``webhook-timestamp``/``webhook-signature`` the way the spec's reference library does:
    timestamp within tolerance either side, any ``v1`` signature of the space-separated list matching."""
    message_id = headers.get("webhook-id")
    timestamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature")
    if not message_id or not timestamp or not signatures:
        return False
    try:
        sent_at = int(timestamp)
    except ValueError:
        return False
    if abs((time.time() if now is None else now) - sent_at) > tolerance_seconds:
        return False
    try:
        expected = standard_webhooks_signature(secret, message_id, timestamp, body)
    except (ValueError, TypeError):  # a secret that is not base64, or too short a key: nothing verifies
        return False
    return any(equal(candidate, expected) for candidate in signatures.split(" ") if candidate.startswith("v1,"))
