"""What the sweeps keep in the identity table (DynamoDB, partition key ``pk``): cursors, and what was sent.

* A **cursor** per (tenant, platform, account), ``sweep#<tenant>#<platform>#<account>``: the end of the last
  window whose every guest is imported or queued (``swept_until``), when that account was last swept, and the
  earliest time it may be listed again (a 429's ``Retry-After``). A run leases it (``lease_token``, as the OPERA
  positions are leased), so two runs never sweep one account at once, and writes it only while it holds the
  lease. The cursor only ever moves forward.
* A **sent fingerprint** per (tenant, platform, platform id), ``sent#<tenant>#<platform>#<id>``: the
  ``CustomerImport.fingerprint()`` of the last customer the bridge sent Fullwhere for that guest (what describes
  the guest; metadata left out, as it carries per-event facts a list does not always have, e.g. Meta's ad ids),
  written after each import (webhook, retry, sweep). A sweep reads them, 100 to a call, and sends only the guests
  whose customer differs: what the webhook already imported costs no Fullwhere call, and a guest with no record at
  all is one no webhook delivered (``recovered``).

Why not the identity ledger's items: the ledger is a claim protocol for guests *without* email or phone (a
conditional write before each import, in-doubt states), kept only for them. The sent record is a plain
last-write-wins hash, for every guest, that a sweep reads in bulk without claiming anything. The design:
docs/architecture.md, "Sweeps".
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from chalicelib.core.errors import RetryableError
from chalicelib.infra import aws

CURSOR_PREFIX = "sweep#"
SENT_PREFIX = "sent#"
BATCH_GET_MAX = 100  # DynamoDB's BatchGetItem limit
# How long a sent record is kept (DynamoDB's TTL on ``expires_at``, where the table enables it): longer than a
# sweep ever reaches back (Mews' 3-month chunks are walked forward; Deliveroo's API holds 30 days).
SENT_TTL_SECONDS = 400 * 86400


class LeaseLost(Exception):
    """Another run holds the item (a cursor, an OPERA position) now (only possible if this run outlived its
    lease)."""


def cursor_key(tenant: str, platform: str, account: str) -> str:
    return f"{CURSOR_PREFIX}{tenant}#{platform}#{account}"


def sent_key(tenant: str, platform: str, guest_id: str) -> str:
    return f"{SENT_PREFIX}{tenant}#{platform}#{guest_id}"



@dataclass
class Cursor:
    swept_until: datetime | None = None  # windows up to here are safe; None: never swept (a first run)
    last_run: float | None = None  # epoch seconds of the last attempt, successful or not
    not_before: float | None = None  # epoch seconds: honour a Retry-After until then
    leased: bool = False  # another run holds it (read without acquiring)

    def due(self, now: float, minutes: int) -> bool:
        if self.leased:
            return False
        if self.not_before is not None and now < self.not_before:
            return False
        return self.last_run is None or now >= self.last_run + minutes * 60 - 5  # a run's jitter: a few seconds


def _cursor(item: dict[str, Any], now: float) -> Cursor:
    until = item.get("swept_until", {}).get("S")
    lease_until = item.get("lease_until", {}).get("N")
    return Cursor(
        swept_until=datetime.fromisoformat(until) if until else None,
        last_run=float(item["last_run"]["N"]) if "last_run" in item else None,
        not_before=float(item["not_before"]["N"]) if "not_before" in item else None,
        leased=lease_until is not None and float(lease_until) >= now,
    )


class IdentityTable:
    """The identity table's items that runs keep: the sweeps' here, the OPERA positions (handlers/scheduled_pulls.py).
    A cursor or a position is leased to one run at a time (``lease_token``, ``lease_until``) and written only while
    that run holds the lease: a failed condition is :class:`LeaseLost`."""

    unavailable = "sweep state unavailable"

    def __init__(self, table_name: str):
        self._table = table_name

    def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        try:
            return getattr(aws.client("dynamodb"), operation)(**kwargs)
        except aws.aws_error_types() as exc:
            if _is_condition_failure(exc):
                raise LeaseLost() from None
            raise RetryableError(f"{self.unavailable} ({type(exc).__name__})") from None

    def _lease(self, key: str, token: str, lease_seconds: float, now: float,
               also_set: str = "") -> dict[str, Any] | None:
        """Lease the item to this run (``also_set``: more of the update's SET) and read it all; ``None`` when
        another run holds it."""
        try:
            return self._call(
                "update_item", TableName=self._table, Key={"pk": {"S": key}},
                UpdateExpression="SET lease_token = :token, lease_until = :until" + also_set,
                ConditionExpression="attribute_not_exists(lease_until) OR lease_until < :now",
                ExpressionAttributeValues={":token": {"S": token}, ":until": {"N": repr(now + lease_seconds)},
                                           ":now": {"N": repr(now)}},
                ReturnValues="ALL_NEW",
            ).get("Attributes", {})
        except LeaseLost:
            return None

    def _batch_get(self, keys: Iterable[str], attributes: str) -> dict[str, dict[str, Any]]:
        """Every item among ``keys`` (absent ones are left out), 100 per call, unprocessed keys asked again."""
        unique = list(dict.fromkeys(keys))
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(unique), BATCH_GET_MAX):
            request = {self._table: {"Keys": [{"pk": {"S": key}} for key in unique[start:start + BATCH_GET_MAX]],
                                     "ProjectionExpression": attributes}}
            for attempt in range(5):
                answer = self._call("batch_get_item", RequestItems=request)
                for item in answer.get("Responses", {}).get(self._table, []):
                    found[item["pk"]["S"]] = item
                request = answer.get("UnprocessedKeys") or {}
                if not request:
                    break
                time.sleep(0.05 * 2 ** attempt)  # DynamoDB throttled part of the batch
            else:
                raise RetryableError(f"{self.unavailable} (BatchGetItem kept keys unprocessed)")
        return found


class CursorStore(IdentityTable):
    """The sweep cursors."""

    def read(self, keys: Iterable[str]) -> dict[str, Cursor]:
        """The cursors of ``keys`` (a missing one: a first run), without leasing them."""
        now = time.time()
        items = self._batch_get(keys, "pk, swept_until, last_run, not_before, lease_until")
        return {key: _cursor(item, now) for key, item in items.items()}

    def acquire(self, key: str, token: str, lease_seconds: float) -> Cursor | None:
        """Lease the cursor to this run and read it; ``None`` when another run holds it."""
        now = time.time()
        item = self._lease(key, token, lease_seconds, now)
        if item is None:
            return None
        return _cursor({key: value for key, value in item.items() if key != "lease_until"}, now)

    def save(self, key: str, token: str, *, swept_until: datetime | None = None, last_run: float | None = None,
             not_before: float | None = None, release: bool = False) -> None:
        """Move the cursor forward to ``swept_until`` (never back), note the run, and release the lease; only
        while this run holds it (:class:`LeaseLost` otherwise)."""
        sets, removes = ["updated_at = :now"], []
        values: dict[str, Any] = {":token": {"S": token}, ":now": {"N": repr(time.time())}}
        condition = "lease_token = :token"
        if swept_until is not None:
            sets.append("swept_until = :until")
            values[":until"] = {"S": _iso(swept_until)}
            # ISO 8601 UTC strings of one format sort as the times they name: the cursor never moves back.
            condition += " AND (attribute_not_exists(swept_until) OR swept_until <= :until)"
        if last_run is not None:
            sets.append("last_run = :run")
            values[":run"] = {"N": repr(last_run)}
        if not_before is not None:
            sets.append("not_before = :not_before")
            values[":not_before"] = {"N": repr(not_before)}
        elif last_run is not None:
            removes.append("not_before")
        if release:
            removes += ["lease_token", "lease_until"]
        expression = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        try:
            self._call("update_item", TableName=self._table, Key={"pk": {"S": key}}, UpdateExpression=expression,
                       ConditionExpression=condition, ExpressionAttributeValues=values)
        except LeaseLost:
            if swept_until is None:
                raise
            # Either the lease was lost, or another sweep (a backfill) moved the cursor further: keep the later.
            self.save(key, token, last_run=last_run, not_before=not_before, release=release)

    def release(self, key: str, token: str) -> None:
        """Give the lease back (best effort: an unreleased lease expires)."""
        try:
            self._call("update_item", TableName=self._table, Key={"pk": {"S": key}},
                       UpdateExpression="REMOVE lease_token, lease_until", ConditionExpression="lease_token = :token",
                       ExpressionAttributeValues={":token": {"S": token}})
        except (LeaseLost, RetryableError):
            pass


class SentStore(IdentityTable):
    """The sent fingerprints, read by the sweeps (written by :func:`remember_sent`)."""

    def fingerprints(self, keys: Iterable[str]) -> dict[str, str]:
        items = self._batch_get(keys, "pk, fingerprint")
        return {key: item.get("fingerprint", {}).get("S", "") for key, item in items.items()}


def remember_sent(table: str, key: str, fingerprint: str, seconds: float) -> bool:
    """Record what was just sent to Fullwhere for a guest, within ``seconds``; best effort, never raises.

    Through the container's boto3 client when boto3 is already loaded (the retry worker, the sweeps); else
    with one hand-signed request (:mod:`chalicelib.infra.signed_dynamodb`), so that a webhook never loads boto3
    for it. Unwritten, the next sweep that lists the guest sends it once more: Fullwhere merges it (one call, no
    second customer), and it is counted ``recovered``: the cost is stated in docs/architecture.md, "Sweeps"."""
    item = {"pk": {"S": key}, "fingerprint": {"S": fingerprint}, "sent_at": {"N": repr(round(time.time(), 3))},
            "expires_at": {"N": str(int(time.time()) + SENT_TTL_SECONDS)}}
    try:
        if "boto3" in sys.modules:
            aws.client("dynamodb").put_item(TableName=table, Item=item)
            return True
        from chalicelib.infra import signed_dynamodb

        if seconds < 0.05 or not signed_dynamodb.available():
            return False
        signed_dynamodb.call("PutItem", {"TableName": table, "Item": item}, timeout=seconds)
        return True
    except Exception as exc:  # the guest is in Fullwhere: a lost record costs one merged call later, no more
        from chalicelib.infra.logs import log

        log("sent_not_recorded", reason=f"{type(exc).__name__}: {getattr(exc, 'args', [''])[0]}"[:200],
            level=logging.WARNING)
        return False


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _is_condition_failure(exc: BaseException) -> bool:
    response = getattr(exc, "response", None) or {}
    return response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"
