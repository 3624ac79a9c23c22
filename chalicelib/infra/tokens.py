"""OAuth access tokens, cached per container.

Several platform APIs (Uber Eats, TheFork, SevenRooms, Oracle OHIP) hand out client-credentials tokens
that last from an hour to a month, and some limit how often one may be requested (Uber: 100 an hour;
TheFork asks not to renew early). A :class:`TokenCache` keeps each token until shortly before it
expires, and serialises requests so a burst of webhooks on a cold container asks for one token, not ten.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Protocol, TypeVar

from chalicelib.core.errors import Held, RetryableError
from chalicelib.infra.http import json_object, raise_for_status, send


class _Response(Protocol):
    status_code: int


ResponseT = TypeVar("ResponseT", bound=_Response)

# Every cache, so tests (and nothing else) can forget all tokens at once.
_caches: "weakref.WeakSet[TokenCache]" = weakref.WeakSet()


class TokenCache:
    def __init__(self, margin_seconds: float = 300.0, max_margin_fraction: float = 0.1):
        """Tokens are renewed ``margin_seconds`` before expiry, but never earlier than
        ``max_margin_fraction`` of their lifetime (a 60 s token is not renewed at once)."""
        self._margin = margin_seconds
        self._fraction = max_margin_fraction
        self._lock = threading.Lock()
        self._tokens: dict[Hashable, tuple[str, float]] = {}
        _caches.add(self)

    def get(self, key: Hashable, request: Callable[[], tuple[str, float]]) -> str:
        """The cached token for ``key``, or a new one from ``request()`` → (token, lifetime in seconds)."""
        with self._lock:
            cached = self._tokens.get(key)
            if cached and cached[1] > time.monotonic():
                return cached[0]
            token, lifetime = request()
            keep = max(0.0, lifetime - min(self._margin, lifetime * self._fraction))
            self._tokens[key] = (token, time.monotonic() + keep)
            return token

    def authorised(self, key: Hashable, request: Callable[[], tuple[str, float]],
                   call: Callable[[str], ResponseT], refused: str) -> ResponseT:
        """``call(token)`` with the cached token. A 401 means the token was revoked or expired early: it is
        renewed and the call made once more; a second 401 is held until the credentials are fixed (``refused``
        says what to check)."""
        for _ in range(2):
            token = self.get(key, request)
            response = call(token)
            if response.status_code != 401:
                return response
            self.invalidate(token)
        raise Held(refused, "credentials_rejected")

    def invalidate(self, token: str) -> None:
        """Forget a token the API refused (revoked or expired early)."""
        with self._lock:
            self._tokens = {key: value for key, value in self._tokens.items() if value[0] != token}

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


def read_token_response(response, what: str, default_lifetime: float) -> tuple[str, float]:
    """``(access_token, lifetime in seconds)`` from an OAuth token endpoint's answer.

    Non-2xx answers are classified like any other call; a 2xx without a token is retryable; an absent or
    nonsensical ``expires_in`` falls back to the platform's documented ``default_lifetime``.
    """
    raise_for_status(response, what)
    body = json_object(response) or {}
    token = body.get("access_token")
    if not isinstance(token, str) or not token:
        raise RetryableError(f"{what} answered without an access_token")
    expires_in = body.get("expires_in")
    valid = isinstance(expires_in, (int, float)) and not isinstance(expires_in, bool) and expires_in > 0
    return token, float(expires_in) if valid else default_lifetime


def clear_all_token_caches() -> None:
    for cache in list(_caches):
        cache.clear()


def request_client_credentials(url: str, deadline, *, what: str, form: dict[str, str],
                               headers: dict[str, str] | None = None,
                               default_lifetime: float = 3600.0) -> tuple[str, float]:
    """An OAuth client-credentials token: ``form`` POSTed form-encoded to ``url``, the answer read by
    :func:`read_token_response`."""
    response = send("POST", url, deadline, what=what, data=form, headers=headers)
    return read_token_response(response, what, default_lifetime)
