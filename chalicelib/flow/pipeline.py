"""The import pipeline of one event: fetch → map → identity ledger → Fullwhere import.

The same function runs inline in the webhook request and later in the retry worker: a job resumes at
the stage that failed (``fetch``, ``import`` or ``record``) with that stage's payload. When a stage
fails, :class:`Interrupted` carries the error together with the stage and payload to resume from; the
caller decides where the event goes (retry queue or dead-letter queue).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from chalicelib.connectors.base import Connector, Context, Event
from chalicelib.core.errors import (
    BridgeError,
    BudgetExhausted,
    OutcomeUnknown,
    PermanentError,
    RetryableError,
    SettingsError,
)
from chalicelib.domain.fullwhere import CustomerImport, FullwhereClient
from chalicelib.domain.tenants import Tenant
from chalicelib.infra.http import Deadline
from chalicelib.infra.logs import log, scrub
from chalicelib.infra.settings import Settings

if TYPE_CHECKING:  # imported where it is used: only guests without email or phone need the ledger
    from chalicelib.domain.identity import InDoubt


@dataclass(frozen=True)
class Outcome:
    """How an event ended: ``imported``, ``merged`` (into an existing customer with the same email or
    phone), ``recovered`` (a swept guest the bridge had never sent, imported or merged as ``reason`` says),
    ``duplicate`` (already imported, unchanged), ``skipped`` (not importable: see ``reason``) or ``ignored``
    (nothing to import, by design)."""

    status: str
    reason: str | None = None
    customer_id: str | None = None
    created: bool | None = None


@dataclass(repr=False)
class Interrupted(Exception):
    """A stage failed; resume at ``stage`` with ``payload`` (or dead-letter, if ``error`` is permanent)."""

    error: BridgeError
    stage: str
    payload: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # The payload holds the guest (the mapped customer): a traceback or a repr shows the stage and the
        # error's reason only, scrubbed as a log line's (a reason can quote an API's answer).
        self.args = (str(self),)

    def __str__(self) -> str:
        return f"stage {self.stage}: {type(self.error).__name__}: {scrub(self.error.reason)}"

    def __repr__(self) -> str:
        return f"Interrupted(stage={self.stage!r}, error={type(self.error).__name__}({scrub(self.error.reason)!r}))"

    @property
    def retryable(self) -> bool:
        return isinstance(self.error, RetryableError)


def run(
    connector: Connector,
    event: Event,
    tenant: Tenant,
    settings: Settings,
    deadline: Deadline,
    stage: str = "fetch",
    payload: dict[str, Any] | None = None,
) -> Outcome:
    payload = dict(payload or {})
    context = Context(settings=settings, tenant=tenant, deadline=deadline)
    if stage == "fetch":
        with _stage("fetch", {}):
            guest = connector.fetch(event, context)
            if guest is None:
                return Outcome("ignored", "no guest behind this event")
            if isinstance(guest, str):
                # A record the platform made for itself (Meta's testing-tool leads): ignored, with the reason
                # the connector names, so it is seen and counted without reaching Fullwhere.
                return Outcome("ignored", guest)
            customer = _map(connector, guest, event, context)
        if not customer.has_identity():
            return Outcome("skipped", "no_identity")
        stage, payload = "import", {"customer": customer.payload()}

    with _stage(stage, payload):  # a queued customer that no longer validates is dead-lettered, never printed
        customer = _queued_customer(payload)
    if stage == "import":
        if customer.has_contact():
            # Fullwhere's merge rule deduplicates guests with an email or phone: no ledger needed.
            with _stage("import", payload):
                result = _fullwhere(tenant, settings).import_customer(customer, deadline)
            _remember_sent(connector, event, customer, tenant, settings, deadline)
            return _swept(event, _imported(result))
        if not settings.identity_table:
            return Outcome("skipped", "no_contact_and_no_identity_table")
        with _stage("import", payload):
            outcome = _import_through_ledger(connector, customer, tenant, settings, deadline, payload)
        if outcome.status in ("imported", "merged"):
            _remember_sent(connector, event, customer, tenant, settings, deadline)
        return _swept(event, outcome)

    if stage == "record":
        from chalicelib.domain.identity import Claim, IdentityLedger

        claim = Claim(token=payload["claim"], key=payload["key"])
        with _stage("record", payload):
            IdentityLedger(settings.identity_table).record(claim, payload["fingerprint"], payload.get("customer_id"))
        _remember_sent(connector, event, customer, tenant, settings, deadline)
        return _swept(event, Outcome("imported", customer_id=payload.get("customer_id")))

    raise Interrupted(PermanentError(f"unknown stage {stage!r}"), stage, payload)


def _remember_sent(connector: Connector, event: Event, customer: CustomerImport, tenant: Tenant, settings: Settings,
                   deadline: Deadline) -> None:
    """Record what was sent, for the sweeps to compare (best effort, bounded; no boto3 on a webhook): only where
    the event's account is swept (docs/architecture.md, "Sweeps")."""
    try:
        if (not settings.identity_table or not connector.sweepable() or connector.sweep_minutes(settings) <= 0
                or event.account_id not in connector.sweep_accounts(tenant)):
            return
    except SettingsError:  # the platform's settings became invalid since the import: nothing to record for
        return
    ids = customer.platform_ids()
    if not ids:
        return
    from chalicelib.domain.sweep_state import remember_sent, sent_key

    guest_id = ids.get(connector.id_field) or next(iter(ids.values()))
    remember_sent(settings.identity_table, sent_key(tenant.id, connector.name, guest_id),
                  customer.fingerprint(), min(SENT_RECORD_SECONDS, deadline.remaining()))


