"""Emulator of the Fullwhere partner API (https://api.fullwhere.com), the target CRM.

Behaviour follows the vendor's reference (docs/platforms.md, "Fullwhere assumptions"). Where the
vendor says nothing (batch body, list response, error bodies) the choices are marked "assumed" below.

Run standalone as a local sandbox:
    python -m sandbox.emulators.fullwhere --port 8900 [--db FILE] [--account KEY:SECRET ...]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sqlite3
import uuid
from datetime import datetime, timezone
from typing import Any, Iterator

from sandbox.emulators.base import EmulatorServer, HttpError, Request, serve_until_interrupted

TEXT_FIELDS = (
    "description", "company", "firstName", "lastName", "displayName",
    "phoneNumber", "email", "civility", "language",
)  # fmt: skip
PLATFORM_ID_FIELDS = (
    "zenchefId", "ubereatsId", "deliverooId", "zeltyId", "sevenroomsId", "metaId",
    "mewsId", "oracleId", "partoucheId", "comoId", "theForkId", "chr365Id",
)  # fmt: skip
OPTIN_FIELDS = ("smsOptin", "emailOptin")
IMPORT_FIELDS = TEXT_FIELDS + ("metadata",) + OPTIN_FIELDS + PLATFORM_ID_FIELDS

DEFAULT_ACCOUNTS = {"test-key": "test-secret"}

EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
LANGUAGE_RE = re.compile(r"[a-z]{2}")  # the vendor enum's example is "af": ISO 639-1 assumed
E164_RE = re.compile(r"\+[1-9]\d{6,14}")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)

UNAUTHORIZED = {"statusCode": 401, "message": "Unauthorized"}
NOT_FOUND = {"statusCode": 404, "message": "Customer not found."}


def bad_request(messages: list[str] | str) -> HttpError:
    # NestJS ValidationPipe shape; the vendor backend looks like NestJS (operationIds).
    return HttpError(400, {"statusCode": 400, "message": messages, "error": "Bad Request"})


def validate_import(body: Any) -> list[str]:
    """Reasons why `body` is not an acceptable import body (empty list = valid)."""
    if not isinstance(body, dict):
        return ["body must be a JSON object"]
    errors = [f"property {name} should not exist" for name in body if name not in IMPORT_FIELDS]
    for name in TEXT_FIELDS + PLATFORM_ID_FIELDS:
        if body.get(name) is not None and not isinstance(body[name], str):
            errors.append(f"{name} must be a string")
    for name in OPTIN_FIELDS:
        if body.get(name) is not None and not isinstance(body[name], bool):
            errors.append(f"{name} must be a boolean value")
    metadata = body.get("metadata")
    if metadata is not None and not (
        isinstance(metadata, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())
    ):
        errors.append("metadata must be an object whose keys and values are strings")
    checks = (
        ("email", EMAIL_RE, "email must be an email"),
        ("language", LANGUAGE_RE, "language must be a lower-case ISO 639-1 code"),
        ("phoneNumber", E164_RE, "phoneNumber must be a valid phone number in E.164 format"),
    )
    for name, pattern, message in checks:
        value = body.get(name)
        if isinstance(value, str) and not pattern.fullmatch(value):
            errors.append(message)
    return errors


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def customer_view(record: dict[str, Any]) -> dict[str, Any]:
    """The PartnerCustomer JSON the API returns for a stored record."""
    view = dict(record)
    view["metadata"] = dict(record["metadata"])
    for name in OPTIN_FIELDS:  # nullable in storage (so fill-null works), boolean in the API
        view[name] = bool(record[name])
    view.update(
        type="Unknown",
        tags=[],
        feedbackCount=0,
        purchaseCount=0,
        averageFeedbackRating=None,
        dataSources=[],
    )
    return view


class FullwhereEmulator(EmulatorServer):
    """Multi-tenant customer stores, one per API key, with the documented merge rule."""

    def __init__(
        self,
        accounts: dict[str, str] | None = None,
        db_path: str | None = None,
        max_batch: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.accounts = dict(accounts or DEFAULT_ACCOUNTS)
        self.db_path = db_path
        self.max_batch = max_batch  # batch size limit is undocumented; None = unlimited
        self.import_count = 0
        # api_key -> id -> stored record (insertion order = creation order)
        self._stores: dict[str, dict[str, dict[str, Any]]] = {}
        # api_key -> (email, phoneNumber) -> id: the merge key, for O(1) lookups
        self._pairs: dict[str, dict[tuple[str | None, str | None], str]] = {}
        if db_path:
            self._load()

        self.route("POST", "/partners/customer", self._authenticated(self._import_one))
        self.route("GET", "/partners/customer", self._authenticated(self._get_one))
        self.route("POST", "/partners/customer/batch", self._authenticated(self._import_batch))
        self.route("POST", "/partners/customer/list", self._authenticated(self._list))

    # -- test helpers ------------------------------------------------------------

    def customers(self, api_key: str = "test-key") -> list[dict[str, Any]]:
        """Snapshot of an account's customers as the API shows them, in creation order."""
        with self.lock:
            return [customer_view(r) for r in self._stores.get(api_key, {}).values()]

    def find(self, api_key: str = "test-key", **fields: Any) -> list[dict[str, Any]]:
        """Customers whose fields equal all the given values, e.g. find(ubereatsId="x")."""
        return [c for c in self.customers(api_key) if all(c.get(k) == v for k, v in fields.items())]

    def add_customer(self, api_key: str = "test-key", **fields: Any) -> dict[str, Any]:
        """Seed a customer through the same validation and merge logic, without HTTP."""
        errors = validate_import(fields)
        if errors:
            raise ValueError(errors)
        with self.lock:
            return customer_view(self._merge_or_create(api_key, fields)[1])

    def reset_state(self) -> None:
        self._stores.clear()
        self._pairs.clear()
        self.import_count = 0
        if self.db_path:
            with self._db() as db:
                db.execute("DELETE FROM customers")

    # -- handlers ------------------------------------------------------------------

    def _authenticated(self, handler):
        def wrapped(request: Request):
            key = request.headers.get("x-api-key")
            secret = request.headers.get("x-api-secret")
            if key is None or key not in self.accounts or self.accounts[key] != secret:
                return 401, UNAUTHORIZED
            return handler(request, key)

        return wrapped

    def _import_one(self, request: Request, api_key: str):
        errors = validate_import(request.body if request.is_json else None)
        if errors:
            raise bad_request(errors)
        with self.lock:
            self.import_count += 1
            outcome, record = self._merge_or_create(api_key, request.body)
            return (201 if outcome == "created" else 200), customer_view(record)

    def _import_batch(self, request: Request, api_key: str):
        # The real batch body is undocumented: {"customers": [<import body>, ...]} is
        # assumed, as is the per-item result list.
        body = request.body if request.is_json else None
        if not isinstance(body, dict) or set(body) != {"customers"}:
            raise bad_request(["body must be an object with exactly one property: customers"])
        items = body["customers"]
        if not isinstance(items, list) or not items:
            raise bad_request(["customers must be a non-empty array"])
        if self.max_batch is not None and len(items) > self.max_batch:
            raise bad_request([f"customers must contain no more than {self.max_batch} elements"])
        results = []
        with self.lock:
            for index, item in enumerate(items):
                errors = validate_import(item)
                if errors:
                    results.append({"index": index, "status": "rejected", "id": None, "errors": errors})
                    continue
                outcome, record = self._merge_or_create(api_key, item)
                results.append({"index": index, "status": outcome, "id": record["id"], "errors": []})
        return 200, {"results": results}

    def _list(self, request: Request, api_key: str):
        body = {} if request.body is None else request.body
        if not isinstance(body, dict):
            raise bad_request(["body must be a JSON object"])
        errors = [f"property {name} should not exist" for name in body if name not in ("limit", "page")]
        limit, page = body.get("limit", 10), body.get("page", 1)
        if not _is_int(limit) or not 1 <= limit <= 100:
            errors.append("limit must be an integer between 1 and 100")
        if not _is_int(page) or page < 1:
            errors.append("page must be an integer not less than 1")
        if errors:
            raise bad_request(errors)
        customers = self.customers(api_key)
        start = (page - 1) * limit
        # The list response shape is undocumented: this envelope is assumed.
        return 200, {"data": customers[start : start + limit], "total": len(customers), "page": page, "limit": limit}

    def _get_one(self, request: Request, api_key: str):
        customer_id = request.query.get("id", "")
        if not UUID_RE.fullmatch(customer_id):
            raise bad_request("Invalid input format.")
        with self.lock:
            record = self._stores.get(api_key, {}).get(customer_id.lower())
            if record is None:
                return 404, NOT_FOUND
            return 200, customer_view(record)

    # -- the merge rule ----------------------------------------------------------------

    def _merge_or_create(self, api_key: str, body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Vendor rule: an existing email/phoneNumber pair gets its null fields filled in;
        anything else creates a record. Caller holds self.lock and validated `body`.
        """
        store = self._stores.setdefault(api_key, {})
        pairs = self._pairs.setdefault(api_key, {})
        pair = (body.get("email"), body.get("phoneNumber"))
        # A guest with neither email nor phone has no merge key: always a new record.
        existing_id = pairs.get(pair) if pair != (None, None) else None
        if existing_id is not None:
            record = store[existing_id]
            for name in IMPORT_FIELDS:
                value = body.get(name)
                if name == "metadata":
                    for key, item in (value or {}).items():
                        record["metadata"].setdefault(key, item)
                elif value is not None and record[name] is None:
                    record[name] = value
            record["updatedAt"] = _now()
            self._save(api_key, record)
            return "merged", record

        now = _now()
        record = {"id": str(uuid.uuid4()), "createdAt": now, "updatedAt": now}
        for name in IMPORT_FIELDS:
            record[name] = body.get(name)
        record["metadata"] = dict(body.get("metadata") or {})
        record["emailBounced"] = False
        store[record["id"]] = record
        if pair != (None, None):
            pairs[pair] = record["id"]
        self._save(api_key, record)
        return "created", record

    # -- optional SQLite persistence (local sandbox that survives restarts) ------------------

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # A short-lived connection per write: nothing to manage across handler
        # threads or stop()/start() cycles.
        with contextlib.closing(sqlite3.connect(self.db_path)) as db:
            with db:  # commits on success
                db.execute(
                    "CREATE TABLE IF NOT EXISTS customers ("
                    " api_key TEXT NOT NULL, id TEXT NOT NULL, json TEXT NOT NULL,"
                    " PRIMARY KEY (api_key, id))"
                )
                yield db

    def _save(self, api_key: str, record: dict[str, Any]) -> None:
        if not self.db_path:
            return
        with self._db() as db:
            # An upsert keeps the rowid, hence the creation order used by _load().
            db.execute(
                "INSERT INTO customers (api_key, id, json) VALUES (?, ?, ?)"
                " ON CONFLICT (api_key, id) DO UPDATE SET json = excluded.json",
                (api_key, record["id"], json.dumps(record)),
            )

    def _load(self) -> None:
        with self._db() as db:
            rows = db.execute("SELECT api_key, json FROM customers ORDER BY rowid").fetchall()
        for api_key, text in rows:
            record = json.loads(text)
            self._stores.setdefault(api_key, {})[record["id"]] = record
            pair = (record["email"], record["phoneNumber"])
            if pair != (None, None):
                self._pairs.setdefault(api_key, {}).setdefault(pair, record["id"])


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Fullwhere partner API sandbox.")
    parser.add_argument("--port", type=int, default=8900)
    parser.add_argument("--db", help="SQLite file that keeps customers across restarts")
    parser.add_argument(
        "--account",
        action="append",
        metavar="KEY:SECRET",
        help="API credentials, repeatable (default test-key:test-secret)",
    )
    args = parser.parse_args(argv)
    accounts = dict(a.split(":", 1) for a in args.account) if args.account else None
    serve_until_interrupted(FullwhereEmulator(accounts=accounts, db_path=args.db, port=args.port))


if __name__ == "__main__":
    main()
