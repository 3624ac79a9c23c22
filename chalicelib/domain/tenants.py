"""Tenants: which Fullwhere account an event belongs to.

One deployment can serve several Fullwhere accounts. The tenants document (``TENANTS_FILE`` or
``TENANTS_SECRET_ID``; its format: docs/settings.md, "Tenants") gives each platform account to exactly one
tenant, with that account's platform credentials. Without one, a ``default`` tenant owns every account;
an event no tenant owns yet is not dropped but held as ``unrouted`` and routed again later.

Tenants are walls: a named tenant's webhooks on a platform whose accounts each register their own secret are
verified with that tenant's ``webhook_secret`` only, and its events are fetched with its own platform
credentials only, never with the deployment's (docs/architecture.md, "Tenants").
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chalicelib.core.errors import RejectedRequest, SettingsError, describe_validation_error, unauthorized
from chalicelib.infra.settings import Refreshed, Settings, get_settings, parse_json_document

DEFAULT_TENANT_ID = "default"


# Built-in platforms whose webhook each account (a Zelty brand, a SevenRooms venue group, a Simphony organisation)
# registers itself, with a secret its owner sees; every declarative source is one too. A named tenant's requests on
# them are verified with the tenant's own secret. The others (Deliveroo, Uber Eats, Mews, TheFork, Meta) have one
# secret per integration, which only the platform holds. The decision per platform: docs/platforms.md,
# "Webhook secrets: per integration or per account".
OWN_WEBHOOK_SECRETS = frozenset({"zelty", "sevenrooms", "simphony"})
# Simphony's secret is a set of keys, each named by the Key-Id header (several during a rotation).
KEYED_SECRETS = frozenset({"simphony"})


def has_own_webhook_secrets(platform: str) -> bool:
    """Whether each account of ``platform`` registers its webhook with its own secret (declarative sources do)."""
    from chalicelib.core.registry import builtin_names

    return platform in OWN_WEBHOOK_SECRETS or platform not in builtin_names()


class PlatformAccounts(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    # The secret this tenant's accounts registered the platform's webhook with (Zelty's secret_key, SevenRooms'
    # URL token or HMAC key, a declarative source's secret); for Simphony, ``hmac_keys`` instead. Only on
    # platforms whose accounts each have their own (has_own_webhook_secrets).
    webhook_secret: str | None = Field(default=None, min_length=1, repr=False)
    hmac_keys: dict[str, str] | None = Field(default=None, min_length=1, repr=False)
    # account id → that account's credentials on the platform (e.g. {"access_token": "..."} for Mews)
    accounts: dict[str, dict[str, str]] = Field(default_factory=dict)


class Tenant(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    fullwhere_api_key: str = Field(min_length=1)
    fullwhere_api_secret: str = Field(min_length=1, repr=False)
    fullwhere_api_url: str | None = None
    phone_region: str | None = Field(default=None, pattern=r"^[A-Za-z]{2}$")
    platforms: dict[str, PlatformAccounts] = Field(default_factory=dict)
    # Import the leads of Meta's Lead Ads Testing Tool (off: ignored as ``test_lead``), e.g. for a trial account.
    import_test_leads: bool = False

    # The default tenant (no document) owns every account; real tenants own only those they list.
    owns_every_account: bool = Field(default=False, exclude=True)

    @field_validator("platforms")
    @classmethod
    def _known_platforms(cls, platforms: dict[str, PlatformAccounts]) -> dict[str, PlatformAccounts]:
        from chalicelib.core.registry import builtin_names
        from chalicelib.domain.sources import get_sources

        known = {*builtin_names(), *get_sources()}
        unknown = sorted(set(platforms) - known)
        if unknown:
            raise ValueError(f"unknown platform(s) {unknown}; known: {sorted(known)}")
        for platform, block in platforms.items():
            _check_webhook_secret(platform, block)
        return platforms

    def owns(self, platform: str, account_id: str | None) -> bool:
        if self.owns_every_account:
            return True
        accounts = self.platforms.get(platform)
        return accounts is not None and account_id is not None and account_id in accounts.accounts

    def credentials(self, platform: str, account_id: str | None) -> dict[str, str]:
        accounts = self.platforms.get(platform)
        if accounts is None or account_id is None:
            return {}
        return accounts.accounts.get(account_id, {})

    def has_own_webhook_secret(self, platform: str) -> bool:
        block = self.platforms.get(platform)
        return block is not None and bool(block.webhook_secret or block.hmac_keys)

    def own_webhook_secret(self, platform: str) -> str:
        """This named tenant's secret for ``platform``'s webhooks. Missing, its webhooks answer 503 (a configuration
        error, so the platform delivers again once it is set): the deployment's secret is never used instead."""
        return self._own(platform, "webhook_secret", "secret")

    def own_hmac_keys(self, platform: str) -> dict[str, str]:
        """This named tenant's keys for ``platform`` (Simphony): Key-Id → Base64 key; missing → SettingsError."""
        return self._own(platform, "hmac_keys", "keys")

    def _own(self, platform: str, field: str, what: str) -> Any:
        block = self.platforms.get(platform)
        value = getattr(block, field) if block is not None else None
        if not value:
            raise SettingsError(f"tenant {self.id!r} has no {field} for {platform} in the tenants document "
                                f"(a tenant's accounts are never verified with the deployment's {what})")
        return value


