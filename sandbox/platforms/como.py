"""Como (a declarative source) in the sandbox: its entry of the sources document, the sandbox's secrets,
webhook signing, the sample member, and an emulator of Como's member API as far as it is publicly attested
(docs/platforms.md, "Declarative sources"): ``POST /getMemberDetails`` with ``X-Api-Key``/``X-Branch-id``/
``X-Pos-id`` headers and a body ``{"customer": {<identifier>: value}}``, answering ``{"status": "ok",
"membership": {...}}`` or Como's error envelope ``{"status": "error", "errors": [{"code": "4001012", ...}]}``
(customer not found)."""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any

from sandbox.emulators.base import EmulatorServer, Request
from sandbox.platforms import Sample, guest_uuid

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

MEMBER_PATH = "/getMemberDetails"


def make_member(common_ext_id: str, **overrides: Any) -> dict[str, Any]:
    """The member fixture of the public SDK's tests (verbatim fields, assets trimmed)."""
    return {
        "firstName": "Jane",
        "lastName": "Smith",
        "birthday": "1995-03-03",
        "email": "jane@email.com",
        "gender": "female",
        "phoneNumber": "2128782328",
        "status": "Active",
        "createdOn": "2016-05-19T10:19:08Z",
        "allowSMS": True,
        "commonExtId": common_ext_id,
        "mobileAppUsed": True,
        "tags": ["VIP", "Vegetarian"],
        **overrides,
    }


class ComoEmulator(EmulatorServer):
    def __init__(self, api_key: str = "como-key", **kwargs: Any):
        super().__init__(**kwargs)
        self.api_key = api_key
        self._members: dict[str, dict[str, Any]] = {}
        self.member_calls = 0
        self.route("POST", MEMBER_PATH, self._member)

    def add_member(self, member: dict[str, Any]) -> None:
        with self.lock:
            self._members[member["commonExtId"]] = member

    def reset_state(self) -> None:
        self._members.clear()
        self.member_calls = 0

    def _member(self, request: Request):
        if not hmac.compare_digest(request.headers.get("x-api-key", ""), self.api_key):
            return 401, {"status": "error", "errors": [{"code": "4010000", "message": "Invalid API key"}]}
        if not request.headers.get("x-branch-id") or not request.headers.get("x-pos-id"):
            return 400, {"status": "error", "errors": [{"code": "4000001", "message": "Missing branch or POS id"}]}
        customer = request.body.get("customer") if isinstance(request.body, dict) else None
        if not isinstance(customer, dict) or not customer:
            return 400, {"status": "error", "errors": [{"code": "4000002", "message": "customer identifier required"}]}
        with self.lock:
            self.member_calls += 1
            member = self._members.get(customer.get("commonExtId", ""))
        if member is None:
            return 200, {"status": "error", "errors": [{"code": "4001012", "message": "Customer not found"}]}
        return 200, {"status": "ok", "membership": member, "memberNotes": []}


# -- the sandbox's Como -----------------------------------------------------------------------------

SECRETS = {"como_webhook": "sandbox-como-secret", "como_api_key": "sandbox-como-key"}


def emulator() -> ComoEmulator:
    return ComoEmulator(api_key=SECRETS["como_api_key"])


def environment(emulator: ComoEmulator) -> dict[str, str]:
    return {"COMO_API_KEY": SECRETS["como_api_key"], "COMO_BRANCH_ID": "sandbox-branch", "COMO_POS_ID": "sandbox-pos"}


def source(emulator: ComoEmulator) -> dict[str, Any]:
    return {"name": "como", "preset": "como",
            "auth": {"type": "hmac", "header": "X-Como-Signature", "secret": SECRETS["como_webhook"]},
            "fetch": {"url": emulator.url + "/getMemberDetails?returnAssets=active"}}


def _build(sandbox: Sandbox, n: int) -> dict[str, Any]:
    member_id = guest_uuid("como", n)
    sandbox.platforms["como"].add_member(make_member(member_id, firstName=f"Guest{n}", lastName="Como",
                                                     email=f"guest{n}@como.sandbox.example", phoneNumber=None))
    return {"event": "member.updated", "id": guest_uuid("como-event", n), "commonExtId": member_id}


SAMPLE = Sample("como", "comoId", _build, lambda n: guest_uuid("como", n))
