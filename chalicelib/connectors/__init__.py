"""The registry of platform connectors: one module per platform, listed here once.

Adding a platform = writing ``chalicelib/connectors/<platform>.py`` with a
:class:`~chalicelib.connectors.base.Connector` subclass and adding it to ``_CONNECTORS``; or, for a
platform described by configuration alone, adding it to the sources document (:mod:`chalicelib.sources`).
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
    """The built-in connector, else the declarative source of that name (may raise SettingsError)."""
    return _CONNECTORS.get(platform) or _declarative().get(platform)


def builtin_names() -> list[str]:
    return list(_CONNECTORS)


def platform_names() -> list[str]:
    return [*_CONNECTORS, *_declarative()]


def all_connectors() -> list[Connector]:
    return [*_CONNECTORS.values(), *_declarative().values()]


_declarative_cache: tuple[object, dict[str, Connector]] | None = None


def _declarative() -> dict[str, Connector]:
    """One connector per declarative source, rebuilt only when the sources are reloaded."""
    global _declarative_cache
    from chalicelib.connectors.declarative import DeclarativeConnector
    from chalicelib.sources import get_sources

    sources = get_sources()
    if _declarative_cache is None or _declarative_cache[0] is not sources:
        _declarative_cache = (sources, {name: DeclarativeConnector(source) for name, source in sources.items()})
    return _declarative_cache[1]
