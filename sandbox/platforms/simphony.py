"""Oracle Simphony in the sandbox: the bridge calls no Simphony API (its notifications carry no guest),
so there is no emulator; its HMAC key, its signing and its sample notification."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chalicelib.core.errors import SettingsError
from sandbox.platforms import Sample, fixture, guest_uuid, required

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

SECRETS = {
    "simphony_key_id": "sandbox-simphony-key",
    "simphony_key": "c2FuZGJveC1zaW1waG9ueS1obWFjLWtleS0zMi1ieXRlcyE=",
}


def environment(emulator: None = None) -> dict[str, str]:
    return {"SIMPHONY_HMAC_KEYS": json.dumps({SECRETS["simphony_key_id"]: SECRETS["simphony_key"]})}


def sign(body: bytes, environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``Digest``: Base64 HMAC-SHA256 of the body with the first key of ``SIMPHONY_HMAC_KEYS``, named by ``Key-Id``."""
    try:
        keys = json.loads(required(environ, "SIMPHONY_HMAC_KEYS"))
        key_id, encoded = next(iter(keys.items()))
        key = base64.b64decode(encoded, validate=True)
    except (ValueError, AttributeError, TypeError, StopIteration, binascii.Error):
        raise SettingsError('SIMPHONY_HMAC_KEYS must be a JSON object {"<keyId>": "<base64 hmacKey>"}') from None
    digest = base64.b64encode(hmac.new(key, body, hashlib.sha256).digest()).decode()
    return {"Content-Type": "application/json", "Key-Id": key_id, "Digest": digest}, {}


def _build(sandbox: Sandbox, n: int) -> dict[str, Any]:
    payload = fixture("simphony/check_notification.json")
    payload["messages"][0]["id"] = guest_uuid("simphony", n)
    return payload


SAMPLE = Sample("simphony", "oracleId", _build, lambda n: "", imports=False)
