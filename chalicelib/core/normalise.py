"""Cleaning of the contact fields every connector maps, so the CRM only ever receives valid values.

Phones go through ``phonenumbers`` (the lite build: metadata only, no geocoder or carrier data) and
leave as E.164; what does not parse as a valid number is dropped rather than imported wrong. Emails are
lower-cased and checked with a deliberately plain syntactic rule: the ``email-validator`` package would
lengthen every cold start (docs/performance.md), and deliverability cannot be checked offline anyway.
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

_EMAIL = re.compile(r"^[^@\s\"(),:;<>\[\\\]]{1,64}@(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")
_SPACES = re.compile(r"\s+")


def clean_text(value: object, max_length: int = 200) -> str | None:
    """Trim, fold runs of white space, drop control characters; empty becomes ``None``."""
    if not isinstance(value, str):
        return None
    # isprintable() means no control/format character: the filter below would keep every one (it is
    # the per-event hot spot, docs/performance.md).
    text = value if value.isprintable() else "".join(
        ch for ch in value if unicodedata.category(ch)[0] != "C" or ch in " \t\n")
    text = _SPACES.sub(" ", text).strip()
    return text[:max_length] or None


def display_name(first_name: str | None, last_name: str | None) -> str | None:
    return " ".join(part for part in (first_name, last_name) if part) or None


def normalise_email(value: object) -> str | None:
    """Lower-cased email when it looks like one, else ``None``."""
    text = clean_text(value, max_length=254)
    if text is None:
        return None
    text = text.lower()
    return text if _EMAIL.match(text) and ".." not in text else None


def normalise_phone(value: object, *regions: str | None) -> str | None:
    """E.164 (``+33612345678``) when the number is valid.

    A number without an international prefix is read in each of ``regions`` in turn (the tenant's
    region first, then e.g. the guest's nationality); the first reading that is a valid number wins.
    """
    text = clean_text(value, max_length=40)
    if text is None:
        return None
    for region in dict.fromkeys(r.upper() for r in regions if r) or [None]:
        try:
            number = phonenumbers.parse(text, region)
        except phonenumbers.NumberParseException:
            continue
        if phonenumbers.is_valid_number(number):
            return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return None


def language_code(value: object) -> str | None:
    """ISO 639-1 code from a locale such as ``en-GB``, ``fr_FR`` or ``EN``."""
    text = clean_text(value, max_length=20)
    if text is None:
        return None
    code = re.split(r"[-_]", text, maxsplit=1)[0].lower()
    return code if re.fullmatch(r"[a-z]{2}", code) else None