def _check_webhook_secret(platform: str, block: PlatformAccounts) -> None:
    """A secret where the platform takes one, in the form it takes (messages name the field, never its value)."""
    if block.webhook_secret is None and block.hmac_keys is None:
        return
    if not has_own_webhook_secrets(platform):
        raise ValueError(f"{platform}'s webhook secret is one per integration, held by {platform} and set in the "
                         "deployment's settings: a tenant's webhook_secret would never be used")
    if platform in KEYED_SECRETS:
        if block.webhook_secret is not None:
            raise ValueError(f"{platform} takes hmac_keys " '{"<keyId>": "<base64 hmacKey>"}' ", not webhook_secret")
        for key_id, encoded in (block.hmac_keys or {}).items():
            if not base64_key(encoded):
                raise ValueError(f"{platform} hmac_keys: the key of Key-Id {key_id[:64]!r} is not Base64")
        return
    if block.hmac_keys is not None:
        raise ValueError(f"{platform} takes webhook_secret, not hmac_keys")
    from chalicelib.core.signatures import standard_webhooks_secret
    from chalicelib.domain.sources import StandardWebhooksAuth, get_sources

    source = get_sources().get(platform)
    if source is not None and isinstance(source.auth, StandardWebhooksAuth):
        try:
            standard_webhooks_secret(block.webhook_secret or "")
        except ValueError as exc:  # a key anyone could sign with must not be accepted at load
            raise ValueError(f"{platform} webhook_secret (a Standard Webhooks whsec_ secret) {exc}") from None


def base64_key(encoded: Any) -> bytes:
    """The bytes of a strict Base64 key, or ``b""`` when it is not one."""
    try:
        return base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else b""
    except (binascii.Error, ValueError):
        return b""


