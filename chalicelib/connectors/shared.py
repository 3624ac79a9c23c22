"""Helpers several connectors share: reading a platform API's answer, following a list's pages, reading a listed
item's time, and cleaning mapped metadata."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any
from urllib.parse import quote

import httpx

from chalicelib.core.errors import PermanentError, RetryableError
from chalicelib.infra.http import json_object, raise_for_status


def answer_object(response: httpx.Response, what: str, member: str | None = None, kind: type = dict) -> Any:
    """The JSON object a platform API answered (or its ``member``, of type ``kind``).

    A non-2xx answer is classified as any other; a 2xx without the expected JSON is retryable, since APIs
    answer HTML error pages with 200 during incidents.
    """
    raise_for_status(response, what)
    body = json_object(response)
    if body is None:
        raise RetryableError(f"{what} answered 2xx without a JSON object")
    if member is None:
        return body
    value = body.get(member)
    if not isinstance(value, kind):
        raise RetryableError(f"{what} answered 2xx without {member}")
    return value


def cursor_pages(read_page: Callable[[str | None], tuple[list[Any], str | None]], what: str,
                 max_pages: int) -> Iterator[list[Any]]:
    """Each page's items of a list an API pages with a cursor: ``read_page(None)`` reads the first page, then
    ``read_page(cursor)`` the page after, until a page is empty or gives no cursor.

    A cursor given twice (the API looping) or more than ``max_pages`` pages is retryable: the sweep's window is
    listed again later, its cursor not moved past what was not read.
    """
    seen: set[str] = set()
    cursor: str | None = None
    for _ in range(max_pages):
        items, cursor = read_page(cursor)
        yield items
        if not items or not cursor:
            return
        if cursor in seen:
            raise RetryableError(f"{what} gave the same cursor twice")
        seen.add(cursor)
    raise RetryableError(f"{what} listed more than {max_pages} pages in one window")


def present(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` without its empty entries: Fullwhere's metadata keeps only what the platform said."""
    return {key: value for key, value in values.items() if value}


def path_segment(value: Any, what: str) -> str:
    """``value`` (an id from a payload) quoted as one segment of a URL path. An empty id, ``.``, ``..``, or one
    holding a slash, a backslash or a control character is no platform's id: it is refused, so that a payload
    cannot move the path a credential is sent to."""
    text = value if isinstance(value, str) else ""
    if text.strip(".") == "" or any(char in "/\\" or ord(char) < 32 or ord(char) == 127 for char in text):
        raise PermanentError(f"{what} is not a usable id for the API's URL")
    return quote(text, safe="")


def instant(value: object) -> datetime | None:
    """An ISO 8601 time (UTC when it has no zone) or a number of Unix seconds or milliseconds, as a UTC datetime;
    else None."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value / 1000 if value > 1e11 else value, timezone.utc)
        except (OverflowError, OSError, ValueError):
            return None
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)
