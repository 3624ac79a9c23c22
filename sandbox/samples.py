"""One sample guest per platform, as many distinct guests as wanted.

``sample.prepare(sandbox, n)`` puts guest number ``n`` where the platform's API would have it (in the
sandbox's emulator) and returns the signed webhook the platform would send for it (``None`` for OPERA
Cloud, whose events are pulled: preparing enqueues the business event instead). ``sample.guest_id(n)``
is the id Fullwhere should end up with in ``sample.id_field``. Guests are distinct across ``n`` and
deterministic, so a run can be checked afterwards.

The payloads start from the documented fixtures in ``tests/fixtures/``; requests are signed with the
bridge's own connectors (``Connector.sign``), which the tests check against independent signers.
"""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from sandbox.emulators.mews import make_customer
from sandbox.emulators.oracle import make_event
from sandbox.emulators.ubereats import make_order
from sandbox.stack import MEWS_ENTERPRISE, META_PAGE, ORACLE_HOTEL, Sandbox

FIXTURES = Path(__file__).parent.parent / "tests" / "fixtures"


def fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


@dataclass(frozen=True)
class Delivery:
    """A webhook request as the platform would send it."""

    platform: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"/webhooks/{self.platform}" + (f"?{urlencode(self.query)}" if self.query else "")


@dataclass(frozen=True)
class Sample:
    platform: str
    id_field: str
    build: Callable[[Sandbox, int], dict[str, Any] | None]  # seeds the emulator, returns the webhook payload
    guest_id: Callable[[int], str]
    pulled: bool = False  # OPERA Cloud: no webhook, the scheduled pull reads the event
    imports: bool = True  # Simphony: verified and acknowledged, nothing to import

    def prepare(self, sandbox: Sandbox, n: int) -> Delivery | None:
        payload = self.build(sandbox, n)
        if payload is None:
            return None
        return sign(sandbox, self.platform, json.dumps(payload).encode())


def sign(sandbox: Sandbox, platform: str, body: bytes) -> Delivery:
    """Sign ``body`` the way ``platform`` does, with the sandbox's secrets."""
    from chalicelib.connectors import builtin_names, get_connector
    from chalicelib.connectors.declarative import DeclarativeConnector
    from chalicelib.infra.settings import load_settings
    from chalicelib.domain.sources import parse_document

    settings = load_settings(sandbox.environment())
    if platform in builtin_names():
        connector = get_connector(platform)
    else:
        sources = parse_document(sandbox.sources_file.read_text(), "sandbox sources").sources
        connector = DeclarativeConnector(next(source for source in sources if source.name == platform))
    headers, query = connector.sign(body, settings)
    return Delivery(platform, body, {"Content-Type": "application/json", **headers}, query)