# At most this long is spent recording what was sent (one DynamoDB write, a few ms in its region).
SENT_RECORD_SECONDS = 0.5


def _swept(event: Event, outcome: Outcome) -> Outcome:
    """A guest a sweep found unknown to the bridge, now in Fullwhere: ``recovered`` (the reason says how)."""
    if event.recovering and outcome.status in ("imported", "merged"):
        return Outcome("recovered", outcome.status, outcome.customer_id, outcome.created)
    return outcome


def _import_through_ledger(
    connector: Connector,
    customer: CustomerImport,
    tenant: Tenant,
    settings: Settings,
    deadline: Deadline,
    payload: dict[str, Any],
) -> Outcome:
    # Only guests without email or phone need the ledger: the common path never imports it.
    from chalicelib.domain.identity import IdentityLedger, InDoubt, KnownGuest, ledger_key

    ids = customer.platform_ids()
    id_field = connector.id_field if connector.id_field in ids else next(iter(ids))
    ledger = IdentityLedger(settings.identity_table)
    fingerprint = customer.fingerprint()
    claimed = ledger.claim(ledger_key(tenant.id, connector.name, ids[id_field]), fingerprint)
    if isinstance(claimed, KnownGuest):
        if claimed.unchanged:
            return Outcome("duplicate", "already imported", customer_id=claimed.customer_id)
        return Outcome("skipped", "known_guest_changed", customer_id=claimed.customer_id)
    fullwhere = _fullwhere(tenant, settings)
    checked = None
    if isinstance(claimed, InDoubt):
        deadline = _room_to_check(claimed, settings, deadline)
        landed = _look_up(fullwhere, id_field, ids[id_field], claimed, settings, deadline, payload)
        if landed is not None:
            customer_id = landed["id"] if isinstance(landed.get("id"), str) else None
            ledger.landed(claimed, customer_id)
            return Outcome("imported", "earlier_import_landed", customer_id=customer_id)
        claimed, checked = ledger.retake(claimed, fingerprint), "earlier_import_had_not_landed"
    try:
        result = fullwhere.import_customer(customer, deadline)
    except OutcomeUnknown as exc:
        # Fullwhere may have stored the guest, and cannot merge a second import of it: keep the claim,
        # and check Fullwhere before importing again, once this request can no longer land.
        ledger.doubt(claimed)
        raise OutcomeUnknown(f"{exc.reason}; the import is in doubt",
                             retry_after=max(exc.retry_after or 0, settings.in_doubt_settle_seconds)) from None
    except BridgeError:
        ledger.release(claimed)
        raise
    record = {**payload, "claim": claimed.token, "key": claimed.key,
              "fingerprint": fingerprint, "customer_id": result.customer_id}
    with _stage("record", record):
        ledger.record(claimed, fingerprint, result.customer_id)
    return _imported(result, checked)


