"""``backfill FILE``: import an export of customers (CSV or JSON Lines) into Fullwhere.

Columns (CSV) or keys (JSON Lines) are Fullwhere's field names (``email``, ``phoneNumber``, ``firstName``,
``deliverooId``, ... as :class:`chalicelib.domain.fullwhere.CustomerImport` names them; ``metadata`` as a JSON
object, or ``metadata.<key>`` columns). Each row is cleaned as the connectors clean theirs
(:mod:`chalicelib.core.normalise`), validated with ``CustomerImport``, and sent through the batch endpoint
(``FullwhereClient.import_batch``, whose body is an assumption), or one by one once Fullwhere refuses a
batch with a 4xx. A row that cannot be imported is reported with its line and the reason, never its values.

Progress is kept in ``FILE.backfill.json`` after every chunk: run the same command again after an
interruption and it resumes after the last chunk done. Only the chunk in flight at the interruption is
sent again, which Fullwhere merges (same email/phone) except for rows with neither email nor phone.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from bridge_cli.common import CliError, UsageError, console, fullwhere_target

OUTCOMES = ("created", "merged", "rejected", "sent")  # sent: accepted, but Fullwhere did not say created or merged
RETRIES = 3
KEPT_REJECTIONS = 10_000


class Rejected(Exception):
    """A row that cannot be imported; ``reason`` names fields, never values."""


def state_path(path: Path) -> Path:
    return path.with_name(path.name + ".backfill.json")


def _fields() -> tuple[set[str], set[str], set[str]]:
    from chalicelib.domain.fullwhere.models import PLATFORM_ID_FIELDS, CustomerImport

    every = set(CustomerImport.model_fields)
    return every, set(PLATFORM_ID_FIELDS), {"smsOptin", "emailOptin"}


def read_rows(path: Path, data: bytes) -> Iterator[tuple[int, dict[str, Any] | None, str | None]]:
    """(line, row, problem) for every record; ``row`` is None when the record itself is unreadable."""
    suffix = path.suffix.lower()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text") from None
    if suffix in (".jsonl", ".ndjson"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                yield number, None, "not valid JSON"
                continue
            yield (number, row, None) if isinstance(row, dict) else (number, None, "not a JSON object")
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(text, newline=""))
        every, _, _ = _fields()
        unknown = [name for name in reader.fieldnames or [] if name not in every and not name.startswith("metadata.")]
        if unknown:
            raise UsageError(f"{path.name}: unknown column(s) {', '.join(unknown)}; columns are Fullwhere field names: "
                             f"{', '.join(sorted(every))}, or metadata.<key>")
        for row in reader:
            if None in row:
                yield reader.line_num, None, "more values than columns"
                continue
            yield reader.line_num, row, None
    else:
        raise UsageError(f"{path.name}: use a .csv, or a .jsonl file with one JSON object per line")


def customer(row: dict[str, Any], region: str):
    """The ``CustomerImport`` for one row, cleaned like a connector's; :class:`Rejected` with the reason."""
    from pydantic import ValidationError

    from chalicelib.core.errors import describe_validation_error
    from chalicelib.core.normalise import clean_text, language_code, normalise_email, normalise_phone
    from chalicelib.domain.fullwhere.models import CustomerImport

    every, platform_ids, optins = _fields()
    unknown = sorted(name for name in row if name not in every and not name.startswith("metadata."))
    if unknown:
        raise Rejected(f"unknown field(s) {', '.join(unknown)}")
    values = {name: value for name, value in row.items() if value not in (None, "")}
    data: dict[str, Any] = {}
    metadata: dict[str, str] = {}
    for name, value in values.items():
        if name == "metadata":
            if isinstance(value, str):
                try:
                    value = json.loads(value)
                except ValueError:
                    raise Rejected("metadata is not a JSON object") from None
            if not isinstance(value, dict):
                raise Rejected("metadata is not a JSON object")
            metadata.update({str(key): str(item) for key, item in value.items() if item is not None})
        elif name.startswith("metadata."):
            metadata[name.removeprefix("metadata.")] = str(value)
        elif name in optins:
            data[name] = _boolean(name, value)
        elif name == "email":
            data[name] = normalise_email(str(value))
            if data[name] is None:
                raise Rejected("email is not a valid address")
        elif name == "phoneNumber":
            data[name] = normalise_phone(str(value), region)
            if data[name] is None:
                raise Rejected(f"phoneNumber is not a valid phone number (read in region {region})")
        elif name == "language":
            data[name] = language_code(str(value))
            if data[name] is None:
                raise Rejected("language is not a language code")
        else:
            data[name] = clean_text(str(value), max_length=200 if name not in platform_ids else 100)
    if metadata:
        data["metadata"] = metadata
    try:
        model = CustomerImport.model_validate(data)
    except ValidationError as exc:
        raise Rejected(describe_validation_error(exc, limit=3)) from None
    if not model.has_identity():
        raise Rejected("no email, phone number or platform id: nothing identifies this customer")
    return model


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes", "y", "oui"):
        return True
    if text in ("false", "0", "no", "n", "non"):
        return False
    raise Rejected(f"{name} is not true or false")


