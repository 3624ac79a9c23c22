"""What every Lambda invocation gets, whatever its trigger: registered once in ``app.py`` as Chalice
middleware, so no handler can forget it.

Its log lines share one fresh log context, the log level follows the settings, and the metrics it
counted are written once, when it returns or raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.infra import logs, metrics


def around_every_invocation(event: Any, get_response: Callable[[Any], Any]) -> Any:
    # Imported here, like the handlers in app.py: loading app.py costs no more than Chalice itself.
    from chalicelib import connectors

    try:
        with logs.log_context():
            _follow_log_level()
            return get_response(event)
    finally:
        metrics.flush(platforms=connectors.loaded_platform_names())


def _follow_log_level() -> None:
    from chalicelib.core.errors import SettingsError
    from chalicelib.infra.settings import get_settings

    try:
        logs.set_level(get_settings().log_level)
    except SettingsError:
        pass  # the handler meets the same error and answers it
