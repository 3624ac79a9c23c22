"""Reading a webhook body: the JSON itself, and the platforms' payload models that validate it."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from chalicelib.core.errors import describe_validation_error, malformed


class PayloadModel(BaseModel):
    """Base of the platforms' payload models: unknown fields are ignored (platforms add fields without
    notice) and numbers are accepted where an id string is expected."""

    # Built on first use, not at import: a cold start pays only for the models its request needs.
    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True, defer_build=True)


# The deepest payload any platform documents nests 10 levels (an OPERA Cloud profile); a queued job wraps the
# event in about 4 more, and pydantic's serialiser gives up near 255: 64 leaves room on both sides.
MAX_NESTING = 64
_TOO_DEEP = f"body is nested too deeply (more than {MAX_NESTING} levels of objects and arrays)"


def load_json(body: bytes) -> Any:
    """Parse a body whatever its declared content type; a clear 400 reason when it is not JSON, or when it
    nests more than :data:`MAX_NESTING` levels (docs/reliability.md, "Hostile input")."""
    if not body:
        raise malformed("empty body")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise malformed("body is not valid UTF-8") from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise malformed(f"body is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:
        raise malformed(_TOO_DEEP) from None
    except ValueError:  # an integer of more than 4300 digits (Python's int conversion limit)
        raise malformed("body holds a number too large to read") from None
    # A body has at most as many levels as opening brackets: most bodies are settled by counting them.
    if text.count("[") + text.count("{") > MAX_NESTING and _nested_deeper(document, MAX_NESTING):
        raise malformed(_TOO_DEEP)
    if _SURROGATE_ESCAPE.search(text):
        # "\ud800" alone decodes to a string no UTF-8 encoder accepts: the event could never be queued.
        try:
            json.dumps(document, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise malformed("body holds an unpaired UTF-16 surrogate escape") from None
    return document


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _nested_deeper(document: Any, limit: int) -> bool:
    """Whether ``document`` has objects or arrays more than ``limit`` levels deep, one level at a time
    (no recursion: a deep document must not exhaust the stack that checks it)."""
    level = [document] if type(document) in _CONTAINERS else []
    for _ in range(limit):
        if not level:
            return False
        level = [child for node in level for child in (node.values() if type(node) is dict else node)
                 if type(child) in _CONTAINERS]
    return bool(level)


_CONTAINERS = frozenset((dict, list))  # what json.loads makes of objects and arrays


def validate(model: type[BaseModel], data: Any, what: str) -> Any:
    """Validate ``data`` against a payload model, turning errors into a 400 reason (fields, not values)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise malformed(f"{what}: {describe_validation_error(exc, limit=5)}") from None
