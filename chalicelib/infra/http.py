"""The one ``httpx.Client`` of the container, and the time budget that bounds each call.

Creating a client is costly (SSL context, certifi: docs/performance.md), so it is made on first use and
reused by every invocation of a warm container: the Fullwhere client and the connectors all share it and its
connection pool. Every call passes an explicit timeout taken from a :class:`Deadline`.

httpx's own log lines never show a query string: see :func:`_keep_queries_out_of_logs`.
"""

from __future__ import annotations

import logging
import threading
import time

import httpx

from chalicelib import __version__
from chalicelib.core.errors import BudgetExhausted, Held, OutcomeUnknown, PermanentError, RetryableError
from chalicelib.infra.logs import scrub

USER_AGENT = f"fullwhere-bridge/{__version__}"

_lock = threading.Lock()
_client: httpx.Client | None = None


class _NoQueryInRequestLines(logging.Filter):
    """Drops the query string of every URL in an httpx log line ("HTTP Request: GET <url> ..."), whatever
    the level: query strings carry credentials (Graph's ``appsecret_proof``, a webhook's ``?token=``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_without_query(arg) for arg in record.args)
        return True


def _without_query(value: object) -> object:
    if isinstance(value, httpx.URL):
        return value.copy_with(query=None, fragment=None) if value.query else value
    if isinstance(value, str) and "://" in value and "?" in value:
        return value.split("?", 1)[0]
    return value


def _keep_queries_out_of_logs() -> None:
    """httpx logs every request's full URL at INFO through the ``httpx`` logger, and ``chalice local`` (``make
    run``) or a Lambda log level of INFO prints whatever the root logger gets. The bridge writes its own
    lines (:mod:`chalicelib.infra.logs`), so httpx and httpcore are held at WARNING; the filter keeps query
    strings out even when someone lowers that level to debug a call."""
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
    httpx_logger = logging.getLogger("httpx")
    if not any(isinstance(f, _NoQueryInRequestLines) for f in httpx_logger.filters):
        httpx_logger.addFilter(_NoQueryInRequestLines())


_keep_queries_out_of_logs()


def http_client() -> httpx.Client:
    global _client
    if _client is None:
        with _lock:
            if _client is None:
                _client = httpx.Client(
                    timeout=httpx.Timeout(10.0, connect=3.0),
                    headers={"User-Agent": USER_AGENT},
                    follow_redirects=False,
                    limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
                )
    return _client


def reset_http_client() -> None:
    global _client
    with _lock:
        if _client is not None:
            _client.close()
        _client = None


class Deadline:
    """A wall-clock budget shared by every call made for one webhook request (or one retry job)."""

    # Below this, a call cannot usefully start: defer the event instead of timing out mid-import.
    MINIMUM_CALL_SECONDS = 0.05

    def __init__(self, seconds: float, call_timeout: float = 10.0, room: float | None = None):
        now = time.monotonic()
        self._ends_at = now + seconds
        self._call_timeout = call_timeout
        self._room_ends_at = None if room is None else now + max(room, seconds)

    def remaining(self) -> float:
        return self._ends_at - time.monotonic()

    def stretched(self) -> Deadline | None:
        """A deadline running to the end of the invocation's ``room``, for the rare work that is long and
        worth it (checking Fullwhere for an import in doubt); ``None`` where there is no such room (inline,
        with a platform waiting on the answer)."""
        if self._room_ends_at is None:
            return None
        return Deadline(self._room_ends_at - time.monotonic(), self._call_timeout)

    def timeout(self) -> httpx.Timeout:
        """The timeout for the next call: the smaller of the per-call limit and what is left."""
        left = self.remaining()
        if left < self.MINIMUM_CALL_SECONDS:
            raise BudgetExhausted("time budget spent")
        seconds = min(self._call_timeout, left)
        return httpx.Timeout(seconds, connect=min(3.0, seconds))


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


RETRYABLE_STATUSES = frozenset({408, 425, 429})
# Answers that refuse the caller, not its request: a revoked or mistyped key is held until it is fixed.
CREDENTIALS_REFUSED = frozenset({401, 403})


def is_retryable_status(status: int) -> bool:
    return status in RETRYABLE_STATUSES or status >= 500


def send(method: str, url: str, deadline: Deadline, *, what: str, **kwargs) -> httpx.Response:
    """One HTTP call bounded by ``deadline``; transport failures become :class:`RetryableError`.

    ``what`` names the callee in error reasons ("Fullwhere", "Mews API", ...). Reasons never quote the URL:
    it can carry tokens.
    """
    timeout = deadline.timeout()
    try:
        return http_client().request(method, url, timeout=timeout, **kwargs)
    except (httpx.ReadTimeout, httpx.WriteTimeout):
        raise OutcomeUnknown(f"{what} timed out") from None
    except _SENT_THEN_LOST as exc:
        raise OutcomeUnknown(f"{what} closed the connection before answering ({type(exc).__name__})") from None
    except httpx.TimeoutException:  # connecting, or waiting for a pooled connection: nothing was sent
        raise RetryableError(f"{what} timed out") from None
    except httpx.TransportError as exc:
        raise RetryableError(f"{what} unreachable ({type(exc).__name__})") from None


# Failures after the connection was made: the request (or part of it) may have reached the callee.
_SENT_THEN_LOST = (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError)


def raise_for_status(response: httpx.Response, what: str) -> None:
    """Classify a non-2xx answer: retryable (408/425/429/5xx, honouring Retry-After), held (401/403: the bridge's
    own credentials were refused, which no event can fix) or permanent."""
    status = response.status_code
    if 200 <= status < 300:
        return
    # The other side's words become a reason that is logged and dead-lettered: no email or phone in clear.
    detail = scrub(response.text[:300].replace("\n", " ").strip())
    if is_retryable_status(status):
        # 503 and the 4xx among these say the request was not served; any other 5xx (a crash, a gateway
        # that lost the upstream's answer) leaves unknown whether it was applied.
        kind = OutcomeUnknown if status >= 500 and status != 503 else RetryableError
        raise kind(f"{what} answered {status}", parse_retry_after(response.headers.get("Retry-After")))
    if status in CREDENTIALS_REFUSED:
        raise Held(f"{what} refused the bridge's credentials ({status})", "credentials_rejected")
    raise PermanentError(f"{what} answered {status}: {detail}" if detail else f"{what} answered {status}")


def json_object(response: httpx.Response) -> dict | None:
    """The response body when it is a JSON object, else ``None`` (APIs answer HTML error pages too)."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None
