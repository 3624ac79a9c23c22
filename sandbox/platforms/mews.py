"""Mews in the sandbox: an emulator of the Connector API calls the bridge makes (docs/platforms.md, "Mews"),
the sandbox's tokens, webhook signing and the sample guest.

customers/getAll (by ``CustomerIds``, or by ``UpdatedUtc``/``CreatedUtc``/``DeletedUtc`` intervals with
``ActivityStates``, newest first, 1,000 a page with ``Cursor``: what the sweep lists), reservations/getAll and
configuration/get (the enterprise an AccessToken opens: ``tenants check``). Connector conventions: every call
is a POST with a JSON body carrying ClientToken (per application), AccessToken (per enterprise/property) and
Client. The access token decides which enterprise's data a call sees.
"""

from __future__ import annotations

import calendar
import copy
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from sandbox.emulators.base import EmulatorServer, HttpError, Request
from sandbox.platforms import Sample, guest_uuid, required

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

CUSTOMERS_PATH = "/api/connector/v1/customers/getAll"
RESERVATIONS_PATH = "/api/connector/v1/reservations/getAll/2023-06-06"
CONFIGURATION_PATH = "/api/connector/v1/configuration/get"
MAX_IDS = 1000  # documented cap of CustomerIds / ReservationIds and of Limitation.Count

# From the verbatim General Webhook example.
DEFAULT_ENTERPRISE_ID = "851df8c8-90f2-4c4a-8e01-a4fc46b25178"
DEFAULT_INTEGRATION_ID = "c8bee838-7fb1-4f4e-8fac-ac87008b2f90"
DEFAULT_SERVICE_ID = "9745ce3a-8dbb-4cc0-a550-55f9ff67b242"

# Verbatim example of Mews' customers/getAll documentation; make_customer() copies it.
EXAMPLE_CUSTOMER: dict[str, Any] = {
    "Id": "fadd5bb6-b428-45d5-94f8-fd0d89fece6d",
    "ChainId": "3fa85f64-5717-4562-b3fc-2c963f66afa6",
    "Number": "12345",
    "Title": "Mister",
    "Sex": "Male",
    "FirstName": "John",
    "LastName": "Smith",
    "SecondLastName": "Williams",
    "NationalityCode": "US",
    "PreferredLanguageCode": "en-GB",
    "LanguageCode": "en-US",
    "BirthDate": "1983-12-31",
    "BirthCountryCode": None,
    "BirthCountrySubdivisionCode": None,
    "BirthPlace": "New York City, NY",
    "Occupation": "Carpenter",
    "Email": "j.smith@example.com",
    "HasOtaEmail": False,
    "Phone": "00420123456789",
    "TaxIdentificationNumber": "123456789",
    "LoyaltyCode": "LL810213",
    "AccountingCode": "AC123",
    "BillingCode": None,
    "Notes": "",
    "CarRegistrationNumber": "1A2 3456",
    "DietaryRequirements": None,
    "CreatedUtc": "2018-01-01T00:00:00Z",
    "UpdatedUtc": "2018-01-02T00:00:00Z",
    "Passport": None,
    "IdentityCard": None,
    "Visa": None,
    "DriversLicense": None,
    "Address": {
        "Id": "f8495413-bf49-45dd-843c-44be7f365569",
        "Line1": "Somerford Road Hello House/135",
        "Line2": None,
        "City": "Christchurch",
        "PostalCode": "BH23 3PY",
        "CountryCode": "GB",
        "CountrySubdivisionCode": "GB-ENG",
        "Latitude": None,
        "Longitude": None,
    },
    "AddressId": "f8495413-bf49-45dd-843c-44be7f365569",
    "Classifications": ["Returning"],
    "Options": ["SendMarketingEmails"],
    "ItalianDestinationCode": None,
    "ItalianFiscalCode": None,
    "ItalianLotteryCode": None,
    "CompanyId": "c6f5c82d-621a-4c8a-903b-1b0a9a23b71f",
    "MergeTargetId": None,
    "ActivityState": "Active",
    "IsActive": True,
    "PreferredSpaceFeatures": ["OceanView"],
    "CreatorProfileId": "3cd637ef-4728-47f9-8fb1-afb900c9cdcf",
    "UpdaterProfileId": "122fc063-ec6e-4198-b8db-6b168a59ffae",
}


