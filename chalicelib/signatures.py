"""Signature and token checks, all in constant time.

Every comparison of something secret goes through :func:`equal`, which is ``hmac.compare_digest`` on
bytes: its time does not depend on where the first differing byte is, so a forger learns nothing from
response times.
"""

from __future__ import annotations

import hashlib
import hmac


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
