"""``sweep``: one reconciliation sweep now, or a backfill from a date (docs/architecture.md, "Sweeps").

Against AWS when ``IDENTITY_TABLE`` is set in the environment (with the bridge's settings: ``SECRETS_ID``, the
tenants document, the queue URLs, AWS credentials and region from the usual places): the sweep runs in this
process, as the ``sweeps`` Lambda would, reading and moving the same cursors. Otherwise the running local stack
(``make run``) runs it. Every account is swept now, due or not; ``--since`` lists each from that date whatever its
cursor says (a backfill: what changed before sweeps were turned on, or before an outage longer than the window),
and the cursors never move back.
"""

from __future__ import annotations

import os
from datetime import datetime, timezone
from typing import Any

from rich.table import Table

from bridge_cli.common import CliError, UsageError, console, control, local_stack

BUDGET_SECONDS = 3600.0  # a backfill from the command line may take its time


def parse_since(value: str | None) -> datetime | None:
    """``YYYY-MM-DD`` (midnight UTC) or an ISO 8601 date-time (UTC when it names no offset)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since {value!r} is not a date (YYYY-MM-DD) or an ISO 8601 date-time") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    if moment > datetime.now(timezone.utc):
        raise UsageError("--since is in the future")
    return moment


def run(args) -> int:
    since = parse_since(args.since)
    platforms, tenants = args.platform or [], args.tenant or []
    if os.environ.get("IDENTITY_TABLE"):
        summary, where = sweep_here(since, platforms, tenants), f"table {os.environ['IDENTITY_TABLE']}"
    else:
        state = local_stack(required=False)
        if state is None:
            raise CliError("which bridge? Set IDENTITY_TABLE (the stack's IdentityTableName output) with the bridge's "
                           "settings and AWS credentials, or start the local stack with `make run`")
        summary = control(state, "/sweep", {"since": since.isoformat() if since else None, "platforms": platforms,
                                            "tenants": tenants}, timeout=BUDGET_SECONDS + 60)
        where = "the local stack"
    return show(summary, where)


def sweep_here(since: datetime | None, platforms: list[str], tenants: list[str]) -> dict[str, Any]:
    from chalicelib.connectors import all_connectors, platform_names
    from chalicelib.core.errors import SettingsError
    from chalicelib.domain.tenants import get_directory
    from chalicelib.flow import sweep
    from chalicelib.infra.settings import get_settings

    try:
        settings, directory, connectors = get_settings(), get_directory(), all_connectors()
        unknown = sorted(set(platforms) - set(platform_names()))
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    if unknown:
        raise UsageError(f"unknown platform(s) {unknown}")
    missing = sorted(set(tenants) - {tenant.id for tenant in directory.tenants()})
    if missing:
        raise UsageError(f"no tenant {missing} in the tenants document")
    return sweep.run(connectors, directory, settings, BUDGET_SECONDS, since=since, platforms=platforms,
                     tenants=tenants, force=True)


def show(summary: dict[str, Any], where: str) -> int:
    results = summary.get("results") or []
    if summary.get("status") != "ok":
        console.print(f"[red]sweep {summary.get('status')}[/red] ({where}): see the log lines above")
        return 1
    if not results:
        console.print(f"nothing to sweep ({where}): no platform account is swept (SWEEP_MINUTES, <PLATFORM>_SWEEP_"
                      "ACCOUNTS or the tenants document)")
        return 0
    table = Table(title=f"Sweep ({where})")
    for column in ("platform", "tenant", "account", "outcome", "listed", "sent", "unchanged", "swept until / why"):
        table.add_column(column)
    for result in results:
        until = result.get("swept_until")
        why = (datetime.fromtimestamp(until, timezone.utc).isoformat(timespec="seconds") if until
               else result.get("reason") or result.get("detail") or "")
        table.add_row(result["platform"], result["tenant"], result["account_id"], result["outcome"],
                      str(result.get("listed", 0)), str(result.get("sent", 0)), str(result.get("unchanged", 0)),
                      str(why))
    console.print(table)
    console.print("Guests sent are logged one by one (outcome recovered: no webhook had delivered them).")
    incomplete = [result for result in results if result["outcome"] in ("sweep_incomplete", "failed")]
    return 1 if incomplete else 0
