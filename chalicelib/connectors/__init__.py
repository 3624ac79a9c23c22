"""The connectors: one module per platform behind :class:`~chalicelib.connectors.base.Connector`.

Built-in platforms are listed in :mod:`chalicelib.core.registry`; platforms described by configuration
alone come from the sources document (:mod:`chalicelib.domain.sources`) and are served by
:class:`~chalicelib.connectors.declarative.DeclarativeConnector`.
"""

from __future__ import annotations

import importlib
import threading

from chalicelib.connectors.base import Connector
from chalicelib.core import registry
from chalicelib.infra.settings import Settings, SettingsModel

_loaded: dict[str, Connector] = {}
_load_lock = threading.Lock()


def _builtin(platform: str) -> Connector | None:
    connector = _loaded.get(platform)
    if connector is None:
        location = registry.location(platform)
        if location is None:
            return None
        with _load_lock:  # one instance per platform, even when the retry worker's threads race
            connector = _loaded.get(platform)
            if connector is None:
                module, name = location
                connector = _loaded[platform] = getattr(importlib.import_module(module), name)()
    return connector


def get_connector(platform: str) -> Connector | None:
    """The built-in connector, else the declarative source of that name (may raise SettingsError)."""
    return _builtin(platform) or _declarative().get(platform)


def builtin_names() -> list[str]:
    return registry.builtin_names()


def platform_names() -> list[str]:
    return [*registry.builtin_names(), *_declarative()]


def all_connectors() -> list[Connector]:
    return [*(_builtin(name) for name in registry.builtin_names()), *_declarative().values()]


def loaded_platform_names() -> set[str]:
    """The platforms a metric may be counted under: the built-in ones, and the declarative sources if this
    container has loaded them (loading them only to bound a metric would cost a cold start)."""
    known = set(registry.builtin_names())
    if _declarative_cache is not None:
        known.update(_declarative_cache[1])
    return known


_declarative_cache: tuple[object, dict[str, Connector]] | None = None


def _declarative() -> dict[str, Connector]:
    """One connector per declarative source, rebuilt only when the sources are reloaded."""
    global _declarative_cache
    from chalicelib.connectors.declarative import DeclarativeConnector
    from chalicelib.domain.sources import get_sources

    sources = get_sources()
    if _declarative_cache is None or _declarative_cache[0] is not sources:
        _declarative_cache = (sources, {name: DeclarativeConnector(source) for name, source in sources.items()})
    return _declarative_cache[1]


def settings_models() -> list[type[SettingsModel]]:
    """Every group of settings: the bridge-wide one, each built-in platform's, and the declarative sources'
    (docs/settings.md is generated from them; imports every connector, so not for a request's path)."""
    from chalicelib.domain.sources import SourcesSettings

    platform_models = [connector.settings_model for connector in map(_builtin, registry.builtin_names())
                       if connector is not None and connector.settings_model is not None]
    return list(dict.fromkeys([Settings, *platform_models, SourcesSettings]))
