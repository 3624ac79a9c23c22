"""``tenants check``, ``tenants urls`` and ``tenants new-secret``: connecting a restaurant (README, "Tenants").

``check`` validates the tenants document with the bridge's own model, then tries every credential at the
cheapest call the bridge knows: Fullwhere's ``POST /partners/customer/list`` with ``limit: 1``, and each
platform's token endpoint or one read (the connector's ``check_credentials``, so the check reads credentials
exactly as a fetch does). ``urls`` says what to register on each platform, and ``new-secret`` makes a secret
in the format the platform expects.

Settings are the bridge's, from the environment (and ``SECRETS_ID``); the document is ``--file``, else
``TENANTS_FILE`` / ``TENANTS_SECRET_ID``, else there is one ``default`` tenant. Nothing printed holds a
secret unless ``urls --show-secrets`` (or ``new-secret``) is asked for one.
"""

from __future__ import annotations

import base64
import json
import secrets
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote

from rich.markup import escape
from rich.table import Table

from bridge_cli.common import CliError, UsageError, bridge_settings, console, errors, local_stack, platform_names

OK, REJECTED, UNREACHABLE, NOT_CONFIGURED, INVALID = "ok", "rejected", "unreachable", "not configured", "invalid"
STYLES = {OK: "green", REJECTED: "red", UNREACHABLE: "yellow", NOT_CONFIGURED: "yellow", INVALID: "red"}
PLACEHOLDER_BASE = "https://<bridge>"
CHECK_WORKERS = 8

# Where each platform takes the webhook URL (docs/platforms.md, "Registering the webhook on each platform").
WHERE = {
    "deliveroo": "your Deliveroo account manager / Developer portal: the Order Events webhook",
    "ubereats": "Uber's developer dashboard → Setup → Webhooks → Primary Webhook URL (one per app: every store "
                "of the app is delivered there); the app needs eats.store.orders.read",
    "mews": "ask Mews support to set it as your General Webhook URL, with the events CustomerAdded, "
            "CustomerUpdated and ServiceOrderUpdated",
    "thefork": "send it to TheFork's integrations team (integrations@thefork.com), who configure the B2B API "
               "webhook (customer and reservation events) by hand",
    "meta": "App Dashboard → Webhooks → Page: callback URL and Verify Token, subscribe to leadgen; then install "
            "the app on each Page: POST https://graph.facebook.com/{page-id}/subscribed_apps?subscribed_fields=leadgen "
            "with its Page token",
    "sevenrooms": "ask SevenRooms (your account manager or api-integration-support@sevenrooms.com) to send the "
                  "reservation and client webhooks of the venues to it, authenticated as SEVENROOMS_AUTH says",
    "zelty": "with the brand's API key: POST https://api.zelty.fr/<version>/webhooks with "
             '{"order.ended": {"target": "<URL>", "version": "v2"}, …} and the secret as secret_key '
             "(write v2: a v1 webhook is unsigned and refused)",
    "oracle": "nothing to register: OPERA pushes no webhook. At each hotel, create the external system and its "
              "business events (New Profile, Update Profile); oracle_pull dequeues them every 5 minutes",
    "simphony": "POST {basePath}/notifications/registration with the keyId and hmacKey (keyType hmac-sha256), "
                "then subscribe under {basePath}/notifications/subscriptions",
}
WHERE_SOURCE = "wherever the partner configures its webhook (the source is declared in the sources document)"

# Query parameters that carry a platform's webhook token in the URL it is given.
URL_TOKENS = {"mews": "Token", "thefork": "token"}


# -- the document ------------------------------------------------------------------------------------

def _settings(args):
    settings = bridge_settings()
    if getattr(args, "file", None):
        settings = settings.model_copy(update={"tenants_file": args.file})
    return settings


def _directory(settings):
    from chalicelib.core.errors import SettingsError
    from chalicelib.domain.tenants import load_directory

    try:
        return load_directory(settings)
    except SettingsError as exc:
        raise CliError(str(exc)) from None


def _document_source(settings) -> str:
    if settings.tenants_file:
        return f"the tenants document {settings.tenants_file}"
    if settings.tenants_secret_id:
        return "the tenants document of TENANTS_SECRET_ID"
    return "no tenants document: one default tenant, with the bridge's settings"


