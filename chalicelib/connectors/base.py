"""The one small interface every platform connector implements.

A connector knows one platform and nothing else:

1. :meth:`Connector.verify` checks the request is really from the platform (signature or token), on
   the raw bytes, before anything is parsed; except for a named tenant on a platform whose accounts each
   have their own secret: the body is parsed first, only to learn whose secret verifies it;
2. :meth:`Connector.parse` turns the body into :class:`Event` objects (and names the event types it
   ignores by design);
3. :meth:`Connector.fetch` gets what the webhook lacks from the platform's API (default: nothing to
   fetch, the guest is in the event);
4. :meth:`Connector.map` turns the platform's guest into a Fullwhere :class:`CustomerImport`;
5. :meth:`Connector.sweep` (optional) lists what changed on an account in a time window, as the events the
   webhook would have delivered, so that a scheduled sweep recovers what a platform gave up delivering
   (docs/architecture.md, "Sweeps").

The pipeline does the rest, the same way for every platform. Adding a platform: docs/architecture.md,
"A platform in one place".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any, ClassVar

from chalicelib.core.errors import SettingsError, unauthorized
from chalicelib.core.signatures import equal
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.domain.tenants import Tenant, credentials_for, has_own_webhook_secrets
from chalicelib.infra.http import Deadline
from chalicelib.infra.settings import Settings, SettingsModel, settings_of


@dataclass(frozen=True)
class WebhookRequest:
    """What a connector may look at: the exact bytes received, headers (lower-case keys), query."""

    platform: str
    body: bytes
    headers: Mapping[str, str]
    query: Mapping[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def required_header(self, name: str) -> str:
        """The header's value; a request without it is refused (401)."""
        value = self.headers.get(name.lower())
        if not value:
            raise unauthorized(f"missing {name}")
        return value


@dataclass
class Event:
    """One thing a platform told us about, reduced to what is needed to finish it later.

    ``data`` must be JSON-serialisable: a retry job carries it through the queue.
    """

    event_id: str
    kind: str
    account_id: str | None
    data: dict[str, Any]
    # Events of one webhook with the same guest_key are processed once (Mews sends CustomerAdded and
    # CustomerUpdated for the same customer in the same message).
    guest_key: str | None = None
    # Set by a sweep on a guest the bridge has no record of having sent: once imported (now or from the retry
    # queue), its outcome is logged ``recovered`` (docs/architecture.md, "Sweeps").
    recovering: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Event":
        return cls(**data)


@dataclass(frozen=True)
class SweepWindow:
    """The time interval one :meth:`Connector.sweep` call lists: what was created or updated at or after
    ``since`` and before ``until``. Both are timezone-aware UTC datetimes; the sweep run already cut it to the
    connector's :attr:`Connector.sweep_max_interval` and :attr:`Connector.sweep_reach`, and widened it by
    ``SWEEP_OVERLAP_SECONDS`` on the left (so items are listed more than once: the run deduplicates)."""

    since: datetime
    until: datetime

    def __post_init__(self) -> None:
        if self.since.tzinfo is None or self.until.tzinfo is None:
            raise ValueError("a SweepWindow is timezone-aware (UTC)")
        if self.until < self.since:
            raise ValueError("a SweepWindow ends after it starts")

    def chunks(self, longest: timedelta | None) -> list["SweepWindow"]:
        """This window cut into consecutive windows of at most ``longest`` (itself when ``None`` or shorter)."""
        if longest is None or self.until - self.since <= longest:
            return [self]
        cuts, start = [], self.since
        while start < self.until:
            end = min(start + longest, self.until)
            cuts.append(SweepWindow(start, end))
            start = end
        return cuts


@dataclass
class ParsedWebhook:
    events: list[Event]
    # Event types received but not imported by design (counted in the logs, acknowledged with 200).
    ignored: list[str] = field(default_factory=list)
    # The accounts the ignored items name. On a platform whose accounts each have their own webhook secret, the
    # body is verified with the secret of the one tenant owning every account it names, ignored items included.
    ignored_accounts: set[str | None] = field(default_factory=set)

    def account_ids(self) -> set[str | None]:
        """Every account the body names (``None`` for an item that names none)."""
        return {event.account_id for event in self.events} | self.ignored_accounts


