"""``python -m bridge_cli COMMAND``: see ``--help``."""

from __future__ import annotations

import argparse
import sys

from rich.markup import escape

from bridge_cli.common import CliError, errors

EPILOG = ("Local defaults: the bridge and queues of the running local stack (`make run`). "
          "Settings (secrets, FULLWHERE_API_KEY, queue URLs) are read from the environment.")


def parser() -> argparse.ArgumentParser:
    main = argparse.ArgumentParser(prog="python -m bridge_cli", description="Tools for the Fullwhere bridge.", epilog=EPILOG)
    commands = main.add_subparsers(dest="command", metavar="COMMAND", required=True)

    demo = commands.add_parser(
        "demo", help="send a signed sample webhook of every platform to the local stack, show the customers",
        description="Seed a new sample guest in every sandboxed platform of the running local stack, send each "
                    "platform's signed webhook to its bridge (and run the OPERA Cloud pull), then print the customers "
                    "that arrived in Fullwhere (the stack's sandbox, or the real API when the stack uses it).")
    demo.add_argument("--platform", action="append", metavar="NAME", help="only this platform (repeatable)")
    demo.add_argument("--wait", type=float, default=60, metavar="SECONDS",
                      help="how long to wait for the customers in Fullwhere (default 60)")

    sign = commands.add_parser(
        "sign", help="print the URL and headers that make a payload a valid webhook of a platform",
        description="Print the URL and headers that make FILE a genuine webhook of PLATFORM, signed with the settings "
                    "in the environment (a declarative source: the sources document of SOURCES_FILE). Signatures with "
                    "a timestamp (Zenchef's Standard Webhooks) are valid for 5 minutes.")
    sign.add_argument("platform", metavar="PLATFORM")
    sign.add_argument("file", metavar="FILE", help="the body, as sent (- for standard input)")
    sign.add_argument("--url", help="the bridge's base URL (default: the local stack's, or http://127.0.0.1:8000)")
    sign.add_argument("--sandbox", action="store_true",
                      help="sign with the running local stack's sandbox settings instead of the environment")
    sign.add_argument("--curl", action="store_true", help="print a curl command instead")

    replay = commands.add_parser(
        "replay", help="send a captured webhook to a bridge",
        description="POST FILE to PLATFORM's webhook URL on a bridge, signed like `sign` unless --as-is. Prints the "
                    "answer; exits 1 when it is not a 2xx.")
    replay.add_argument("platform", metavar="PLATFORM")
    replay.add_argument("file", metavar="FILE", help="the captured body (- for standard input)")
    replay.add_argument("--url", help="the bridge's base URL, or the full webhook URL (default: the local stack's, or "
                                      "http://127.0.0.1:8000)")
    replay.add_argument("--as-is", action="store_true", help="send without signing (give the captured headers with -H)")
    replay.add_argument("-H", "--header", action="append", metavar="'NAME: VALUE'", help="a header to send (repeatable)")
    replay.add_argument("--sandbox", action="store_true", help="sign with the running local stack's sandbox settings")
    replay.add_argument("--timeout", type=float, default=30, metavar="SECONDS", help="default 30")

    dlq = commands.add_parser(
        "dlq", help="list the dead-letter queue, or redrive it to the retry queue",
        description="The dead-letter queue of DEAD_LETTER_QUEUE_URL (AWS credentials and region from the usual "
                    "places), or else of the running local stack.")
    dlq_commands = dlq.add_subparsers(dest="dlq_command", metavar="COMMAND", required=True)
    dlq_list = dlq_commands.add_parser(
        "list", help="show dead letters with their reasons",
        description="Show each dead letter's kind, reason, platform, event id, stage, attempt and date (no guest "
                    "data). Messages read are made visible again at once.")
    dlq_list.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    dlq_list.add_argument("--json", action="store_true", help="one JSON object per line")
    dlq_redrive = dlq_commands.add_parser(
        "redrive", help="move dead letters back to the retry queue",
        description="Move dead letters back to the retry queue: with SQS's message move task in AWS, or by "
                    "receive/send/delete where the endpoint lacks it (moto) or with --limit.")
    dlq_redrive.add_argument("--limit", type=int, help="move at most N messages")
    for command in (dlq_list, dlq_redrive):
        command.add_argument("--dead-letter-queue-url", help="default: DEAD_LETTER_QUEUE_URL, else the local stack's")
        command.add_argument("--retry-queue-url", help="default: RETRY_QUEUE_URL, else found by name")

    backfill = commands.add_parser(
        "backfill", help="import a CSV or JSON Lines export of customers into Fullwhere",
        description="Import FILE (.csv, or .jsonl with one JSON object per line; columns are Fullwhere field names "
                    "such as email, phoneNumber, firstName, deliverooId, metadata.<key>) through the batch endpoint, "
                    "one by one if Fullwhere refuses batches. Resumable: progress is kept in FILE.backfill.json. "
                    "Fullwhere: FULLWHERE_API_KEY/FULLWHERE_API_SECRET/FULLWHERE_API_URL, else the local stack's sandbox.")
    backfill.add_argument("file", metavar="FILE")
    backfill.add_argument("--batch-size", type=int, default=100, help="customers per batch call (default 100)")
    backfill.add_argument("--region", help="region of phone numbers without a country code (default "
                                           "DEFAULT_PHONE_REGION, else FR)")
    backfill.add_argument("--max-rows", type=int, metavar="N", help="stop after N more records (run again to go on)")
    backfill.add_argument("--restart", action="store_true", help="ignore the recorded progress and start over")

    tenants = commands.add_parser(
        "tenants", help="connect a restaurant: check its credentials, the URLs to register, new secrets",
        description="The tenants document (--file, else TENANTS_FILE or TENANTS_SECRET_ID; none: one default tenant "
                    "with the bridge's settings), with the bridge's settings from the environment (and SECRETS_ID). "
                    "See the README, \"Tenants: connecting a restaurant\".")
    tenants_commands = tenants.add_subparsers(dest="tenants_command", metavar="COMMAND", required=True)
    tenants_check = tenants_commands.add_parser(
        "check", help="validate the document, then try every credential against the live APIs",
        description="Validate the tenants document with the bridge's own model, then try each tenant's Fullwhere key "
                    "(POST /partners/customer/list, limit 1) and platform credentials (each platform's token "
                    "endpoint or one read), and show whether each webhook secret is set. Prints ok / rejected / "
                    "unreachable / not configured with the reason, never a secret. Exit status: 1 when anything is "
                    "rejected (or invalid), 3 when nothing is but something could not be reached, else 0.")
    tenants_check.add_argument("--timeout", type=float, default=10, metavar="SECONDS",
                               help="for each call (default 10)")
    tenants_check.add_argument("--json", action="store_true", help="one JSON object per line")
    tenants_urls = tenants_commands.add_parser(
        "urls", help="the webhook URL to register on each platform, where, and the secret that goes with it",
        description="For each platform of a tenant: the exact webhook URL, where on the platform to register it, and "
                    "which secret or token goes with it (named; printed only with --show-secrets, and a token that "
                    "travels in the URL is a placeholder without it).")
    tenants_urls.add_argument("--base", metavar="URL",
                              help="the bridge's base URL, e.g. the stack's EndpointURL output (default: the running "
                                   "local stack's, else https://<bridge>)")
    tenants_urls.add_argument("--show-secrets", action="store_true", help="print the secrets and put tokens in URLs")
    tenants_urls.add_argument("--json", action="store_true", help="one JSON object per line")
    for command in (tenants_check, tenants_urls):
        command.add_argument("--tenant", metavar="ID", help="only this tenant (default: every tenant)")
        command.add_argument("--file", metavar="FILE", help="the tenants document to read (default: TENANTS_FILE, "
                                                            "else TENANTS_SECRET_ID)")
    tenants_secret = tenants_commands.add_parser(
        "new-secret", help="a fresh random secret in the format a platform expects",
        description="Print a fresh random secret in the format PLATFORM expects (a URL-safe token for URL tokens and "
                    "Meta's Verify Token, hex for Zelty and HMAC sources, whsec_ + Base64 for Standard Webhooks "
                    "sources, a keyId and Base64 hmacKey for Simphony), alone on standard output; where it goes, on "
                    "standard error. Without --platform: one for every platform that takes a secret you choose.")
    tenants_secret.add_argument("--platform", metavar="NAME", help="the platform (default: every platform)")

    sweep = commands.add_parser(
        "sweep", help="run one reconciliation sweep now, or backfill from a date",
        description="Sweep every platform account now (due or not): list what changed since its cursor and import "
                    "what no webhook delivered, moving the cursors as the scheduled sweeps do. With IDENTITY_TABLE in "
                    "the environment: against that table and the bridge's settings (AWS credentials from the usual "
                    "places); else the running local stack. --since lists every account from that date whatever its "
                    "cursor (a backfill); cursors never move back.")
    sweep.add_argument("--since", metavar="DATE", help="backfill from this date (YYYY-MM-DD, UTC) or ISO date-time")
    sweep.add_argument("--platform", action="append", metavar="NAME", help="only this platform (repeatable)")
    sweep.add_argument("--tenant", action="append", metavar="ID", help="only this tenant (repeatable)")

    settings_doc = commands.add_parser(
        "settings-doc", help="write docs/settings.md from the settings models",
        description="Write docs/settings.md from the settings models (the bridge-wide settings and each platform's): "
                    "every variable with its default, whether it is a secret, and its description.")
    settings_doc.add_argument("--check", action="store_true",
                              help="write nothing; exit 1 when docs/settings.md differs from the models")
    return main


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from bridge_cli import backfill, demo, dlq, settings_doc, signing, sweep, tenants

    handlers = {"demo": demo.run, "sign": signing.sign, "replay": signing.replay, "backfill": backfill.run,
                "settings-doc": settings_doc.run, ("dlq", "list"): dlq.list_, ("dlq", "redrive"): dlq.redrive,
                ("tenants", "check"): tenants.check, ("tenants", "urls"): tenants.urls,
                ("tenants", "new-secret"): tenants.new_secret, "sweep": sweep.run}
    subcommand = {"dlq": "dlq_command", "tenants": "tenants_command"}.get(args.command)
    handler = handlers[(args.command, getattr(args, subcommand)) if subcommand else args.command]
    try:
        return handler(args)
    except CliError as exc:
        errors.print(f"[red]error:[/red] {escape(str(exc))}", soft_wrap=True)
        return exc.exit_code
    except KeyboardInterrupt:
        errors.print("interrupted")
        return 130


if __name__ == "__main__":
    sys.exit(main())