def _chosen(directory, tenant_id: str | None) -> list:
    tenants = directory.tenants()
    if tenant_id is None:
        return tenants
    tenant = directory.get(tenant_id)
    if tenant is None:
        raise UsageError(f"no tenant {tenant_id!r}; the document has: {', '.join(t.id for t in tenants)}")
    return [tenant]


def _platforms(tenant) -> list[str]:
    """The tenant's platforms: those it lists, or every platform for the default tenant."""
    return platform_names() if tenant.owns_every_account else list(tenant.platforms)


def _connector(platform: str):
    from chalicelib.connectors import get_connector
    from chalicelib.core.errors import SettingsError

    try:
        return get_connector(platform)
    except SettingsError as exc:
        raise CliError(str(exc)) from None


def _is_source(connector) -> bool:
    return getattr(connector, "source", None) is not None


def _tenant_secret_platform(connector) -> bool:
    """Whether each account registers this platform's webhook with its own secret, so that a named tenant's
    requests are verified with the tenant's own (docs/platforms.md, "Webhook secrets: per integration or per
    account"); the others have one secret per integration, in the bridge's settings."""
    return connector.own_webhook_secrets()


def _tenant_secret_field(platform: str) -> str:
    from chalicelib.domain.tenants import KEYED_SECRETS

    return "hmac_keys" if platform in KEYED_SECRETS else "webhook_secret"


def _tenant_webhook_secret(tenant, platform: str) -> str | None:
    """The named tenant's own secret for ``platform`` (Simphony's keys as their JSON), or None."""
    block = tenant.platforms.get(platform)
    value = getattr(block, _tenant_secret_field(platform), None) if block is not None else None
    return json.dumps(value) if isinstance(value, dict) else value


@dataclass(frozen=True)
class Secret:
    """The secret that goes with a platform's webhook: its name, and its value when it is set."""

    name: str
    placeholder: str  # what a URL shows in its place: <NAME>
    value: str | None
    to_platform: bool  # the operator gives it to the platform (else the platform gave it, or signs with its own)
    note: str = ""


def webhook_secret(tenant, connector) -> Secret | None:
    """What goes with ``connector``'s webhook for ``tenant`` (None: no webhook, or one declared without any)."""
    from chalicelib.core.errors import SettingsError

    name = connector.name
    if name == "oracle":
        return None
    if _tenant_secret_platform(connector) and not tenant.owns_every_account:
        field = f"platforms.{name}.{_tenant_secret_field(name)}"
        return Secret(f"{field} of tenant {tenant.id} (tenants document)", field, _tenant_webhook_secret(tenant, name),
                      to_platform=True)
    if _is_source(connector):
        auth = connector.source.auth
        if not hasattr(auth, "secret_value"):
            return None
        if auth.secret_env:
            return Secret(f"{auth.secret_env} (secret_env of source {name})", auth.secret_env, auth.secret_value(),
                          to_platform=True)
        return Secret(f"the secret of source {name} (sources document)", f"secret of source {name}",
                      auth.secret_value(), to_platform=True)
    try:
        settings = connector.platform_settings()
    except SettingsError as exc:
        raise CliError(str(exc)) from None
    model = type(settings)
    variable = model.variable(connector.secret_setting)
    value = getattr(settings, connector.secret_setting)
    if name == "meta":
        verify = model.variable("verify_token")
        return Secret(f"{verify} (typed in Meta's Verify Token field)", verify, settings.verify_token,
                      to_platform=True, note=f"Meta signs each webhook with the app's App Secret ({variable})")
    if name == "ubereats":
        return Secret(f"none to give: Uber signs with the app's client secret ({variable})", variable, value,
                      to_platform=False)
    if name == "deliveroo":
        return Secret(f"the webhook secret Deliveroo gives you → {variable}", variable, value, to_platform=False)
    return Secret(variable, variable, value, to_platform=True)


