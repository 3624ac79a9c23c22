"""The registry of platform connectors: one module per platform, listed here once.

Adding a platform = writing ``chalicelib/connectors/<platform>.py`` with a
:class:`~chalicelib.connectors.base.Connector` subclass and adding it to ``_CONNECTORS``.
"""

from __future__ import annotations

from chalicelib.connectors.base import Connector
from chalicelib.connectors.deliveroo import DeliverooConnector
from chalicelib.connectors.meta import MetaLeadAdsConnector
from chalicelib.connectors.mews import MewsConnector
from chalicelib.connectors.oracle import OracleOperaConnector
from chalicelib.connectors.sevenrooms import SevenRoomsConnector
from chalicelib.connectors.simphony import OracleSimphonyConnector
from chalicelib.connectors.thefork import TheForkConnector
from chalicelib.connectors.ubereats import UberEatsConnector
from chalicelib.connectors.zelty import ZeltyConnector

_CONNECTORS: dict[str, Connector] = {
    connector.name: connector
    for connector in (
        DeliverooConnector(),
        UberEatsConnector(),
        MewsConnector(),
        TheForkConnector(),
        MetaLeadAdsConnector(),
        SevenRoomsConnector(),
        ZeltyConnector(),
        OracleOperaConnector(),
        OracleSimphonyConnector(),
    )
}


def get_connector(platform: str) -> Connector | None:
    return _CONNECTORS.get(platform)


def platform_names() -> list[str]:
    return list(_CONNECTORS)


def all_connectors() -> list[Connector]:
    return list(_CONNECTORS.values())
