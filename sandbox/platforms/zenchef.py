"""Zenchef (a declarative source) in the sandbox: its entry of the sources document, its secret, webhook
signing and the sample guest. The bridge calls no Zenchef API, so there is no emulator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox.platforms import Sample, fixture

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

SECRETS = {"zenchef": "whsec_c2FuZGJveC16ZW5jaGVmLXNlY3JldC0yNGJ5dGVz"}


def source(emulator: None) -> dict[str, Any]:
    return {"name": "zenchef", "preset": "zenchef", "auth": {"type": "standard_webhooks", "secret": SECRETS["zenchef"]}}


def _build(sandbox: Sandbox, n: int) -> dict[str, Any]:
    payload = fixture("sources/zenchef_booking.json")
    payload["booking"].update(uid=f"bk-{n}", customer_uid=f"cust-{n}", first_name=f"Guest{n}", last_name="Chef",
                              email=f"guest{n}@zenchef.sandbox.example", telephone=None)
    return payload


SAMPLE = Sample("zenchef", "zenchefId", _build, lambda n: f"cust-{n}")
