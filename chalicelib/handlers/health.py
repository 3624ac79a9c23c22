"""``GET /health``: whether the bridge can run, for anyone who asks; the details for its operators only.

The answer is unauthenticated, so it says the status and the version and nothing else: which platforms
are configured, or which file and field of the settings are at fault, would tell a stranger what to
attack. Those details go into one structured log line (``health``), counted as a metric like every line.
"""

from __future__ import annotations

import logging
from typing import Any

from chalicelib.core.errors import SettingsError
from chalicelib.infra.logs import log
from chalicelib.infra.settings import get_settings


def health() -> dict:
    """``{"status": "ok" | "misconfigured", "version"}``; the details are in the ``health`` log line."""
    from chalicelib import __version__
    from chalicelib.connectors import all_connectors

    details: dict[str, Any] = {}
    try:
        settings = get_settings()
        details.update(retry_queue=bool(settings.retry_queue_url),
                       dead_letter_queue=bool(settings.dead_letter_queue_url),
                       identity_ledger=bool(settings.identity_table))
        # A platform's own settings load here too: an invalid one makes the bridge misconfigured.
        configured = {connector.name: connector.configured() for connector in all_connectors()}
    except SettingsError as exc:  # its message names the setting, never the value
        log("health", status="misconfigured", version=__version__, reason=str(exc), level=logging.ERROR, **details)
        return {"status": "misconfigured", "version": __version__}
    log("health", status="ok", version=__version__, **details,
        configured=sorted(name for name, ok in configured.items() if ok),
        unconfigured=sorted(name for name, ok in configured.items() if not ok))
    return {"status": "ok", "version": __version__}
