"""What the bridge's logs must never contain, and the scan applied to every test's log lines.

Three sources of forbidden values, so a new fixture or setting is covered without anyone listing it:

- every email, phone number and person's name in ``tests/fixtures/`` (found by key: ``email``,
  ``phone_number``, ``first_name``, ``givenName``, Meta's ``field_data``, ...), each phone also in its
  digits-only, E.164 and national forms;
- every secret setting configured while the test ran (the settings the bridge declares with
  ``repr=False``, the keys inside ``SIMPHONY_HMAC_KEYS``, secrets and tokens of the tenants document),
  and the sandbox's own credentials;
- the values ``tests/conftest.py`` lists by hand.

On top of the values, any email-shaped text that is not masked (``j***@e***.com``) is a leak, whichever
guest it belongs to (the sandbox's generated guests included).

What is scanned (:func:`scanned_output`): the bridge's JSON lines on stdout, and everything else that reaches
CloudWatch in production: what Chalice's own app logger prints (its traceback of an unhandled exception,
kept by :func:`chalice_log_tap` wherever that logger's stream points), everything on stderr (where the
Lambda runtime writes an exception that leaves a handler) and the records any logger passed to the root one.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).parent.parent / "fixtures"

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
# Unmasked emails inside a log line: a masked one has "***" right before the "@".
_EMAIL_IN_LINE = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_PHONE_KEY = re.compile(r"(?i)phone|telephone|mobile|contact_number|^tel$|numero_de_tel")
_NAME_KEY = re.compile(r"(?i)^(first_?name|last_?name|given_?name|surname|fname|prenom|prénom|nom|customer_name|"
                       r"full_?name|display_?name|middle_?name)$")
_SECRET_KEY = re.compile(r"(?i)secret|token|password|hmac|access_key|app_key")
PHONE_REGIONS = ("FR", "US", "GB", "ES", "IT", "DE", "CZ", "HK")
MIN_LENGTH = 3  # shorter values (initials, "HK") would match anywhere


def _phone_forms(value: str) -> set[str]:
    import phonenumbers

    forms = {value.strip()}
    digits = re.sub(r"\D", "", value)
    if len(digits) >= 8:
        forms.add(digits)
    for region in PHONE_REGIONS:
        try:
            number = phonenumbers.parse(value, region)
        except phonenumbers.NumberParseException:
            continue
        e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
        national = str(number.national_number)
        forms.add(e164)
        if len(national) >= 8:
            forms.add(national)
    return forms


def _walk(node: Any, key: str | None, found: set[str]) -> None:
    if isinstance(node, dict):
        # Meta lead answers: {"name": "email", "values": ["joe@example.com"]}
        if isinstance(node.get("name"), str) and isinstance(node.get("values"), list):
            for value in node["values"]:
                _walk(value, node["name"], found)
        for child_key, child in node.items():
            _walk(child, child_key, found)
    elif isinstance(node, list):
        for child in node:
            _walk(child, key, found)
    elif isinstance(node, str) and node.strip():
        value = node.strip()
        if _EMAIL.match(value):
            found.update({value, value.lower()})
        elif key and _PHONE_KEY.search(key):
            if sum(ch.isdigit() for ch in value) >= 6:
                found.update(_phone_forms(value))
        elif key and _NAME_KEY.match(key):
            found.add(value)
            found.update(word.strip(".,") for word in value.split())


@functools.lru_cache(maxsize=1)
def fixture_personal_data() -> frozenset[str]:
    """Every email, phone (in several forms) and name found in the fixtures."""
    found: set[str] = set()
    for path in sorted(FIXTURES.rglob("*.json")):
        _walk(json.loads(path.read_text(encoding="utf-8")), None, found)
    return frozenset(value for value in found if len(value) >= MIN_LENGTH)


@functools.lru_cache(maxsize=1)
def _secret_settings() -> tuple[str, ...]:
    from chalicelib.connectors import settings_models

    return tuple(model.variable(name) for model in settings_models()
                 for name, field in model.model_fields.items() if field.repr is False)


def _secret_values(document: Any, key: str | None = None) -> Iterable[str]:
    if isinstance(document, dict):
        for child_key, child in document.items():
            yield from _secret_values(child, child_key)
    elif isinstance(document, list):
        for child in document:
            yield from _secret_values(child, key)
    elif isinstance(document, str) and key and _SECRET_KEY.search(key):
        yield document


def configured_secrets(environ: dict[str, str] | os._Environ = os.environ) -> frozenset[str]:
    """The secret settings in the environment now (the test's own, monkeypatched ones included)."""
    from sandbox.stack import FULLWHERE_SECRET, SECRETS

    values = {*SECRETS.values(), FULLWHERE_SECRET}
    for name in _secret_settings():
        value = environ.get(name)
        if value:
            values.add(value)
    try:
        values.update(json.loads(environ.get("SIMPHONY_HMAC_KEYS") or "{}").values())
    except (ValueError, AttributeError, TypeError):
        pass
    tenants_file = environ.get("TENANTS_FILE")
    if tenants_file and Path(tenants_file).is_file():
        try:
            values.update(_secret_values(json.loads(Path(tenants_file).read_text(encoding="utf-8"))))
        except ValueError:
            pass
    return frozenset(value for value in values if isinstance(value, str) and len(value) >= 6)


def bridge_log_lines(stdout: str) -> list[str]:
    """The bridge's JSON lines (logs and EMF metrics), without their timestamps (digits that could
    look like a phone number)."""
    lines = []
    for line in stdout.splitlines():
        if not line.startswith("{"):
            continue
        try:
            document = json.loads(line)
        except ValueError:
            continue
        if not isinstance(document, dict) or not ("outcome" in document or "_aws" in document):
            continue
        document.pop("ts", None)
        document.pop("_aws", None)
        lines.append(json.dumps(document, ensure_ascii=False))
    return lines


def find_leaks(lines: list[str], forbidden: Iterable[str]) -> list[str]:
    """The forbidden values (and unmasked emails) found in ``lines``."""
    values = sorted({value for value in forbidden if value}, key=len, reverse=True)
    if not lines:
        return []
    pattern = re.compile("|".join(re.escape(value) for value in values)) if values else None
    leaks: set[str] = set()
    for line in lines:
        if pattern is not None:
            leaks.update(match.group(0) for match in pattern.finditer(line))
        leaks.update(f"unmasked email {match.group(0)}" for match in _EMAIL_IN_LINE.finditer(line))
    return sorted(leaks)


# Chalice(app_name="fullwhere-bridge") logs through the logger of that name, to the stdout of the moment the app
# was made, and without propagating: a handler of our own sees its lines whatever pytest did with stdout.
CHALICE_LOGGER = "fullwhere-bridge"
CHALICE_FORMAT = "%(name)s - %(levelname)s - %(message)s"  # Chalice.FORMAT_STRING


class ChaliceLogTap(logging.Handler):
    """Keeps what the Chalice app's logger prints, each record as Chalice formats it (traceback included)."""

    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(logging.Formatter(CHALICE_FORMAT))
        self._lines: list[str] = []
        self._guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        text = self.format(record)
        with self._guard:
            self._lines.extend(text.splitlines())

    def drain(self) -> list[str]:
        """The lines kept since the last drain."""
        with self._guard:
            lines, self._lines = self._lines, []
        return lines


@functools.lru_cache(maxsize=1)
def chalice_log_tap() -> ChaliceLogTap:
    """The tap on Chalice's app logger, attached on first use (not a StreamHandler: Chalice still adds its own)."""
    tap = ChaliceLogTap()
    logging.getLogger(CHALICE_LOGGER).addHandler(tap)
    return tap


def scanned_output(stdout: str, stderr: str = "", caplog: str = "", chalice_lines: Iterable[str] = ()) -> list[str]:
    """Every line of a test's output that the scan applies to: the bridge's JSON lines, Chalice's app logger,
    stderr and the records caught on the root logger."""
    return [*bridge_log_lines(stdout), *chalice_lines, *stderr.splitlines(), *caplog.splitlines()]
