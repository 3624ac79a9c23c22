"""The registry of platform connectors: one module per platform, listed here once.

Adding a platform = writing ``chalicelib/connectors/<platform>.py`` with a
:class:`~chalicelib.connectors.base.Connector` subclass and adding it to ``_BUILTIN``; or, for a
platform described by configuration alone, adding it to the sources document (:mod:`chalicelib.sources`).
"""

from __future__ import annotations

import importlib
import threading

from chalicelib.connectors.base import Connector

# Platform → (module, class). A connector's module (and its payload models) is imported on first use,
# so a cold start pays for the one platform it serves, not all of them (docs/performance.md).
_BUILTIN: dict[str, tuple[str, str]] = {
    "deliveroo": ("chalicelib.connectors.deliveroo", "DeliverooConnector"),
    "ubereats": ("chalicelib.connectors.ubereats", "UberEatsConnector"),
    "mews": ("chalicelib.connectors.mews", "MewsConnector"),
    "thefork": ("chalicelib.connectors.thefork", "TheForkConnector"),
    "meta": ("chalicelib.connectors.meta", "MetaLeadAdsConnector"),
    "sevenrooms": ("chalicelib.connectors.sevenrooms", "SevenRoomsConnector"),
    "zelty": ("chalicelib.connectors.zelty", "ZeltyConnector"),
    "oracle": ("chalicelib.connectors.oracle", "OracleOperaConnector"),
    "simphony": ("chalicelib.connectors.simphony", "OracleSimphonyConnector"),
}
_loaded: dict[str, Connector] = {}
_load_lock = threading.Lock()


def _builtin(platform: str) -> Connector | None:
    connector = _loaded.get(platform)
    if connector is None and platform in _BUILTIN:
        with _load_lock:  # one instance per platform, even when the retry worker's threads race
            connector = _loaded.get(platform)
            if connector is None:
                module, name = _BUILTIN[platform]
                connector = _loaded[platform] = getattr(importlib.import_module(module), name)()
    return connector


def get_connector(platform: str) -> Connector | None:
    """The built-in connector, else the declarative source of that name (may raise SettingsError)."""
    return _builtin(platform) or _declarative().get(platform)


def builtin_names() -> list[str]:
    return list(_BUILTIN)


def platform_names() -> list[str]:
    return [*_BUILTIN, *_declarative()]


def all_connectors() -> list[Connector]:
    return [*(_builtin(name) for name in _BUILTIN), *_declarative().values()]


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