def _verification(tenant, connector) -> list[tuple[str, bool]] | None:
    """What must be set for ``tenant``'s webhooks of ``connector`` to be verified: (name, set?) pairs; an empty
    list for a source declared without authentication, None for a platform without webhooks."""
    if connector.name == "oracle":
        return None
    if _is_source(connector) and not hasattr(connector.source.auth, "secret_value"):
        return []
    secret = webhook_secret(tenant, connector)
    if _tenant_secret_platform(connector) and not tenant.owns_every_account or _is_source(connector):
        return [(secret.placeholder, bool(secret.value))]
    needed = [(type(connector.platform_settings()).variable(connector.secret_setting), connector.configured())]
    if connector.name == "meta":  # Meta's GET handshake needs the Verify Token before any webhook arrives
        needed.append((secret.placeholder, bool(secret.value)))
    return needed


# -- check -------------------------------------------------------------------------------------------

@dataclass
class Row:
    tenant: str
    platform: str
    account: str
    credential: str
    status: str
    reason: str


def _outcome(exc: BaseException) -> tuple[str, str]:
    from chalicelib.core.errors import Held, PermanentError, RetryableError, SettingsError

    if isinstance(exc, Held):
        return (NOT_CONFIGURED if exc.cause == "not_configured" else REJECTED), exc.reason
    if isinstance(exc, RetryableError):
        return UNREACHABLE, exc.reason
    if isinstance(exc, PermanentError):  # any other refusal of a call made only with these credentials
        return REJECTED, exc.reason
    if isinstance(exc, SettingsError):
        return INVALID, str(exc)
    return INVALID, f"unexpected {type(exc).__name__}"


def _attempt(call: Callable[[], str]) -> tuple[str, str]:
    try:
        return OK, call()
    except Exception as exc:  # every failure becomes a row: one bad credential never hides the others
        return _outcome(exc)


def _fullwhere_check(settings, tenant, timeout: float) -> Callable[[], str]:
    def call() -> str:
        from chalicelib.core.errors import Held
        from chalicelib.domain.fullwhere import FullwhereClient
        from chalicelib.infra.http import Deadline

        if not tenant.fullwhere_api_key or not tenant.fullwhere_api_secret:
            raise Held("no Fullwhere API key and secret (FULLWHERE_API_KEY / FULLWHERE_API_SECRET, or the "
                       "tenant's fullwhere_api_key / fullwhere_api_secret)", "not_configured")
        url = tenant.fullwhere_api_url or settings.fullwhere_api_url
        client = FullwhereClient(url, tenant.fullwhere_api_key, tenant.fullwhere_api_secret)
        client.list_customers(Deadline(timeout, call_timeout=timeout), page=1, limit=1)
        return f"the key lists customers at {url}"

    return call


def _platform_check(settings, tenant, connector, account: str | None, timeout: float) -> Callable[[], str | None]:
    def call() -> str | None:
        from chalicelib.connectors.base import Context
        from chalicelib.infra.http import Deadline

        context = Context(settings=settings, tenant=tenant, deadline=Deadline(timeout, call_timeout=timeout))
        return connector.check_credentials(account, context)

    return call


def _webhook_row(tenant, connector) -> Row | None:
    from chalicelib.core.errors import SettingsError

    try:
        needed = _verification(tenant, connector)
    except (CliError, SettingsError) as exc:  # the platform's settings are invalid: the bridge answers 503
        return Row(tenant.id, connector.name, "", "webhook secret", INVALID, str(exc))
    if needed is None:
        return None
    if not needed:
        return Row(tenant.id, connector.name, "", "webhook secret", OK, "the source is declared without authentication")
    missing = [name for name, present in needed if not present]
    if not missing:
        names = " and ".join(name for name, _ in needed)
        return Row(tenant.id, connector.name, "", "webhook secret", OK,
                   f"{names} {'are' if len(needed) > 1 else 'is'} set (checked on every webhook: nothing to call)")
    if _tenant_secret_platform(connector) and not tenant.owns_every_account:
        reason = (f"{missing[0]} is not set: this tenant's {connector.name} webhooks answer 503 until it is "
                  f"(`tenants new-secret --platform {connector.name}`)")
    else:
        reason = f"{' and '.join(missing)} not set: {connector.name} webhooks answer 503"
    return Row(tenant.id, connector.name, "", "webhook secret", NOT_CONFIGURED, reason)


