"""Cleaning of the contact fields every connector maps, so the CRM only ever receives valid values.

Phones go through ``phonenumbers`` (the lite build: metadata only, no geocoder or carrier data) and
leave as E.164; what does not parse as a valid number is dropped rather than imported wrong. Emails are
lower-cased and checked with a deliberately plain syntactic rule: the ``email-validator`` package would
lengthen every cold start (docs/performance.md), and deliverability cannot be checked offline anyway.
International addresses are kept: UTF-8 local parts (RFC 6531) in NFC, and internationalised domains in
their A-label (``xn--``) form under IDNA 2008 / UTS #46, so that an address written with the Unicode or
the A-label domain is one string, hence one Fullwhere customer (docs/platforms.md, "Rules every connector
follows").
"""

from __future__ import annotations

import re
import unicodedata

import phonenumbers

# The top-level label may be an A-label too: ``.рф`` is ``.xn--p1ai``.
_EMAIL = re.compile(
    r"^[^@\s\"(),:;<>\[\\\]]{1,64}@(?=.{1,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+(?:[a-z]{2,63}|xn--[a-z0-9-]{1,59})$")
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
    """Lower-cased email when it looks like one, else ``None``; an internationalised domain leaves as its A-label.

    ``Jörg@Müller.de`` and ``jörg@xn--mller-kva.DE`` both give ``jörg@xn--mller-kva.de``.
    """
    # One character over the 254 limit, so that a longer value is refused rather than cut into another address.
    text = clean_text(value, max_length=255)
    if text is None:
        return None
    text = text.lower()
    # The common ASCII address is one regular expression; only the rest pays for NFC and IDNA.
    if not text.isascii() or "xn--" in text:
        text = _international_email(text)
        if text is None:
            return None
    # 254 also bounds an A-label domain, which is longer than its Unicode spelling (CustomerImport's max_length).
    return text if len(text) <= 254 and _EMAIL.match(text) and ".." not in text else None


def _international_email(text: str) -> str | None:
    """``text`` (lower-cased) with its local part in NFC and its domain as A-labels, or ``None`` if invalid."""
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain:
        return None
    # One visible "é" may arrive composed or decomposed (macOS input is NFD); RFC 6532 asks for NFC. The
    # 64 limit of RFC 5321 counts octets, and a UTF-8 character is up to four.
    local = unicodedata.normalize("NFC", local)
    if len(local.encode()) > 64:
        return None
    if not domain.isascii() or "xn--" in domain:
        import idna  # pinned in requirements.txt (httpx needs it too); imported only for an international domain

        try:
            # UTS #46 mapping (non-transitional, i.e. IDNA 2008: "ß" stays "ß") lower-cases and maps
            # full-width forms and "。"; an existing A-label is checked, so a bogus "xn--" label is refused.
            domain = idna.encode(domain, uts46=True).decode("ascii")
        except (UnicodeError, ValueError):  # idna.IDNAError is a UnicodeError
            return None
    return f"{local}@{domain}"


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