@dataclass
class Context:
    """What fetching and mapping one event may use."""

    settings: Settings
    tenant: Tenant
    deadline: Deadline

    def credentials(self, platform: str, account_id: str | None) -> dict[str, str]:
        return credentials_for(self.tenant, platform, account_id)

    def phone_regions(self, *platform_signals: str | None) -> list[str]:
        """Where to read a phone number written without its country code, in order: the countries the
        platform gives for this guest or venue, then the tenant's region, then the deployment's default.
        The first region in which the number is valid wins (docs/platforms.md, "Phone numbers")."""
        candidates = [*platform_signals, self.tenant.phone_region, self.settings.default_phone_region]
        return list(dict.fromkeys(region.upper() for region in candidates if isinstance(region, str) and region))


class Connector(ABC):
    """A platform's connector. Its class line states the platform's facts: its name, the Fullwhere field
    holding its customer id, its settings model (its <PLATFORM>_* variables, loaded on first use) and the
    field of that model that authenticates its webhooks, e.g. ``class MewsConnector(Connector,
    platform="mews", id_field="mewsId", settings=MewsSettings, secret="webhook_token")``."""

    name: ClassVar[str]
    id_field: ClassVar[str]
    settings_model: ClassVar[type[SettingsModel] | None] = None
    secret_setting: ClassVar[str] = ""
    # Sweeps (docs/architecture.md, "Sweeps"): the longest window one sweep() call may be given (the API's
    # limit on a filter interval, e.g. Mews' 3 months; a longer one is cut and swept in order, the cursor moving
    # after each piece), and how far back the API still lists anything (Deliveroo: 30 days; an older cursor is
    # moved up to it, and the loss of reach logged). None: no limit.
    sweep_max_interval: ClassVar[timedelta | None] = None
    sweep_reach: ClassVar[timedelta | None] = None
    # The acknowledgement the platform expects.
    ack_status: ClassVar[int] = 200
    ack_body: ClassVar[str] = ""
    ack_content_type: ClassVar[str] = "text/plain"

    def __init_subclass__(cls, *, platform: str | None = None, id_field: str | None = None,
                          settings: type[SettingsModel] | None = None, secret: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if platform is not None:
            cls.name, cls.id_field, cls.settings_model, cls.secret_setting = platform, id_field, settings, secret

    def platform_settings(self) -> Any:
        """This platform's settings (may raise SettingsError when they are invalid)."""
        return settings_of(self.settings_model)

    def configured(self) -> bool:
        """Whether the secret needed to verify this platform's webhooks is set (never reveals it): under a tenants
        document, on a platform whose accounts each have their own, every tenant listing it has its own."""
        tenants = self._tenants_with_own_secrets()
        if tenants is not None:
            return tenants
        return bool(getattr(self.platform_settings(), self.secret_setting))

    def _tenants_with_own_secrets(self) -> bool | None:
        """Whether some tenant lists this platform and each one that does has its own secret; ``None`` when the
        deployment's secret is the one used (a per-integration platform, or no tenants document)."""
        if not self.own_webhook_secrets():
            return None
        from chalicelib.domain.tenants import get_directory

        tenants = get_directory().tenants()
        if any(tenant.owns_every_account for tenant in tenants):
            return None
        listing = [tenant for tenant in tenants if self.name in tenant.platforms]
        return bool(listing) and all(tenant.has_own_webhook_secret(self.name) for tenant in listing)

    def query_token(self, request: WebhookRequest, parameter: str, tenant: Tenant | None = None) -> None:
        """Refuse (401) a request whose ``parameter`` query value is not the webhook secret."""
        if not equal(request.query.get(parameter), self.webhook_secret(tenant)):
            raise unauthorized(f"{parameter} query parameter missing or wrong")

    def own_webhook_secrets(self) -> bool:
        """Whether each account registers this platform's webhook with its own secret (Zelty, SevenRooms, Simphony,
        the declarative sources): a named tenant's request is then routed on its not yet trusted body and verified
        with that tenant's secret (docs/platforms.md, "Webhook secrets: per integration or per account")."""
        return has_own_webhook_secrets(self.name)

    def webhook_secret(self, tenant: Tenant | None = None) -> str:
        """The verification secret: a named ``tenant``'s own, on a platform whose accounts each have one; else the
        deployment's. Either unconfigured accepts nothing: the webhooks answer 503, so the platform keeps them and
        delivers again once the operator has set it (never 401: nothing is forged)."""
        if tenant is not None and not tenant.owns_every_account and self.own_webhook_secrets():
            return tenant.own_webhook_secret(self.name)
        own = self.platform_settings()
        secret = getattr(own, self.secret_setting)
        if not secret:
            raise SettingsError(f"{type(own).variable(self.secret_setting)} is not configured")
        return secret

    @abstractmethod
    def verify(self, request: WebhookRequest, tenant: Tenant | None = None) -> None:
        """Raise :func:`~chalicelib.core.errors.unauthorized` unless the request is authentic. ``tenant``: the named
        tenant whose own secret must verify it (only given where :meth:`own_webhook_secrets`); ``None``: the
        deployment's secret (per-integration platforms, and every platform of the default tenant)."""

    @abstractmethod
    def parse(self, request: WebhookRequest) -> ParsedWebhook:
        """Events from a verified body; raise :func:`~chalicelib.core.errors.malformed` with a reason."""

    def handshake(self, request: WebhookRequest) -> tuple[int, str, str]:
        """Answer a ``GET`` on the webhook URL: ``(status, body, content type)``.

        Most platforms never send one; those with a verification handshake (Meta) override this.
        """
        return 405, '{"error": "method_not_allowed", "reason": "this platform sends webhooks with POST"}', "application/json"

    def fetch(self, event: Event, context: Context) -> dict[str, Any] | str | None:
        """The guest record behind ``event``; ``None`` when there is no guest to import, or a short reason
        (e.g. ``test_lead``) when the record is the platform's own and is ignored by design."""
        return event.data

    def check_credentials(self, account_id: str | None, context: Context) -> str | None:
        """Try the API credentials an event of ``account_id`` would be fetched with, at the platform's cheapest
        call (``python -m bridge_cli tenants check``); return what the answer proved, or ``None`` when the
        bridge calls no API of this platform. Failures raise what a fetch would (``Held``, ``RetryableError``,
        ``PermanentError``), so the check and the pipeline read credentials the same way."""
        return None

    @abstractmethod
    def map(self, guest: dict[str, Any], event: Event, context: Context) -> CustomerImport:
        """The Fullwhere customer for ``guest`` (the pipeline then checks it has an identity)."""

    # Sweeps: the platform's list API, read on a schedule (docs/architecture.md, "Sweeps").

    def sweep(self, account_id: str, window: SweepWindow, context: Context) -> Iterator[Event] | None:
        """Events for what was created or updated on ``account_id`` within ``window``, as the webhook would have
        delivered them, so that :meth:`fetch` and :meth:`map` work on them unchanged (an event may carry the
        listed record in its ``data`` so that :meth:`fetch` need not read it again). Give each event the
        ``event_id`` and ``guest_key`` the webhook gives the same thing, where the platform allows: the
        identity ledger and the run's deduplication key on them.

        ``None``: this platform cannot be swept (the default). Otherwise a generator, read lazily page by page;
        it raises what :meth:`fetch` would: ``Held(..., "not_configured")`` when this tenant has no credentials
        to list with (the account is skipped and logged, never swept with the deployment's credentials for a
        named tenant: use ``context.credentials``), ``RetryableError`` (with ``retry_after`` on a 429, which the
        run honours before listing that account again) when the API fails: the run then stops this account
        without moving its cursor. Never yield a guest the platform says was erased (e.g. Mews ``DeletedUtc``).
        """
        return None

    def sweep_accounts(self, tenant: Tenant) -> list[str]:
        """The accounts of ``tenant`` to sweep on this platform: a named tenant's, those its tenants document
        lists under this platform; the default tenant's, those listed by this platform's ``sweep_accounts``
        setting (``<PLATFORM>_SWEEP_ACCOUNTS``, comma-separated) when its settings model has one. Override where
        an account is not what the API lists by (e.g. a Deliveroo brand's restaurants). The ids are those of the
        events' ``account_id``: the pipeline records what it sent only for the accounts named here."""
        if not tenant.owns_every_account:
            block = tenant.platforms.get(self.name)
            return sorted(account for account in (block.accounts if block else {}) if account != "*")
        listed = getattr(self.platform_settings(), "sweep_accounts", None) if self.settings_model else None
        return split_accounts(listed)

    def sweepable(self) -> bool:
        """Whether this connector implements :meth:`sweep` (its platform has a list API the bridge reads)."""
        return type(self).sweep is not Connector.sweep

    def sweep_minutes(self, settings: Settings) -> int:
        """Minutes between two sweeps of this platform: its ``<PLATFORM>_SWEEP_MINUTES`` when its settings model
        has a ``sweep_minutes`` field and it is set, else ``SWEEP_MINUTES``. 0: not swept."""
        own = getattr(self.platform_settings(), "sweep_minutes", None) if self.settings_model else None
        return settings.sweep_minutes if own is None else own


def split_accounts(listed: str | None) -> list[str]:
    """The account ids of a comma-separated setting (empty entries dropped, each once, in order)."""
    return list(dict.fromkeys(part.strip() for part in (listed or "").split(",") if part.strip()))