def _rows(settings, tenants: list, timeout: float) -> list[Row]:
    """Every row of the check, the distinct calls made at once (a credential shared by several accounts or
    tenants, such as an app's client credentials, is tried once)."""
    planned: list[tuple[Row, Any]] = []  # (row, key of its call, or None when the row is already decided)
    calls: dict[Any, Callable[[], Any]] = {}
    for tenant in tenants:
        key = ("fullwhere", tenant.fullwhere_api_url or settings.fullwhere_api_url, tenant.fullwhere_api_key,
               tenant.fullwhere_api_secret)
        calls.setdefault(key, _fullwhere_check(settings, tenant, timeout))
        planned.append((Row(tenant.id, "fullwhere", "", "API key and secret", "", ""), key))
        for platform in _platforms(tenant):
            connector = _connector(platform)
            row = _webhook_row(tenant, connector)
            if row is not None:
                planned.append((row, None))
            accounts = [None] if tenant.owns_every_account else list(tenant.platforms[platform].accounts)
            if not accounts:
                planned.append((Row(tenant.id, platform, "", "accounts", NOT_CONFIGURED,
                                    "no account listed: no event of this platform reaches this tenant"), None))
            for account in accounts:
                credentials = tenant.credentials(platform, account) if account is not None else {}
                # The account matters to the call only through its own credentials (a Mews token must open
                # that enterprise); without any, the deployment's or nothing is tried, the same for all.
                key = (platform, tenant.owns_every_account, tuple(sorted(credentials.items())),
                       account if credentials else None)
                calls.setdefault(key, _platform_check(settings, tenant, connector, account, timeout))
                planned.append((Row(tenant.id, platform, account or "", "API credentials", "", ""), key))
    with ThreadPoolExecutor(max_workers=CHECK_WORKERS) as pool:
        futures = {key: pool.submit(_attempt, call) for key, call in calls.items()}
        results = {key: future.result() for key, future in futures.items()}
    rows = []
    for row, key in planned:
        if key is not None:
            status, reason = results[key]
            if status == OK and reason is None:
                continue  # the bridge calls no API of this platform: the guest travels in the webhook
            row.status, row.reason = status, reason
        rows.append(row)
    return rows


def _known_secrets(tenants: list) -> set[str]:
    """Every secret this run may have touched, so that no answer quoting one is ever printed."""
    from chalicelib.connectors import all_connectors, settings_models
    from chalicelib.infra.settings import settings_of

    found: set[str] = set()
    for tenant in tenants:
        found.update({tenant.fullwhere_api_key, tenant.fullwhere_api_secret})
        for platform, block in tenant.platforms.items():
            found.add(getattr(block, "webhook_secret", None) or "")
            found.update((getattr(block, "hmac_keys", None) or {}).values())
            for credentials in block.accounts.values():
                found.update(credentials.values())
    for model in settings_models():
        try:
            loaded = settings_of(model)
        except Exception:  # an invalid group is reported in its rows; its values are not needed here
            continue
        for name, field in model.model_fields.items():
            extra = field.json_schema_extra
            if isinstance(extra, dict) and extra.get("secret"):
                found.add(getattr(loaded, name) or "")
    for connector in all_connectors():
        auth = getattr(getattr(connector, "source", None), "auth", None)
        if auth is not None and hasattr(auth, "secret_value"):
            found.add(auth.secret_value() or "")
    return {value for value in found if isinstance(value, str) and len(value) >= 4}


def _redact(text: str, known: set[str]) -> str:
    for value in sorted(known, key=len, reverse=True):
        text = text.replace(value, "***")
    return text