def _uuid(platform: str, n: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fullwhere-sandbox/{platform}/{n}"))


# -- one builder per platform -----------------------------------------------------------------------

def _deliveroo(sandbox: Sandbox, n: int) -> dict[str, Any]:
    payload = fixture("deliveroo/order_new_loyalty.json")
    order = payload["body"]["order"]
    order["id"] = f"gb:{_uuid('deliveroo-order', n)}"
    order["customer"]["first_name"] = f"Guest{n} D."
    order["customer"]["loyalty"] = {"loyalty_id": f"LOY-{n}", "card_number": f"{n:06d}"}
    return payload


def _ubereats(sandbox: Sandbox, n: int) -> dict[str, Any]:
    store, order_id = "c7f1dc2f-5d3b-4a4e-9f6e-2a1b3c4d5e6f", _uuid("ubereats-order", n)
    sandbox.platforms["ubereats"].add_order(make_order(order_id, store, f"eater-{n}", first_name=f"Guest{n}"))
    notification = fixture("ubereats/orders_notification.json")
    notification.update(event_id=_uuid("ubereats-event", n), resource_href=f"https://api.uber.com/v2/eats/order/{order_id}")
    notification["meta"].update(resource_id=order_id, user_id=store)
    return notification


def _mews(sandbox: Sandbox, n: int) -> dict[str, Any]:
    customer_id = _uuid("mews", n)
    sandbox.platforms["mews"].add_customer(MEWS_ENTERPRISE, make_customer(
        customer_id, FirstName=f"Guest{n}", LastName="Mews", Email=f"guest{n}@mews.sandbox.example", Phone=None))
    return {"EnterpriseId": MEWS_ENTERPRISE, "IntegrationId": "c8bee838-7fb1-4f4e-8fac-ac87008b2f90",
            "Events": [{"Discriminator": "CustomerAdded", "Value": {"Id": customer_id}},
                       {"Discriminator": "CustomerUpdated", "Value": {"Id": customer_id}}]}


def _thefork(sandbox: Sandbox, n: int) -> dict[str, Any]:
    customer_uuid = _uuid("thefork", n)
    customer = {**fixture("thefork/customer.json"), "customerUuid": customer_uuid, "firstName": f"Guest{n}",
                "lastName": "Fork", "email": f"guest{n}@thefork.sandbox.example", "phone": None}
    sandbox.platforms["thefork"].add_customer(customer)
    return {**fixture("thefork/customer_created.json"), "uuid": customer_uuid}


def _meta(sandbox: Sandbox, n: int) -> dict[str, Any]:
    lead_id = str(900000000000 + n)
    sandbox.platforms["meta"].add_lead(META_PAGE, {**fixture("meta/lead.json"), "id": lead_id, "field_data": [
        {"name": "full_name", "values": [f"Guest{n} Meta"]},
        {"name": "email", "values": [f"guest{n}@meta.sandbox.example"]},
    ]})
    webhook = fixture("meta/leadgen_webhook.json")
    change = webhook["entry"][0]["changes"][0]
    change["value"].update(leadgen_id=int(lead_id), page_id=int(META_PAGE))
    webhook["entry"][0]["changes"] = [change]
    return webhook


def _sevenrooms(sandbox: Sandbox, n: int) -> dict[str, Any]:
    client_id = f"sandbox-client-{n}"
    client = {**fixture("sevenrooms/client.json")["data"], "id": client_id, "first_name": f"Guest{n}",
              "last_name": "Rooms", "email": f"guest{n}@sevenrooms.sandbox.example", "phone_number": None}
    sandbox.platforms["sevenrooms"].add_client(client)
    payload = fixture("sevenrooms/reservation_created.json")
    payload["entity"].update(id=f"sandbox-reservation-{n}", client_id=client_id, first_name=f"Guest{n}",
                             last_name="Rooms", email=client["email"], phone_number=None)
    return payload


def _zelty(sandbox: Sandbox, n: int) -> dict[str, Any]:
    payload = fixture("zelty/order_ended.json")
    payload["event_id"] = _uuid("zelty-event", n)
    payload["data"]["id"] = 88000000 + n
    payload["data"]["customer"].update(id=4800000 + n, fname=f"Guest{n}", name="Zelty",
                                       mail=f"guest{n}@zelty.sandbox.example", phone=None)
    return payload


def _oracle(sandbox: Sandbox, n: int) -> None:
    profile_id = str(5000000 + n)
    profile = copy.deepcopy(fixture("oracle/profile.json"))
    profile["profileIdList"] = [{"type": "Profile", "id": profile_id}]
    details = profile["profileDetails"]
    details["customer"]["personName"][0].update(givenName=f"Guest{n}", surname="Opera")
    details.setdefault("emails", {})["emailInfo"] = [
        {"email": {"emailAddress": f"guest{n}@opera.sandbox.example", "primaryInd": True, "type": "HOME"}}]
    details.pop("telephones", None)
    ohip = sandbox.platforms["oracle"]
    ohip.add_profile(profile_id, profile)
    ohip.enqueue(ORACLE_HOTEL, make_event(_uuid("oracle-event", n), "NEW PROFILE", profile_id, hotel_id=ORACLE_HOTEL))
    return None


def _simphony(sandbox: Sandbox, n: int) -> dict[str, Any]:
    payload = fixture("simphony/check_notification.json")
    payload["messages"][0]["id"] = _uuid("simphony", n)
    return payload


def _como(sandbox: Sandbox, n: int) -> dict[str, Any]:
    from sandbox.emulators.como import make_member

    member_id = _uuid("como", n)
    sandbox.platforms["como"].add_member(make_member(member_id, firstName=f"Guest{n}", lastName="Como",
                                                     email=f"guest{n}@como.sandbox.example", phoneNumber=None))
    return {"event": "member.updated", "id": _uuid("como-event", n), "commonExtId": member_id}


def _partouche(sandbox: Sandbox, n: int) -> dict[str, Any]:
    return {"event": "customer.created", "customer": {"player_id": 700000 + n, "prenom": f"Guest{n}",
                                                      "nom": "Partouche", "email": f"guest{n}@partouche.sandbox.example"}}


def _chr365(sandbox: Sandbox, n: int) -> dict[str, Any]:
    return {"customers": [{"client_id": f"c-{n}", "firstname": f"Guest{n}", "lastname": "Chr",
                           "mail": f"guest{n}@chr365.sandbox.example"}]}


def _zenchef(sandbox: Sandbox, n: int) -> dict[str, Any]:
    payload = fixture("sources/zenchef_booking.json")
    payload["booking"].update(uid=f"bk-{n}", customer_uid=f"cust-{n}", first_name=f"Guest{n}", last_name="Chef",
                              email=f"guest{n}@zenchef.sandbox.example", telephone=None)
    return payload


SAMPLES: dict[str, Sample] = {sample.platform: sample for sample in (
    Sample("deliveroo", "deliverooId", _deliveroo, lambda n: f"loyalty:LOY-{n}"),
    Sample("ubereats", "ubereatsId", _ubereats, lambda n: f"eater-{n}"),
    Sample("mews", "mewsId", _mews, lambda n: _uuid("mews", n)),
    Sample("thefork", "theForkId", _thefork, lambda n: _uuid("thefork", n)),
    Sample("meta", "metaId", _meta, lambda n: f"lead:{900000000000 + n}"),
    Sample("sevenrooms", "sevenroomsId", _sevenrooms, lambda n: f"sandbox-client-{n}"),
    Sample("zelty", "zeltyId", _zelty, lambda n: str(4800000 + n)),
    Sample("oracle", "oracleId", _oracle, lambda n: str(5000000 + n), pulled=True),
    Sample("simphony", "oracleId", _simphony, lambda n: "", imports=False),
    Sample("como", "comoId", _como, lambda n: _uuid("como", n)),
    Sample("partouche", "partoucheId", _partouche, lambda n: str(700000 + n)),
    Sample("chr365", "chr365Id", _chr365, lambda n: f"c-{n}"),
    Sample("zenchef", "zenchefId", _zenchef, lambda n: f"cust-{n}"),
)}


def webhook_samples() -> list[Sample]:
    """The samples delivered by webhook (every platform but the pulled ones)."""
    return [sample for sample in SAMPLES.values() if not sample.pulled]
