"""Helpers several connectors share: reading a platform API's answer, and cleaning mapped metadata."""

from __future__ import annotations

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
