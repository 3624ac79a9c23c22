"""What every Lambda invocation gets, whatever its trigger: registered once in ``app.py`` as Chalice
middleware, so no handler can forget it.

Its log lines share one fresh log context and carry its Lambda request id and whether it is the first
of its container (``request_id``, ``cold_start``: docs/reliability.md, "Logs"), the log level follows the
settings, and the metrics it counted are written once, when it returns or raises.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from chalicelib.infra import logs, metrics

# Whether no invocation has begun in this process yet: a Lambda container loads app.py once, then runs its
# invocations one at a time.
_cold = True


def around_every_invocation(event: Any, get_response: Callable[[Any], Any]) -> Any:
    # Imported here, like the handlers in app.py: loading app.py costs no more than Chalice itself.
    from chalicelib import connectors

    global _cold
    cold_start, _cold = _cold, False
    try:
        with logs.invocation(request_id=_request_id(event), cold_start=cold_start):
            _follow_log_level()
            return get_response(event)
    finally:
        metrics.flush(platforms=connectors.loaded_platform_names())


def _request_id(event: Any) -> str | None:
    """The Lambda context's request id: Chalice hands an HTTP route's middleware the Request, which holds
    it as ``lambda_context`` (its ``context`` is API Gateway's), and any other event its ``context``."""
    context = getattr(event, "lambda_context", None) or getattr(event, "context", None)
    return getattr(context, "aws_request_id", None)


def _follow_log_level() -> None:
    from chalicelib.core.errors import SettingsError
    from chalicelib.infra.settings import get_settings

    try:
        logs.set_level(get_settings().log_level)
    except SettingsError:
        pass  # the handler meets the same error and answers it