def make_customer(customer_id: str, **overrides: Any) -> dict[str, Any]:
    """The documented customer shape with Id = customer_id, then `overrides` applied."""
    customer = copy.deepcopy(EXAMPLE_CUSTOMER)
    customer["Id"] = customer_id
    customer.update(overrides)
    return customer


def make_reservation(
    reservation_id: str, account_id: str, account_type: str = "Customer", **overrides: Any
) -> dict[str, Any]:
    """A 2023-06-06 reservation; AccountId is the main guest (or a company)."""
    reservation = {
        "Id": reservation_id,
        "ServiceId": DEFAULT_SERVICE_ID,
        "AccountId": account_id,
        "AccountType": account_type,
        "BookerId": account_id if account_type == "Customer" else None,
        "State": "Confirmed",
        "ScheduledStartUtc": "2026-12-01T14:00:00Z",
        "ScheduledEndUtc": "2026-12-03T10:00:00Z",
        "CreatedUtc": "2026-11-26T12:00:00Z",
        "UpdatedUtc": "2026-11-26T12:00:00Z",
    }
    reservation.update(overrides)
    return reservation


def make_webhook(
    enterprise_id: str,
    events: list[tuple[str, str]],
    integration_id: str = DEFAULT_INTEGRATION_ID,
) -> dict[str, Any]:
    """A General Webhook body from (Discriminator, entity Id) pairs,
    e.g. [("CustomerAdded", cid), ("CustomerUpdated", cid)]."""
    return {
        "EnterpriseId": enterprise_id,
        "IntegrationId": integration_id,
        "Events": [{"Discriminator": d, "Value": {"Id": i}} for d, i in events],
    }


def _bad_request(message: str) -> HttpError:
    return HttpError(400, {"Message": message})


