"""The registry of platform connectors: one module per platform, listed here once.

Adding a platform = writing ``chalicelib/connectors/<platform>.py`` with a
:class:`~chalicelib.connectors.base.Connector` subclass and adding it to ``_CONNECTORS``.
"""

from __future__ import annotations

from chalicelib.connectors.base import Connector
from chalicelib.connectors.deliveroo import DeliverooConnector
from chalicelib.connectors.mews import MewsConnector
from chalicelib.connectors.ubereats import UberEatsConnector

_CONNECTORS: dict[str, Connector] = {
    connector.name: connector
    for connector in (DeliverooConnector(), UberEatsConnector(), MewsConnector())
}


def get_connector(platform: str) -> Connector | None:
    return _CONNECTORS.get(platform)


def platform_names() -> list[str]:
    return list(_CONNECTORS)


def all_connectors() -> list[Connector]:
    return list(_CONNECTORS.values())
