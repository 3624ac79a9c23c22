"""Pydantic models of the Fullwhere partner API, field by field as its reference page documents them
(https://partner.docs.fullwhere.com/api-references/customer; what the bridge assumes where it is silent:
docs/platforms.md, "Fullwhere assumptions").

:class:`CustomerImport` is the body of ``POST /partners/customer`` (and one item of the batch).
It forbids unknown fields so a typo in a connector's mapping fails in tests instead of being silently
ignored by the API. :class:`PartnerCustomer` is what ``GET /partners/customer`` returns; it tolerates
unknown and missing fields because the two published versions of the docs already differ (one has no
``chr365Id``).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

# The language enum's values are not published; its example ("af") points to ISO 639-1 codes.
LANGUAGE_PATTERN = r"^[a-z]{2}$"


class PlatformIds(BaseModel):
    """The per-platform customer ids, shared by the import body and the customer record."""

    # Built on first use, not at import: a cold start pays only for the models its request needs.
    model_config = ConfigDict(defer_build=True)  # inherited by CustomerImport and PartnerCustomer

    zenchefId: str | None = None
    ubereatsId: str | None = None
    deliverooId: str | None = None
    zeltyId: str | None = None
    sevenroomsId: str | None = None
    metaId: str | None = None
    mewsId: str | None = None
    oracleId: str | None = None
    partoucheId: str | None = None
    comoId: str | None = None
    theForkId: str | None = None
    chr365Id: str | None = None


# Fullwhere's customer has one id field per source platform.
PLATFORM_ID_FIELDS = tuple(PlatformIds.model_fields)


class CustomerImport(PlatformIds):
    """Body of ``POST /partners/customer``: every field optional and nullable."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    description: str | None = None
    company: str | None = None
    firstName: str | None = None
    lastName: str | None = None
    displayName: str | None = None
    phoneNumber: str | None = Field(default=None, pattern=r"^\+[1-9]\d{6,14}$")
    email: str | None = Field(default=None, max_length=254)
    civility: str | None = None
    language: str | None = Field(default=None, pattern=LANGUAGE_PATTERN)
    metadata: dict[str, str] | None = None
    smsOptin: bool | None = None
    emailOptin: bool | None = None

    @field_validator("email")
    @classmethod
    def _email_lower_case(cls, value: str | None) -> str | None:
        if value is not None and (value != value.lower() or "@" not in value):
            raise ValueError("email must be lower-case and contain '@' (normalise it before building the model)")
        return value

    def payload(self) -> dict[str, Any]:
        """The JSON body: null fields are left out, since the merge rule only ever fills nulls anyway."""
        return self.model_dump(exclude_none=True)

    def has_contact(self) -> bool:
        """Fullwhere deduplicates on the email/phoneNumber pair: without either it cannot merge."""
        return bool(self.email or self.phoneNumber)

    def platform_ids(self) -> dict[str, str]:
        return {name: value for name in PLATFORM_ID_FIELDS if (value := getattr(self, name))}

    def has_identity(self) -> bool:
        """Something that designates one guest: an email, a real phone or a stable platform id."""
        return self.has_contact() or bool(self.platform_ids())

    def fingerprint(self) -> str:
        """Hash of what describes the guest; metadata is left out because it carries per-order facts."""
        described = self.model_dump(exclude_none=True, exclude={"metadata"})
        return hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()[:32]


class PartnerCustomer(PlatformIds):
    """A customer as ``GET /partners/customer`` (and, in practice, the import) returns it."""

    model_config = ConfigDict(extra="allow")

    id: str
    createdAt: str | None = None
    updatedAt: str | None = None
    description: str | None = None
    company: str | None = None
    firstName: str | None = None
    lastName: str | None = None
    displayName: str | None = None
    language: str | None = None
    phoneNumber: str | None = None
    email: str | None = None
    emailBounced: bool | None = None
    civility: str | None = None
    emailOptin: bool | None = None
    smsOptin: bool | None = None
    type: str | None = None
    feedbackCount: float | None = None
    purchaseCount: float | None = None
    averageFeedbackRating: str | float | None = None
    metadata: dict[str, Any] | None = None
    tags: list[dict[str, Any]] | None = None
