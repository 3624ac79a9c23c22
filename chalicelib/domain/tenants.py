"""Tenants: which Fullwhere account an event belongs to.

One deployment can serve several Fullwhere accounts. The tenants document (``TENANTS_FILE`` or
``TENANTS_SECRET_ID``; its format: docs/settings.md, "Tenants") gives each platform account to exactly one
tenant, with that account's platform credentials. Without one, a ``default`` tenant owns every account;
an event no tenant owns is not dropped but dead-lettered as ``unrouted``.
"""

from __future__ import annotations

import threading
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from chalicelib.core.errors import SettingsError, describe_validation_error
from chalicelib.infra.settings import Settings, get_settings, parse_json_document

DEFAULT_TENANT_ID = "default"


class PlatformAccounts(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

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
    if settings.tenants_secret_id:
        from chalicelib.infra import aws

        return aws.read_secret(settings.tenants_secret_id), "TENANTS_SECRET_ID"
    return None, "defaults"


def credentials_for(tenant: Tenant, platform: str, account_id: str | None) -> dict[str, str]:
    """The tenant's credentials for a platform account; the default tenant's apply to every account."""
    found = tenant.credentials(platform, account_id)
    if not found and tenant.owns_every_account:
        found = tenant.credentials(platform, "*")
    return found


_lock = threading.Lock()
_directory: TenantDirectory | None = None


def get_directory() -> TenantDirectory:
    """The container's tenants, loaded (and validated) on first use."""
    global _directory
    if _directory is None:
        with _lock:
            if _directory is None:
                _directory = load_directory(get_settings())
    return _directory


def reset_directory() -> None:
    global _directory
    with _lock:
        _directory = None