def _imported(result: Any, reason: str | None = None) -> Outcome:
    # "merged" only when Fullwhere says it filled an existing customer (200 on the emulator; the real
    # API's codes are undocumented, and an unknown answer stays "imported").
    status = "merged" if result.created is False else "imported"
    return Outcome(status, reason, customer_id=result.customer_id, created=result.created)


def _room_to_check(doubt: InDoubt, settings: Settings, deadline: Deadline) -> Deadline:
    """The deadline for reading Fullwhere's list, once the import in doubt has settled, outside a webhook request."""
    wait = settings.in_doubt_settle_seconds - doubt.age()
    if wait > 0:
        raise RetryableError("an earlier import of this guest is in doubt; Fullwhere is checked once it has settled",
                             retry_after=wait)
    room = deadline.stretched()
    if room is None:  # a platform is waiting on this request, and the list can be long
        raise RetryableError("an earlier import of this guest is in doubt; Fullwhere is checked from the retry queue")
    return room


def _look_up(fullwhere: FullwhereClient, id_field: str, guest_id: str, doubt: InDoubt, settings: Settings,
             deadline: Deadline, payload: dict[str, Any]) -> dict[str, Any] | None:
    """Read Fullwhere's list for the guest, resuming where an earlier attempt on the same doubt stopped.

    The page reached is kept in the job's payload (tied to the claim in doubt: a newer doubt starts over),
    so a list longer than one invocation can read is read over several.
    """
    progress = payload.get("lookup") or {}
    start = progress.get("page", 1) if progress.get("doubt") == doubt.holder else 1
    try:
        found = fullwhere.find_customer(
            id_field, guest_id, deadline, settings.fullwhere_list_max_pages, start_page=start,
            on_page=lambda page: payload.__setitem__("lookup", {"doubt": doubt.holder, "page": page}))
    except BudgetExhausted:
        page = payload["lookup"]["page"]
        raise RetryableError(
            f"reading Fullwhere's customer list for an import in doubt; continues at page {page}") from None
    payload.pop("lookup", None)
    return found


def _queued_customer(payload: dict[str, Any]) -> CustomerImport:
    try:
        return CustomerImport.model_validate(payload.get("customer"))
    except ValidationError as exc:
        fields = ", ".join(sorted({str(err["loc"][0]) for err in exc.errors() if err["loc"]})) or "customer"
        raise PermanentError(f"queued customer is invalid ({fields})") from None


def _map(connector: Connector, guest: dict[str, Any], event: Event, context: Context) -> CustomerImport:
    try:
        return connector.map(guest, event, context)
    except ValidationError as exc:
        fields = ", ".join(sorted({str(err["loc"][0]) for err in exc.errors() if err["loc"]}))
        raise PermanentError(f"mapped customer is invalid ({fields})") from None


def _fullwhere(tenant: Tenant, settings: Settings) -> FullwhereClient:
    return FullwhereClient(
        tenant.fullwhere_api_url or settings.fullwhere_api_url,
        tenant.fullwhere_api_key,
        tenant.fullwhere_api_secret,
    )


class _stage:
    """Turn any failure inside a stage into :class:`Interrupted` with the point to resume from.

    An unexpected exception is a bug or a payload shape nobody anticipated: it is retried like a
    transient failure (and dead-lettered with its type as reason once the retry horizon has passed), never lost.
    """

    def __init__(self, name: str, payload: dict[str, Any]):
        self.name = name
        self.payload = payload

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type, exc, tb) -> bool:
        if exc is None or isinstance(exc, Interrupted):
            return False
        if isinstance(exc, BridgeError):
            raise Interrupted(exc, self.name, self.payload) from None
        if isinstance(exc, Exception):
            log("failed", "unexpected error in pipeline", level=40, exc_info=True, stage=self.name)
            raise Interrupted(RetryableError(f"internal error ({exc_type.__name__})"), self.name, self.payload) from None
        return False
