"""Groupe Partouche (a declarative source) in the sandbox: its entry of the sources document, its secret, webhook
signing and the sample guest. The bridge calls no Groupe Partouche API, so there is no emulator."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sandbox.platforms import Sample

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

SECRETS = {"partouche": "sandbox-partouche-token"}


def source(emulator: None) -> dict[str, Any]:
    return {"name": "partouche", "preset": "partouche", "auth": {"type": "token", "query": "token", "secret": SECRETS["partouche"]}}


def _build(sandbox: Sandbox, n: int) -> dict[str, Any]:
    return {"event": "customer.created", "customer": {"player_id": 700000 + n, "prenom": f"Guest{n}",
                                                      "nom": "Partouche", "email": f"guest{n}@partouche.sandbox.example"}}


SAMPLE = Sample("partouche", "partoucheId", _build, lambda n: str(700000 + n))
