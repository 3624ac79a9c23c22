"""Chr365 (a declarative source) in the sandbox: its entry of the sources document, its secret, webhook
signing and the sample guest. The bridge calls no Chr365 API, so there is no emulator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox.platforms import Sample

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

SECRETS = {"chr365": "sandbox-chr365-secret"}


def source(emulator: None) -> dict[str, Any]:
    return {"name": "chr365", "preset": "chr365", "auth": {"type": "hmac", "header": "X-Chr365-Signature", "secret": SECRETS["chr365"]}}


def _build(sandbox: Sandbox, n: int) -> dict[str, Any]:
    return {"customers": [{"client_id": f"c-{n}", "firstname": f"Guest{n}", "lastname": "Chr",
                           "mail": f"guest{n}@chr365.sandbox.example"}]}


SAMPLE = Sample("chr365", "chr365Id", _build, lambda n: f"c-{n}")
