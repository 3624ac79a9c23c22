"""The one small interface every platform connector implements.

A connector knows one platform and nothing else:

1. :meth:`Connector.verify` checks the request is really from the platform (signature or token), on
   the raw bytes, before anything is parsed;
2. :meth:`Connector.parse` turns the body into :class:`Event` objects (and names the event types it
   ignores by design);
3. :meth:`Connector.fetch` gets what the webhook lacks from the platform's API (default: nothing to
   fetch, the guest is in the event);
4. :meth:`Connector.map` turns the platform's guest into a Fullwhere :class:`CustomerImport`.

The pipeline does the rest, the same way for every platform. Adding a platform: docs/architecture.md,
"A platform in one place".
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

from chalicelib.core.errors import unauthorized
from chalicelib.core.signatures import equal
from chalicelib.domain.fullwhere.models import CustomerImport
from chalicelib.domain.tenants import Tenant, credentials_for
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "Event":
        return cls(**data)


@dataclass
class ParsedWebhook:
    events: list[Event]
    # Event types received but not imported by design (counted in the logs, acknowledged with 200).
    ignored: list[str] = field(default_factory=list)


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
        """Whether the secret needed to verify this platform's webhooks is set (never reveals it)."""
        return bool(getattr(self.platform_settings(), self.secret_setting))

    def query_token(self, request: WebhookRequest, parameter: str) -> None:
        """Refuse (401) a request whose ``parameter`` query value is not the webhook secret."""
        if not equal(request.query.get(parameter), self.webhook_secret()):
            raise unauthorized(f"{parameter} query parameter missing or wrong")

    def webhook_secret(self) -> str:
        """The verification secret; an unconfigured platform accepts nothing (401), rather than anything."""
        own = self.platform_settings()
        secret = getattr(own, self.secret_setting)
        if not secret:
            raise unauthorized(f"{type(own).variable(self.secret_setting)} is not configured")
        return secret

    @abstractmethod
    def verify(self, request: WebhookRequest) -> None:
        """Raise :func:`~chalicelib.core.errors.unauthorized` unless the request is authentic."""

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

    @abstractmethod
    def map(self, guest: dict[str, Any], event: Event, context: Context) -> CustomerImport:
        """The Fullwhere customer for ``guest`` (the pipeline then checks it has an identity)."""