class MewsEmulator(EmulatorServer):
    """customers/getAll and reservations/getAll over per-enterprise stores."""

    def __init__(
        self,
        client_token: str = "mews-client",
        access_tokens: dict[str, str] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.client_token = client_token
        # enterprise id -> access token, as the bridge would learn from IntegrationCreated
        self.access_tokens = dict(access_tokens or {DEFAULT_ENTERPRISE_ID: "mews-access"})
        self.get_customers_calls = 0
        self.get_reservations_calls = 0
        self._customers: dict[str, dict[str, dict[str, Any]]] = {}
        self._reservations: dict[str, dict[str, dict[str, Any]]] = {}
        self._deleted: dict[tuple[str, str], str] = {}  # (enterprise, customer) -> DeletedUtc
        self.interval_calls = 0  # customers/getAll calls by time interval (the sweep's)
        self.route("POST", CUSTOMERS_PATH, self._connector(self._get_customers))
        self.route("POST", RESERVATIONS_PATH, self._connector(self._get_reservations))
        self.route("POST", CONFIGURATION_PATH, self._connector(self._get_configuration))

    # -- test helpers ------------------------------------------------------------

    def add_customer(self, enterprise_id: str, customer: dict[str, Any], at: datetime | str | None = None) -> None:
        """Store (or replace) a customer, updated ``at`` (default: now; a new one is also created then), as
        Mews stamps ``CreatedUtc``/``UpdatedUtc``: what the sweep's ``UpdatedUtc`` filter sees."""
        stamp = _stamp(at)
        with self.lock:
            store = self._customers.setdefault(enterprise_id, {})
            if customer["Id"] not in store:
                customer["CreatedUtc"] = stamp
            customer["UpdatedUtc"] = stamp
            store[customer["Id"]] = customer
            self._deleted.pop((enterprise_id, customer["Id"]), None)

    def update_customer(self, enterprise_id: str, customer_id: str, at: datetime | str | None = None,
                        **changes: Any) -> None:
        """Change a stored customer's fields, updated ``at`` (default: now)."""
        with self.lock:
            customer = self._customers[enterprise_id][customer_id]
            customer.update(changes)
            customer["UpdatedUtc"] = _stamp(at)

    def delete_customer(self, enterprise_id: str, customer_id: str, at: datetime | str | None = None) -> None:
        """Erase a customer as Mews does: kept, inactive, listed by ``DeletedUtc`` with ``ActivityStates:
        ["Deleted"]`` only."""
        stamp = _stamp(at)
        with self.lock:
            customer = self._customers[enterprise_id][customer_id]
            customer.update(IsActive=False, ActivityState="Deleted", UpdatedUtc=stamp)
            self._deleted[(enterprise_id, customer_id)] = stamp

    def add_reservation(self, enterprise_id: str, reservation: dict[str, Any]) -> None:
        with self.lock:
            self._reservations.setdefault(enterprise_id, {})[reservation["Id"]] = reservation

    def reset_state(self) -> None:
        self.get_customers_calls = 0
        self.get_reservations_calls = 0
        self.interval_calls = 0
        self._customers.clear()
        self._reservations.clear()
        self._deleted.clear()

    # -- handlers ------------------------------------------------------------------

    def _connector(self, handler):
        """Connector authentication: resolve the enterprise from the AccessToken."""

        def wrapped(request: Request):
            body = request.body if request.is_json else None
            if not isinstance(body, dict):
                raise _bad_request("Invalid request body.")
            if body.get("ClientToken") != self.client_token:
                return 401, {"Message": "Invalid ClientToken."}
            token = body.get("AccessToken")
            enterprise_id = next((e for e, t in self.access_tokens.items() if t == token), None)
            if token is None or enterprise_id is None:
                return 401, {"Message": "Invalid AccessToken."}
            if not isinstance(body.get("Client"), str) or not body["Client"]:
                raise _bad_request("Missing Client.")
            with self.lock:
                return handler(body, enterprise_id)

        return wrapped

    def _get_customers(self, body: dict[str, Any], enterprise_id: str):
        self.get_customers_calls += 1
        if not isinstance(body.get("Extent"), dict):
            raise _bad_request("Invalid Extent.")
        store = self._customers.get(enterprise_id, {})
        intervals = {name: _interval(body, name) for name in INTERVAL_FILTERS if body.get(name) is not None}
        if body.get("CustomerIds") is not None or not intervals:
            customers, cursor = _page(body, "CustomerIds", store)
            return 200, {"Customers": customers, "Documents": None, "Cursor": cursor}
        self.interval_calls += 1
        states = body.get("ActivityStates") or ["Active"]
        if not isinstance(states, list) or not set(states) <= {"Active", "Deleted"}:
            raise _bad_request("Invalid ActivityStates.")
        matching = []
        for customer_id, customer in store.items():
            deleted = self._deleted.get((enterprise_id, customer_id))
            if ("Deleted" if deleted else "Active") not in states:
                continue
            times = {"CreatedUtc": customer.get("CreatedUtc"), "UpdatedUtc": customer.get("UpdatedUtc"),
                     "DeletedUtc": deleted}
            if all(times[name] is not None and start <= _parse(times[name]) <= end
                   for name, (start, end) in intervals.items()):
                matching.append(customer)
        # Newest first, as Mews pages: each answer's Cursor is its oldest item.
        matching.sort(key=lambda customer: (_parse(customer["UpdatedUtc"]), customer["Id"]), reverse=True)
        customers, cursor = _walk(body, matching)
        return 200, {"Customers": customers, "Documents": None, "Cursor": cursor}

    def _get_reservations(self, body: dict[str, Any], enterprise_id: str):
        self.get_reservations_calls += 1
        reservations, cursor = _page(body, "ReservationIds", self._reservations.get(enterprise_id, {}))
        return 200, {"Reservations": reservations, "Cursor": cursor}


    def _get_configuration(self, body: dict[str, Any], enterprise_id: str):
        # configuration/get: the enterprise the AccessToken opens (trimmed to what the bridge reads).
        return 200, {"NowUtc": "2026-12-01T00:00:00Z", "Enterprise": {"Id": enterprise_id, "Name": "Sandbox hotel"}}


INTERVAL_FILTERS = ("CreatedUtc", "UpdatedUtc", "DeletedUtc")


def _stamp(at: datetime | str | None) -> str:
    moment = at if isinstance(at, datetime) else datetime.now(timezone.utc) if at is None else _parse(at)
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _interval(body: dict[str, Any], name: str) -> tuple[datetime, datetime]:
    """A Time interval filter {StartUtc, EndUtc}, refused beyond its documented "max length 3 months"."""
    value = body[name]
    try:
        start, end = _parse(value["StartUtc"]), _parse(value["EndUtc"])
    except (TypeError, KeyError, ValueError, AttributeError):
        raise _bad_request(f"Invalid {name}.") from None
    month, year = start.month + 3, start.year
    if month > 12:
        month, year = month - 12, year + 1
    # Three months on, the same day; or that month's last day (31 January: 30 April).
    limit = start.replace(year=year, month=month, day=min(start.day, calendar.monthrange(year, month)[1]))
    if end < start or end > limit:
        raise _bad_request(f"Invalid {name}: the interval must not be longer than 3 months.")
    return start, end


def _walk(body: dict[str, Any], matching: list[dict[str, Any]]):
    """Limitation {Count, Cursor} over items already in time order (newest first)."""
    count, cursor = _limitation(body)
    page = [copy.deepcopy(item) for item in _after(matching, cursor)[:count]]
    return page, (page[-1]["Id"] if page else cursor)


def _page(body: dict[str, Any], ids_field: str, store: dict[str, dict[str, Any]]):
    """Filter by the ids field, then apply Limitation {Count, Cursor} as Mews does:
    Cursor is the Id of the last item returned, passed back to get the next page."""
    count, cursor = _limitation(body)
    ids = body.get(ids_field)
    if not isinstance(ids, list) or not ids or len(ids) > MAX_IDS:
        raise _bad_request(f"Invalid {ids_field}: 1 to {MAX_IDS} ids are required.")
    wanted = set(ids)
    matching = [copy.deepcopy(item) for item_id, item in store.items() if item_id in wanted]
    page = _after(matching, cursor)[:count]
    return page, (page[-1]["Id"] if page else None)


def _limitation(body: dict[str, Any]) -> tuple[int, Any]:
    """Limitation's Count (1 to MAX_IDS, else 400) and Cursor (None: the first page)."""
    limitation = body.get("Limitation")
    count = limitation.get("Count") if isinstance(limitation, dict) else None
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= MAX_IDS:
        raise _bad_request(f"Invalid Limitation: Count must be between 1 and {MAX_IDS}.")
    return count, limitation.get("Cursor")


def _after(matching: list[dict[str, Any]], cursor: Any) -> list[dict[str, Any]]:
    """The items after the one whose Id is ``cursor`` (all of them without a cursor; an unknown one: 400)."""
    if cursor is None:
        return matching
    positions = [i for i, item in enumerate(matching) if item["Id"] == cursor]
    if not positions:
        raise _bad_request("Invalid Cursor.")
    return matching[positions[0] + 1:]


# -- the sandbox's Mews -----------------------------------------------------------------------------

SECRETS = {
    "mews_webhook_token": "sandbox-mews-token",
    "mews_client_token": "sandbox-mews-client",
    "mews_access_token": "sandbox-mews-access",
}
ENTERPRISE = DEFAULT_ENTERPRISE_ID  # the one enterprise the sandbox's access token opens


def emulator() -> MewsEmulator:
    return MewsEmulator(client_token=SECRETS["mews_client_token"],
                        access_tokens={ENTERPRISE: SECRETS["mews_access_token"]})


def environment(emulator: MewsEmulator) -> dict[str, str]:
    return {
        "MEWS_WEBHOOK_TOKEN": SECRETS["mews_webhook_token"],
        "MEWS_CLIENT_TOKEN": SECRETS["mews_client_token"],
        "MEWS_ACCESS_TOKEN": SECRETS["mews_access_token"],
        "MEWS_API_URL": emulator.url,
        "MEWS_SWEEP_ACCOUNTS": ENTERPRISE,  # the default tenant's enterprise is swept (make run: every minute)
    }


def sign(body: bytes, environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """Mews signs nothing: the webhook URL carries the token (``?Token=``)."""
    return {}, {"Token": required(environ, "MEWS_WEBHOOK_TOKEN")}


def _build(sandbox: Sandbox, n: int) -> dict[str, Any]:
    customer_id = guest_uuid("mews", n)
    sandbox.platforms["mews"].add_customer(ENTERPRISE, make_customer(
        customer_id, FirstName=f"Guest{n}", LastName="Mews", Email=f"guest{n}@mews.sandbox.example", Phone=None))
    return make_webhook(ENTERPRISE, [("CustomerAdded", customer_id), ("CustomerUpdated", customer_id)])


SAMPLE = Sample("mews", "mewsId", _build, lambda n: guest_uuid("mews", n))
