"""Helpers several connectors share: reading a platform API's answer, and cleaning mapped metadata."""

from __future__ import annotations

from typing import Any

import httpx

from chalicelib.core.errors import RetryableError
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