class BackfillState:
    """The resumable state, kept next to the input."""

    def __init__(self, path: Path, digest: str, restart: bool):
        self.path = state_path(path)
        self.state: dict[str, Any] = {"input": path.name, "sha256": digest, "next_record": 0, "batch_refused": False,
                                      "counts": dict.fromkeys(OUTCOMES, 0), "rejections": []}
        if self.path.exists() and not restart:
            try:
                saved = json.loads(self.path.read_text())
            except ValueError:
                raise CliError(f"{self.path} is not readable: delete it, or use --restart") from None
            if saved.get("sha256") != digest:
                raise CliError(f"{path.name} changed since the backfill recorded in {self.path.name}: use --restart to "
                               "import it from the start")
            self.state = saved

    def save(self) -> None:
        temporary = self.path.with_name(self.path.name + ".tmp")
        temporary.write_text(json.dumps(self.state, indent=1))
        temporary.replace(self.path)

    def count(self, outcome: str, line: int | None = None, reason: str | None = None) -> None:
        self.state["counts"][outcome] += 1
        if outcome == "rejected" and len(self.state["rejections"]) < KEPT_REJECTIONS:
            self.state["rejections"].append({"line": line, "reason": reason})


def run(args) -> int:
    path = Path(args.file)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
    if args.batch_size < 1 or args.batch_size > 1000:
        raise UsageError("--batch-size must be between 1 and 1000")
    records = list(read_rows(path, data))
    progress_state = BackfillState(path, hashlib.sha256(data).hexdigest(), args.restart)
    state = progress_state.state
    client, where = fullwhere_target()
    region = (args.region or os.environ.get("DEFAULT_PHONE_REGION") or "FR").upper()
    start = state["next_record"]
    if start >= len(records):
        console.print(f"Nothing left to import from {path.name} (all {len(records)} records done; --restart imports it again).")
        _summary(progress_state)
        return 0
    console.print(f"Importing {len(records) - start} record(s) of {path.name} into {where}"
                  + (f", resuming after record {start}" if start else ""))
    stop_at = len(records) if args.max_rows is None else min(len(records), start + args.max_rows)
    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      TimeRemainingColumn(), console=console, transient=True) as progress:
            task = progress.add_task("importing", total=len(records), completed=start)
            while state["next_record"] < stop_at:
                first = state["next_record"]
                chunk = records[first:min(stop_at, first + args.batch_size)]
                _import_chunk(client, chunk, region, progress_state)
                state["next_record"] = first + len(chunk)
                progress_state.save()
                progress.update(task, completed=state["next_record"])
    except KeyboardInterrupt:
        console.print(f"[yellow]Interrupted after {state['next_record']} record(s).[/yellow] Run the same command again "
                      "to resume.")
        _summary(progress_state)
        return 130
    _summary(progress_state)
    if state["next_record"] < len(records):
        console.print(f"{len(records) - state['next_record']} record(s) left: run the same command again to go on.")
    return 0


