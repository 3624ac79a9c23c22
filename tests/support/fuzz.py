"""Hypothesis strategies for hostile payloads, and the example counts of the property-based tests.

Profiles (``HYPOTHESIS_PROFILE``): ``fast``, the default, keeps the suite quick (25 examples per
property); ``long`` runs a thousand: ``HYPOTHESIS_PROFILE=long .venv/bin/python -m pytest tests/test_properties.py``.
"""

from __future__ import annotations

import copy
import os
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

settings.register_profile(
    "fast", max_examples=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
settings.register_profile(
    "long", max_examples=1000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "fast"))

# Text a guest (or an attacker) may type in a name or email field.
HOSTILE_TEXT = [
    "Zoë Ñúñez-Gómez", "王小明", "Ελένη", "محمد", "Dvořák", "Ǆemal", "👩‍🍳 Chef", "ß", "İstanbul",
    "Robert'); DROP TABLE customers;--", "' OR '1'='1", "1; SELECT pg_sleep(10)", "${jndi:ldap://x/a}",
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "javascript:alert(1)", "{{7*7}}", "%s%s%n",
    "a\u0000b", "line\nbreak", "tab\tbed", "\u202eevil", "\ufeffbom", "   ", "", "x" * 5000,
    "zoë@exämple.fr", "ZOE+tag@Example.FR", "user@例子.中国", "a@b", "@example.com", "user@@example.com",
    "robert@example.com'; DROP TABLE x;--", "+33 6 99 88 77 66", "0033699887766", "+999999999999999999",
    "12345678901234567890", "NaN", "null", "true", "0", "-1", "1e309",
]

json_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=40), st.sampled_from(HOSTILE_TEXT),
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.one_of(st.lists(children, max_size=4),
                               st.dictionaries(st.text(max_size=12), children, max_size=4)),
    max_leaves=12,
)


def _paths(node: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path to a value inside ``node`` (dict keys and list indexes), the root excluded."""
    found = []
    if isinstance(node, dict):
        for key, child in node.items():
            found.append(prefix + (key,))
            found += _paths(child, prefix + (key,))
    elif isinstance(node, list):
        for index, child in enumerate(node):
            found.append(prefix + (index,))
            found += _paths(child, prefix + (index,))
    return found


def _parent(document: Any, path: tuple) -> Any:
    for step in path[:-1]:
        document = document[step]
    return document


def _retyped(value: Any) -> st.SearchStrategy:
    """The same value in another JSON type: numbers where strings belong, and the other way round."""
    if isinstance(value, str):
        digits = "".join(ch for ch in value if ch in "0123456789")
        return st.one_of(st.integers(min_value=-(2 ** 64), max_value=2 ** 64), st.just(int(digits[:30]) if digits else 0),
                         st.floats(allow_nan=False), st.booleans(), st.just([value]), st.just({"value": value}))
    if isinstance(value, bool) or value is None:
        return st.one_of(st.just(str(value).lower()), st.just(1), st.just("yes"))
    if isinstance(value, (int, float)):
        return st.one_of(st.just(str(value)), st.just(-value), st.just(10 ** 25), st.just(True))
    return st.one_of(st.just(None), st.just(""), st.just(0), st.just([]), st.just({}))


@st.composite
def mutated(draw: st.DrawFn, document: Any, max_changes: int = 4) -> Any:
    """``document`` with one to ``max_changes`` of its values replaced by hostile ones, retyped, or deleted."""
    document = copy.deepcopy(document)
    for _ in range(draw(st.integers(min_value=1, max_value=max_changes))):
        paths = _paths(document)
        if not paths:
            return draw(json_values)
        path = draw(st.sampled_from(paths))
        parent = _parent(document, path)
        action = draw(st.sampled_from(["hostile", "retype", "any", "delete", "empty"]))
        current = parent[path[-1]]
        if action == "delete":
            parent.pop(path[-1])
        elif action == "hostile":
            parent[path[-1]] = draw(st.sampled_from(HOSTILE_TEXT))
        elif action == "retype":
            parent[path[-1]] = draw(_retyped(current))
        elif action == "empty":
            parent[path[-1]] = draw(st.sampled_from([None, "", [], {}, 0, False]))
        else:
            parent[path[-1]] = draw(json_values)
    return document


def shaped_like(*documents: Any) -> st.SearchStrategy:
    """Mostly mutations of the platform's own documents, sometimes any JSON value at all."""
    return st.one_of(*(mutated(document) for document in documents), json_values)
