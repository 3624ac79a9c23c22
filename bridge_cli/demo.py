"""``demo``: a signed sample webhook from every platform into the running local stack, then the customers
that arrived in Fullwhere (its sandbox, or the real API when the stack uses it)."""

from __future__ import annotations

import time
from typing import Any

import httpx
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bridge_cli.common import CliError, console, control, local_stack, stack_fullwhere


def run(args) -> int:
    state = local_stack()
    base = state["bridge_url"]
    try:
        httpx.get(base + "/health", timeout=5).raise_for_status()
    except httpx.HTTPError as exc:
        raise CliError(f"the bridge at {base} does not answer ({type(exc).__name__}): is `make run` still running?") from None
    fullwhere, where = stack_fullwhere(state)
    prepared = control(state, "/samples", {"platforms": args.platform or []})
    deliveries: list[dict[str, Any]] = prepared["deliveries"]
    if not deliveries:
        raise CliError("no platform of the local stack uses its sandbox: the demo has nothing to send")
    console.print(f"Sample guest #{prepared['n']} of {len(deliveries)} platforms -> {base}; customers read from {where}")

    outcomes: dict[str, str] = {}
    with _progress() as progress:
        task = progress.add_task("sending webhooks", total=len(deliveries))
        for delivery in deliveries:
            if delivery["pulled"]:
                outcomes[delivery["platform"]] = "pulled"
            else:
                outcomes[delivery["platform"]] = _send(base, delivery)
            progress.advance(task)
        if any(d["pulled"] for d in deliveries):
            progress.update(task, description="running the OPERA Cloud pull")
            control(state, "/oracle-pull", {})

    expected = {(d["id_field"], d["guest_id"]): d["platform"] for d in deliveries
                if d["imports"] and outcomes[d["platform"]] in ("200", "pulled")}
    found = _wait_for_customers(fullwhere, expected, args.wait)

    table = Table(title=f"Customers in {where}")
    table.add_column("Platform")
    table.add_column("Webhook")
    table.add_column("Customer")
    table.add_column("Email", overflow="fold")
    table.add_column("Id field", overflow="fold")
    table.add_column("Fullwhere id", no_wrap=True)
    missing = 0
    for delivery in deliveries:
        platform, key = delivery["platform"], (delivery["id_field"], delivery["guest_id"])
        customer = found.get(key)
        if customer:
            name = " ".join(part for part in (customer.get("firstName"), customer.get("lastName")) if part)
            table.add_row(platform, outcomes[platform], name, customer.get("email") or "", f"{key[0]}",
                          (customer.get("id") or "")[:8])
        elif not delivery["imports"]:
            table.add_row(platform, outcomes[platform], "[dim]none: no guest in its notifications[/dim]", "", "", "")
        else:
            missing += 1
            table.add_row(platform, outcomes[platform], "[red]not arrived[/red]", "", key[0], "")
    console.print(table)
    for platform, reason in prepared["skipped"].items():
        console.print(f"[dim]{platform}: skipped ({reason})[/dim]")
    if missing:
        console.print(f"[red]{missing} customer(s) did not arrive within {args.wait:g} s.[/red] They may be waiting in the "
                      "retry queue; the stack's log says why, and `python -m bridge_cli dlq list` shows dead letters.")
        return 1
    return 0


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    console=console, transient=True)


def _send(base: str, delivery: dict[str, Any]) -> str:
    try:
        response = httpx.post(base + delivery["path"], content=delivery["body"].encode(), headers=delivery["headers"],
                              timeout=30)
    except httpx.HTTPError as exc:
        return f"failed ({type(exc).__name__})"
    return str(response.status_code)


def _wait_for_customers(client, expected: dict[tuple[str, str], str], wait: float) -> dict[tuple[str, str], dict]:
    """Poll Fullwhere's customer list until every expected customer is there, or ``wait`` seconds pass."""
    found: dict[tuple[str, str], dict] = {}
    deadline = time.monotonic() + wait
    with _progress() as progress:
        task = progress.add_task("waiting for the customers in Fullwhere", total=len(expected))
        while True:
            for customer in _recent_customers(client):
                for field, value in expected:
                    if customer.get(field) == value:
                        found[(field, value)] = customer
            progress.update(task, completed=len(found))
            if len(found) == len(expected) or time.monotonic() >= deadline:
                return found
            time.sleep(0.5)


def _recent_customers(client, pages: int = 5, limit: int = 100) -> list[dict]:
    """The newest customers first, as far as the list response lets us tell (its shape is undocumented:
    the sandbox answers ``{"data": [...], "total": n}`` in creation order)."""
    from chalicelib.core.errors import BridgeError
    from chalicelib.infra.http import Deadline

    def page(number: int) -> Any:
        try:
            return client.list_customers(Deadline(30), page=number, limit=limit)
        except BridgeError as exc:
            raise CliError(f"cannot list Fullwhere's customers: {exc.reason}") from None

    first = page(1)
    total = first.get("total") if isinstance(first, dict) else None
    if not isinstance(total, int) or total <= limit:
        return _items(first)
    last = -(-total // limit)
    customers: list[dict] = []
    for number in range(last, max(1, last - pages), -1):
        customers.extend(_items(page(number)))
    return customers


def _items(body: Any) -> list[dict]:
    if isinstance(body, dict):
        body = next((body[key] for key in ("data", "items", "customers", "results") if isinstance(body.get(key), list)), [])
    return [item for item in body if isinstance(item, dict)] if isinstance(body, list) else []