def _import_chunk(client, chunk: list[tuple[int, dict | None, str | None]], region: str, progress: BackfillState) -> None:
    valid = []
    for line, row, problem in chunk:
        if row is None:
            progress.count("rejected", line, problem)
            continue
        try:
            valid.append((line, customer(row, region)))
        except Rejected as exc:
            progress.count("rejected", line, str(exc))
    if not valid:
        return
    if not progress.state["batch_refused"]:
        from chalicelib.core.errors import PermanentError

        try:
            answer = _with_retries(lambda deadline: client.import_batch([c for _, c in valid], deadline), progress)
        except PermanentError as exc:
            progress.state["batch_refused"] = True
            console.print(f"[yellow]The batch endpoint refused the import ({escape(_short(exc.reason))}): importing one "
                          "customer at a time from now on.[/yellow]", soft_wrap=True)
        else:
            _count_batch(answer, valid, progress)
            return
    _import_singly(client, valid, progress)


def _count_batch(answer: Any, valid: list, progress: BackfillState) -> None:
    from chalicelib.infra.logs import scrub

    results = answer.get("results") if isinstance(answer, dict) else None
    by_index = {item.get("index"): item for item in results or [] if isinstance(item, dict)}
    for index, (line, _) in enumerate(valid):
        item = by_index.get(index, {})
        status = item.get("status")
        if status in ("created", "merged"):
            progress.count(status)
        elif status == "rejected":
            progress.count("rejected", line, scrub("; ".join(str(e) for e in item.get("errors") or []) or "refused by Fullwhere"))
        else:  # the batch response did not say (its shape is undocumented)
            progress.count("sent")


def _import_singly(client, valid: list, progress: BackfillState) -> None:
    from chalicelib.core.errors import PermanentError
    from chalicelib.infra.logs import scrub

    for line, model in valid:
        try:
            result = _with_retries(lambda deadline: client.import_customer(model, deadline), progress)
        except PermanentError as exc:
            progress.count("rejected", line, scrub(_short(exc.reason)))
            continue
        progress.count({True: "created", False: "merged"}.get(result.created, "sent"))


def _with_retries(call, progress: BackfillState):
    """A Fullwhere call, tried again on a retryable failure; gives up with a resumable error."""
    from chalicelib.core.errors import RetryableError
    from chalicelib.infra.http import Deadline

    for attempt in range(RETRIES + 1):
        try:
            return call(Deadline(60, call_timeout=30))
        except RetryableError as exc:
            if attempt == RETRIES:
                progress.save()
                raise CliError(f"Fullwhere is unavailable ({exc.reason}); {progress.state['next_record']} record(s) are "
                               "done: run the same command again to resume") from None
            time.sleep(max(exc.retry_after or 0, 2 ** attempt))


def _short(reason: str) -> str:
    return reason if len(reason) <= 200 else reason[:197] + "..."


def _summary(progress: BackfillState) -> None:
    counts = progress.state["counts"]
    table = Table(title=f"Backfill of {progress.state['input']} (all runs)")
    table.add_column("Outcome")
    table.add_column("Rows", justify="right")
    table.add_row("imported (created)", str(counts["created"]))
    table.add_row("merged into an existing customer", str(counts["merged"]))
    if counts["sent"]:
        table.add_row("imported (Fullwhere did not say created or merged)", str(counts["sent"]))
    table.add_row("rejected", str(counts["rejected"]))
    console.print(table)
    rejections = progress.state["rejections"]
    for rejection in rejections[:20]:
        console.print(f"  line {rejection['line']}: {rejection['reason']}", markup=False)
    if len(rejections) > 20:
        console.print(f"  ... {len(rejections) - 20} more in {progress.path}")