def check(args) -> int:
    settings = _settings(args)
    directory = _directory(settings)
    tenants = _chosen(directory, args.tenant)
    rows = _rows(settings, tenants, args.timeout)
    known = _known_secrets(tenants)
    for row in rows:
        row.reason = _redact(row.reason, known)
        row.account = _redact(row.account, known)
    if args.json:
        for row in rows:
            console.print(json.dumps(asdict(row)), markup=False, soft_wrap=True)
    else:
        console.print(f"Checked {_document_source(settings)}: valid.", markup=False, soft_wrap=True)
        for tenant in tenants:
            table = Table(title=f"Tenant {escape(tenant.id)}", title_justify="left")
            for column in ("Platform", "Account", "Credential", "Status", "Reason"):
                table.add_column(column, overflow="fold")
            for row in (r for r in rows if r.tenant == tenant.id):
                style = STYLES.get(row.status, "")
                table.add_row(escape(row.platform), escape(row.account), row.credential,
                              f"[{style}]{row.status}[/{style}]", escape(row.reason))
            console.print(table)
        counts = {status: sum(row.status == status for row in rows) for status in STYLES}
        console.print(", ".join(f"{count} {status}" for status, count in counts.items() if count), markup=False)
    statuses = {row.status for row in rows}
    if statuses & {REJECTED, INVALID}:
        return 1
    return 3 if UNREACHABLE in statuses else 0


# -- urls --------------------------------------------------------------------------------------------

def _base(given: str | None) -> str:
    if given:
        return given.rstrip("/")
    state = local_stack(required=False)
    return state["bridge_url"] if state else PLACEHOLDER_BASE


def _url_token_parameter(connector) -> str | None:
    """The query parameter carrying the webhook's token in its URL, for the platforms that take one."""
    from chalicelib.core.errors import SettingsError

    if connector.name in URL_TOKENS:
        return URL_TOKENS[connector.name]
    if connector.name == "sevenrooms":
        try:
            return "token" if connector.platform_settings().auth == "token" else None
        except SettingsError:
            return "token"
    if _is_source(connector):
        return getattr(connector.source.auth, "query", None)
    return None


@dataclass
class Registration:
    tenant: str
    platform: str
    url: str
    where: str
    secret: str
    secret_value: str | None = None


def _registrations(tenant, base: str, show_secrets: bool) -> list[Registration]:
    found = []
    for platform in _platforms(tenant):
        connector = _connector(platform)
        where = WHERE.get(platform, WHERE_SOURCE if _is_source(connector) else "")
        if platform == "oracle":
            found.append(Registration(tenant.id, platform, "", where, "none: OHIP's credentials are the bridge's"))
            continue
        url = f"{base}/webhooks/{quote(platform, safe='')}"
        secret = webhook_secret(tenant, connector)
        if secret is None:
            found.append(Registration(tenant.id, platform, url, where, "none: the source is declared without "
                                                                       "authentication"))
            continue
        parameter = _url_token_parameter(connector)
        if parameter:
            shown = show_secrets and secret.value
            url += f"?{parameter}=" + (quote(secret.value, safe="") if shown else f"<{secret.placeholder}>")
        described = secret.name + (f"; {secret.note}" if secret.note else "")
        if parameter:
            described += f" (in the URL's ?{parameter}=)"
        if secret.to_platform and not secret.value:
            described += f": not set yet (`tenants new-secret --platform {platform}`)"
        shown = secret.value if show_secrets and secret.to_platform and secret.value else None
        found.append(Registration(tenant.id, platform, url, where, described, shown))
    return found


def urls(args) -> int:
    settings = _settings(args)
    tenants = _chosen(_directory(settings), args.tenant)
    base = _base(args.base)
    registrations = [r for tenant in tenants for r in _registrations(tenant, base, args.show_secrets)]
    if args.json:
        for registration in registrations:
            console.print(json.dumps(asdict(registration)), markup=False, soft_wrap=True)
        return 0
    for tenant in tenants:
        console.print(f"Tenant {tenant.id}", style="bold", markup=False)
        for r in (r for r in registrations if r.tenant == tenant.id):
            console.print(f"\n  {r.platform}", style="bold", markup=False)
            console.print(f"    URL:    {r.url or '(none: no webhook)'}", markup=False, soft_wrap=True)
            console.print(f"    Where:  {r.where}", markup=False, soft_wrap=True)
            console.print(f"    Secret: {r.secret}", markup=False, soft_wrap=True)
            if r.secret_value:
                console.print(f"    Value:  {r.secret_value}", markup=False, soft_wrap=True)
        console.print()
    if not args.show_secrets:
        console.print("Secrets are named, not shown: add --show-secrets to print them.", style="dim", markup=False)
    return 0