class TenantsDocument(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    tenants: list[Tenant] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique(self) -> "TenantsDocument":
        ids = [tenant.id for tenant in self.tenants]
        if len(ids) != len(set(ids)):
            raise ValueError("tenant ids must be unique")
        owner: dict[tuple[str, str], str] = {}
        for tenant in self.tenants:
            for platform, accounts in tenant.platforms.items():
                for account_id in accounts.accounts:
                    other = owner.setdefault((platform, account_id), tenant.id)
                    if other != tenant.id:
                        raise ValueError(f"{platform} account {account_id!r} is listed by both {other!r} and {tenant.id!r}")
        return self


class TenantDirectory:
    def __init__(self, tenants: list[Tenant]):
        self._tenants = {tenant.id: tenant for tenant in tenants}

    def route(self, platform: str, account_id: str | None) -> Tenant | None:
        """The tenant that owns this platform account, or ``None`` (the event is then ``unrouted``)."""
        for tenant in self._tenants.values():
            if tenant.owns(platform, account_id):
                return tenant
        return None

    def get(self, tenant_id: str) -> Tenant | None:
        return self._tenants.get(tenant_id)

    def tenants(self) -> list[Tenant]:
        return list(self._tenants.values())

    def platform_configured(self, platform: str) -> bool:
        return any(t.owns_every_account or platform in t.platforms for t in self._tenants.values())


def default_tenant(settings: Settings) -> Tenant:
    # Its platform credentials are each connector's own settings (e.g. MEWS_ACCESS_TOKEN).
    return Tenant.model_construct(
        id=DEFAULT_TENANT_ID,
        fullwhere_api_key=settings.fullwhere_api_key or "",
        fullwhere_api_secret=settings.fullwhere_api_secret or "",
        fullwhere_api_url=None,
        phone_region=None,
        platforms={},
        owns_every_account=True,
    )


def load_directory(settings: Settings) -> TenantDirectory:
    text, source = _document_text(settings)
    if text is None:
        return TenantDirectory([default_tenant(settings)])
    try:
        document = TenantsDocument.model_validate(parse_json_document(text, source))
    except ValidationError as exc:
        raise SettingsError(f"invalid tenants document ({source}): {describe_validation_error(exc)}") from None
    return TenantDirectory(document.tenants)


def _document_text(settings: Settings) -> tuple[str | None, str]:
    if settings.tenants_file:
        path = Path(settings.tenants_file)
        try:
            return path.read_text(encoding="utf-8"), f"TENANTS_FILE {path.name}"
        except OSError as exc:
            raise SettingsError(f"cannot read TENANTS_FILE {path}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise SettingsError(f"TENANTS_FILE {path.name} is not UTF-8 text") from None
    if settings.tenants_secret_id:
        from chalicelib.infra import aws

        return aws.read_secret(settings.tenants_secret_id), "TENANTS_SECRET_ID"
    return None, "defaults"


class AccountCredentials(dict):
    """One account's platform credentials, as the tenants document lists them, and whether the connector's own
    settings (the deployment's credentials, e.g. ``THEFORK_CLIENT_ID``) may stand in for what they lack: only for
    the default tenant. A named tenant's events are fetched with its own credentials or held as
    ``not_configured``, so that a body naming an account can never borrow another's access."""

    def __init__(self, values: Mapping[str, str], lends_settings: bool):
        super().__init__(values)
        self.lends_settings = lends_settings


def lends_settings(account: Mapping[str, str] | None) -> bool:
    """Whether the settings may fill in for ``account`` (an :class:`AccountCredentials`; a plain mapping, only
    ever built by a test, counts as the default tenant's)."""
    return getattr(account, "lends_settings", True)


def credentials_for(tenant: Tenant, platform: str, account_id: str | None) -> AccountCredentials:
    """The tenant's credentials for a platform account; the default tenant's apply to every account."""
    found = tenant.credentials(platform, account_id)
    if not found and tenant.owns_every_account:
        found = tenant.credentials(platform, "*")
    return AccountCredentials(found, lends_settings=tenant.owns_every_account)


def signing_tenant(directory: TenantDirectory, platform: str, account_ids: Iterable[str | None]) -> Tenant:
    """The one named tenant that owns every account a (not yet verified) body names: its secret is the only one
    that may verify the body. A body naming no account, or accounts of several tenants, is refused (401):
    whatever secret signed it, it cannot speak for every account it names. An account no tenant lists yet
    cannot be verified either; it answers 503, so that the platform keeps the event and delivers it again
    once the account is added (a restaurant that registered its webhook before it was in the document)."""
    accounts = set(account_ids)
    if not accounts:
        raise unauthorized(f"the {platform} webhook names no account: no tenant's secret can verify it")
    owners: dict[str, Tenant] = {}
    for account in accounts:
        tenant = directory.route(platform, account)
        if tenant is None and account is None:
            raise unauthorized(f"this {platform} webhook names an event without an account: no tenant's secret "
                               "can verify it")
        if tenant is None:
            raise RejectedRequest(503, "unknown_account", f"this {platform} webhook names an account no tenant "
                                  "lists yet, so no secret can verify it; deliver again once it is added")
        owners.setdefault(tenant.id, tenant)
    if len(owners) > 1:
        raise unauthorized(f"this {platform} webhook names accounts of several tenants: no one tenant's secret "
                           "may verify it")
    return next(iter(owners.values()))


# The settings are its basis: a new TENANTS_FILE, or a rotated key of the default tenant, reads it again at once.
_directory = Refreshed("tenants", load_directory)


def get_directory() -> TenantDirectory:
    """The container's tenants, loaded (and validated) on first use and read again every
    ``CONFIG_REFRESH_SECONDS``; an invalid new document is refused and the last valid one kept."""
    return _directory.get(get_settings())


def reset_directory() -> None:
    _directory.reset()
