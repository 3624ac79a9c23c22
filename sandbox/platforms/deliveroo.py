"""Deliveroo in the sandbox: the bridge calls no Deliveroo API (the guest travels in the webhook), so
there is no emulator; its webhook secret, its signing and its sample guest."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from chalicelib.core.signatures import hmac_sha256_hex
from sandbox.platforms import Sample, fixture, guest_uuid, required

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

SECRETS = {"deliveroo": "sandbox-deliveroo-webhook-secret"}


def environment(emulator: None = None) -> dict[str, str]:
    return {"DELIVEROO_WEBHOOK_SECRET": SECRETS["deliveroo"]}


def sign(body: bytes, environ: Mapping[str, str], guid: str | None = None) -> tuple[dict[str, str], dict[str, str]]:
    """``X-Deliveroo-Hmac-Sha256``: hex HMAC-SHA256 of ``<sequence guid> <body>``."""
    secret = required(environ, "DELIVEROO_WEBHOOK_SECRET")
    guid = guid or uuid.uuid4().hex
    return {"X-Deliveroo-Sequence-Guid": guid,
            "X-Deliveroo-Hmac-Sha256": hmac_sha256_hex(secret, guid.encode() + b" " + body)}, {}


def _build(sandbox: Sandbox, n: int) -> dict[str, Any]:
    payload = fixture("deliveroo/order_new_loyalty.json")
    order = payload["body"]["order"]
    order["id"] = f"gb:{guest_uuid('deliveroo-order', n)}"
    order["customer"]["first_name"] = f"Guest{n} D."
    order["customer"]["loyalty"] = {"loyalty_id": f"LOY-{n}", "card_number": f"{n:06d}"}
    return payload


SAMPLE = Sample("deliveroo", "deliverooId", _build, lambda n: f"loyalty:LOY-{n}")