# -- new-secret --------------------------------------------------------------------------------------

# Platforms whose secret is not ours to choose: what to tell the user instead.
NOT_CHOSEN = {
    "deliveroo": "Deliveroo gives you its webhook secret (Developer portal): put it in DELIVEROO_WEBHOOK_SECRET",
    "ubereats": "Uber signs webhooks with the app's own client secret (UBEREATS_CLIENT_SECRET): nothing to generate",
    "oracle": "OPERA Cloud pushes no webhook: nothing to generate (OHIP gives the client id, secret and app key)",
}


def _url_token() -> str:
    return secrets.token_urlsafe(32)  # 256 bits, only characters a URL carries as they are


def _hex() -> str:
    return secrets.token_hex(32)


def _standard_webhooks() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def _simphony() -> str:
    return json.dumps({"keyId": str(uuid.uuid4()), "hmacKey": base64.b64encode(secrets.token_bytes(32)).decode(),
                       "keyType": "hmac-sha256"})


def secret_format(platform: str) -> tuple[str, Callable[[], str], str]:
    """(format, generator, where it goes) of the secret ``platform`` expects; CliError where it is not ours."""
    if platform in NOT_CHOSEN:
        raise CliError(NOT_CHOSEN[platform])
    tenant_field = f"the tenant's platforms.{platform}.webhook_secret in the tenants document"
    known: dict[str, tuple[str, Callable[[], str], str]] = {
        "mews": ("URL-safe token", _url_token, "MEWS_WEBHOOK_TOKEN, and the URL Mews support sets (?Token=)"),
        "thefork": ("URL-safe token", _url_token, "THEFORK_WEBHOOK_TOKEN, and the URL TheFork sets (?token=)"),
        "meta": ("URL-safe token", _url_token, "META_VERIFY_TOKEN, and Meta's Verify Token field"),
        "sevenrooms": ("URL-safe token", _url_token,
                       f"{tenant_field} (default tenant: SEVENROOMS_WEBHOOK_SECRET); the URL's ?token= in token "
                       "mode, the HMAC key agreed with SevenRooms in hmac mode"),
        "zelty": ("hex", _hex, f"{tenant_field} (default tenant: ZELTY_WEBHOOK_SECRET), and Zelty's secret_key"),
        "simphony": ("Simphony key (keyId, Base64 hmacKey of 32 bytes)", _simphony,
                     "the tenant's platforms.simphony.hmac_keys in the tenants document (default tenant: "
                     'SIMPHONY_HMAC_KEYS), as {"<keyId>": "<hmacKey>"}, and the body of Simphony\'s POST '
                     "{basePath}/notifications/registration"),
    }
    if platform in known:
        return known[platform]
    connector = _connector(platform)
    if connector is None or not _is_source(connector):
        raise UsageError(f"unknown platform {platform!r}; known: {', '.join(platform_names())}")
    auth_type = getattr(connector.source.auth, "type", None)
    where = f"{tenant_field} (default tenant: the source's secret in the sources document), and the partner"
    if auth_type == "standard_webhooks":
        return "Standard Webhooks (whsec_ + Base64 of 32 bytes)", _standard_webhooks, where
    if auth_type == "hmac":
        return "hex", _hex, where
    if auth_type == "token":
        return "URL-safe token", _url_token, where
    raise CliError(f"source {platform!r} is declared without authentication: it takes no secret")


def new_secret(args) -> int:
    if args.platform:
        kind, generate, where = secret_format(args.platform)
        console.print(generate(), markup=False, soft_wrap=True)  # alone on stdout, for scripts
        errors.print(f"{args.platform}: a fresh {kind}; it goes in {where}.", markup=False, soft_wrap=True)
        return 0
    # Lines, not a table: a secret folded across a table's cell would be copied wrong.
    console.print("A fresh secret for each platform that takes one you choose:", markup=False)
    for platform in platform_names():
        try:
            kind, generate, where = secret_format(platform)
        except CliError:
            continue
        console.print(f"\n{platform} ({kind}): it goes in {where}", markup=False, soft_wrap=True)
        console.print(f"  {generate()}", markup=False, soft_wrap=True)
    return 0
