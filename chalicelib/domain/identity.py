"""The identity ledger (DynamoDB): one Fullwhere customer per guest known only by a platform id.

Fullwhere merges on email/phone only, so a guest with neither would become a new customer on every order.
A delivery claims the guest with a conditional write before importing; an import whose answer was lost
keeps its claim ``in_doubt`` until Fullwhere has been checked; a known guest whose details changed is not
sent again. The design: docs/architecture.md, "The identity ledger".
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

from chalicelib.core.errors import RetryableError
from chalicelib.infra import aws

STALE_CLAIM_SECONDS = 900  # Lambda's longest run: an older claim has lost its holder
IMPORTING = "importing"
IMPORTED = "imported"
RELEASED = "released"
IN_DOUBT = "in_doubt"


@dataclass(frozen=True)
class Claim:
    token: str
    key: str


@dataclass(frozen=True)
class InDoubt:
    """An earlier import of the guest may have landed: its answer was lost, or its holder died."""

    holder: str  # the claim of that import (its token)
    key: str
    since: float  # epoch seconds: when its answer was lost (or, for a dead holder, when it claimed)

    def age(self) -> float:
        return time.time() - self.since


@dataclass(frozen=True)
class KnownGuest:
    customer_id: str | None
    unchanged: bool  # same fingerprint as the last import


def ledger_key(tenant: str, platform: str, guest_id: str) -> str:
    return f"{tenant}#{platform}#{guest_id}"


class IdentityLedger:
    def __init__(self, table_name: str):
        self._table = table_name

    def _call(self, operation: str, **kwargs):
        client = aws.client("dynamodb")
        try:
            return getattr(client, operation)(TableName=self._table, **kwargs)
        except aws.aws_error_types() as exc:
            if _is_condition_failure(exc):
                raise
            raise RetryableError(f"identity ledger unavailable ({type(exc).__name__})") from None

    def claim(self, key: str, fingerprint: str) -> Claim | KnownGuest | InDoubt:
        """Claim the guest for import, or say it is already known, or that an earlier import is in doubt."""
        now = time.time()
        token = uuid.uuid4().hex
        try:
            self._call(
                "update_item",
                Key={"pk": {"S": key}},
                UpdateExpression="SET #state = :importing, claim = :token, claimed_at = :now, "
                                 "pending_fingerprint = :fp, first_seen = if_not_exists(first_seen, :now)",
                ConditionExpression="attribute_not_exists(pk) OR #state = :released",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":importing": {"S": IMPORTING},
                    ":released": {"S": RELEASED},
                    ":token": {"S": token},
                    ":now": {"N": repr(now)},
                    ":fp": {"S": fingerprint},
                },
            )
            return Claim(token=token, key=key)
        except aws.aws_error_types() as exc:
            if not _is_condition_failure(exc):
                raise
        item = self._call("get_item", Key={"pk": {"S": key}}, ConsistentRead=True).get("Item", {})
        state, holder = item.get("state", {}).get("S"), item.get("claim", {}).get("S")
        if state == IN_DOUBT and holder:
            return InDoubt(holder=holder, key=key, since=float(item.get("doubted_at", {}).get("N", now)))
        claimed_at = float(item.get("claimed_at", {}).get("N", now))
        if state == IMPORTING and holder and claimed_at < now - STALE_CLAIM_SECONDS:
            return InDoubt(holder=holder, key=key, since=claimed_at)  # its holder died, maybe mid-import
        if state != IMPORTED:
            raise _concurrent()
        unchanged = item.get("fingerprint", {}).get("S") == fingerprint
        if not unchanged:
            self._call(
                "update_item",
                Key={"pk": {"S": key}},
                UpdateExpression="SET last_seen_fingerprint = :fp, last_seen_at = :now",
                ExpressionAttributeValues={":fp": {"S": fingerprint}, ":now": {"N": repr(time.time())}},
            )
        return KnownGuest(customer_id=item.get("customer_id", {}).get("S"), unchanged=unchanged)

    def record(self, claim: Claim, fingerprint: str, customer_id: str | None) -> None:
        """Mark the claimed guest imported. Retryable on a DynamoDB failure (the job resumes here)."""
        values = {
            ":imported": {"S": IMPORTED},
            ":token": {"S": claim.token},
            ":fp": {"S": fingerprint},
            ":now": {"N": repr(time.time())},
        }
        expression = "SET #state = :imported, fingerprint = :fp, imported_at = :now REMOVE claim, pending_fingerprint"
        if customer_id:
            expression = expression.replace("imported_at = :now", "imported_at = :now, customer_id = :cid")
            values[":cid"] = {"S": customer_id}
        try:
            self._call(
                "update_item",
                Key={"pk": {"S": claim.key}},
                UpdateExpression=expression,
                ConditionExpression="claim = :token",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues=values,
            )
        except aws.aws_error_types() as exc:
            if not _is_condition_failure(exc):
                raise
            # Our claim went stale and another delivery took it over (after finding what we imported).

    def doubt(self, claim: Claim) -> None:
        """Keep the claim after an import whose outcome is unknown: the next delivery checks Fullwhere.

        Best effort: if it cannot be written, the claim stays ``importing`` and is in doubt once stale.
        """
        self._while_ours(claim, "SET #state = :state, doubted_at = :now",
                         {":state": {"S": IN_DOUBT}, ":now": {"N": repr(time.time())}})

    def landed(self, doubt: InDoubt, customer_id: str | None) -> None:
        """The import in doubt did land (found in Fullwhere): the guest is imported, as what was sent then."""
        # (if_not_exists: an item written by hand without it must not wedge the guest)
        expression = ("SET #state = :imported, fingerprint = if_not_exists(pending_fingerprint, :none), "
                      "imported_at = :now")
        values = {":imported": {"S": IMPORTED}, ":token": {"S": doubt.holder}, ":now": {"N": repr(time.time())},
                  ":none": {"S": ""}}
        if customer_id:
            expression += ", customer_id = :cid"
            values[":cid"] = {"S": customer_id}
        self._take_over(doubt, expression + " REMOVE claim, pending_fingerprint, doubted_at", values)

    def retake(self, doubt: InDoubt, fingerprint: str) -> Claim:
        """The import in doubt did not land (not in Fullwhere): claim the guest to import it."""
        token = uuid.uuid4().hex
        self._take_over(doubt, "SET #state = :importing, claim = :new, claimed_at = :now, pending_fingerprint = :fp "
                               "REMOVE doubted_at",
                        {":importing": {"S": IMPORTING}, ":new": {"S": token}, ":token": {"S": doubt.holder},
                         ":now": {"N": repr(time.time())}, ":fp": {"S": fingerprint}})
        return Claim(token=token, key=doubt.key)

    def _take_over(self, doubt: InDoubt, expression: str, values: dict) -> None:
        # Conditional on the claim in doubt: of two deliveries settling the same doubt, one wins.
        try:
            self._call("update_item", Key={"pk": {"S": doubt.key}}, UpdateExpression=expression,
                       ConditionExpression="claim = :token", ExpressionAttributeNames={"#state": "state"},
                       ExpressionAttributeValues=values)
        except aws.aws_error_types() as exc:
            if not _is_condition_failure(exc):
                raise
            raise _concurrent() from None

    def release(self, claim: Claim) -> None:
        """Give the claim back after a failed import, so the retry can claim again. Best effort: a claim
        that cannot be given back goes stale after STALE_CLAIM_SECONDS, and is in doubt then."""
        self._while_ours(claim, "SET #state = :state REMOVE claim", {":state": {"S": RELEASED}})

    def _while_ours(self, claim: Claim, expression: str, values: dict) -> None:
        # Best effort, and only while the claim is still ours (no error either way).
        try:
            self._call("update_item", Key={"pk": {"S": claim.key}}, UpdateExpression=expression,
                       ConditionExpression="claim = :token", ExpressionAttributeNames={"#state": "state"},
                       ExpressionAttributeValues={**values, ":token": {"S": claim.token}})
        except (RetryableError, *aws.aws_error_types()):
            pass


def _concurrent() -> RetryableError:
    return RetryableError("guest is being imported by a concurrent delivery", retry_after=30)


def _is_condition_failure(exc: BaseException) -> bool:
    response = getattr(exc, "response", None) or {}
    return response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
