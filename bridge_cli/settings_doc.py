"""docs/settings.md, generated from the settings models, so that the document cannot drift from the code.

``python -m bridge_cli settings-doc`` writes it; ``--check`` only says whether it is up to date, and
tests/test_settings.py fails when it is not. The tables come from the fields (variable, default, secret or
not, description); the prose around them is kept below.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, NamedTuple

from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from chalicelib.infra.settings import Settings, SettingsModel

DOCUMENT = Path(__file__).resolve().parent.parent / "docs" / "settings.md"
COMMAND = ".venv/bin/python -m bridge_cli settings-doc"

INTRO = f"""\
<!-- Generated from the settings models by `{COMMAND}`: edit the models' descriptions
     (or the prose in bridge_cli/settings_doc.py), then run it again. tests/test_settings.py checks it. -->

# Settings

Every setting of the bridge: its variable, default, whether it is a secret, and its meaning. First the
bridge-wide settings, then one section per platform (its connector's settings model). A platform whose
webhook secret is unset refuses every webhook with 401. Where the values come from when running locally:
[operations.md](operations.md#local-stack-and-tools).

## Where settings come from

All read from the environment on first use, and again every `CONFIG_REFRESH_SECONDS`; an empty variable
counts as unset. `.chalice/config.json` sets none of them. In AWS, secret values may instead live in one
Secrets Manager secret named by `SECRETS_ID` (a JSON object with the same keys); the environment wins over it.
A new version that is invalid is refused and the last valid one kept
([architecture.md](architecture.md#configuration-that-follows-its-source)).
"""

BRIDGE_NOTES = """\
boto3 also reads its standard configuration from the environment: `AWS_REGION`, and
`AWS_ENDPOINT_URL_SQS`, `AWS_ENDPOINT_URL_DYNAMODB` (the local endpoints in tests).
"""

TENANTS = """\
## Tenants

One deployment can serve several Fullwhere accounts. Without a tenants document, one `default` tenant
uses the `FULLWHERE_*` and `MEWS_ACCESS_TOKEN` settings and owns every platform account. With one:

```json
{"tenants": [{
  "id": "bistro-paris",
  "fullwhere_api_key": "…", "fullwhere_api_secret": "…",
  "phone_region": "FR",
  "platforms": {
    "deliveroo": {"accounts": {"<order.location_id>": {}}},
    "ubereats":  {"accounts": {"<store id = webhook meta.user_id>": {}}},
    "mews":      {"accounts": {"<EnterpriseId>": {"access_token": "<that enterprise's AccessToken>"}}},
    "thefork":   {"accounts": {"<restaurantUuid>": {"client_id": "…", "client_secret": "…"},
                               "<groupUuid>": {"client_id": "…", "client_secret": "…"}}},
    "meta":      {"accounts": {"<page id>": {"page_access_token": "<that Page's long-lived token>"}}},
    "sevenrooms": {"webhook_secret": "<this tenant's URL token or HMAC key>",
                   "accounts": {"<venue_id>": {"client_id": "…", "client_secret": "…"},
                                "<venue_group_id>": {"client_id": "…", "client_secret": "…"}}},
    "zelty":     {"webhook_secret": "<the secret_key this tenant's brands registered>",
                  "accounts": {"<restaurant_id>": {}}},
    "oracle":    {"accounts": {"<hotel code>": {"client_id": "…", "client_secret": "…", "app_key": "…"}}},
    "simphony":  {"hmac_keys": {"<keyId>": "<base64 hmacKey>"}, "accounts": {"<orgShortName>": {}}},
    "zenchef":   {"webhook_secret": "<the secret in the source's auth format>",
                  "accounts": {"<the source's account_id value>": {}}},
    "como":      {"webhook_secret": "…",
                  "accounts": {"<branchId>": {"COMO_API_KEY": "…", "COMO_BRANCH_ID": "…", "COMO_POS_ID": "…"}}}
  }}]}
```

**Tenants are walls.** On a platform whose accounts each register the webhook with their own secret (Zelty,
SevenRooms, Simphony, every declarative source), a tenant's requests are verified with its own
`webhook_secret` (Simphony: `hmac_keys`, `{"<keyId>": "<base64 hmacKey>"}`; a Standard Webhooks source:
a `whsec_` secret): the accounts the body names pick the tenant, and a request naming another tenant's
account, or accounts of several tenants, or none that a tenant lists, is refused (401). A tenant without its
own makes those webhooks answer 503 (`misconfigured`); the `<PLATFORM>_*` webhook secret is never used for a
tenant of the document. The other platforms' secrets are one per integration (Deliveroo, Uber Eats, Mews'
URL token, TheFork's URL token, Meta's app secret) and stay in the settings; a `webhook_secret` given for them
is refused at load. Likewise, a tenant's events are fetched with its account entry's credentials only (the
keys above; a declarative source's: the variables its fetch names), never with the settings', which are the
`default` tenant's: an account without them is held (`not_configured`) until they are added. Uber Eats' app
credentials and Mews' `ClientToken` are one per integration and shared. The decision for each platform,
with its source: [platforms.md](platforms.md#webhook-secrets-per-integration-or-per-account).

The document is validated at load (unknown platforms, duplicate ids, an account listed by two tenants
are errors with a clear message). An event whose account no tenant lists goes to the dead-letter
queue with the reason `unrouted`.

A tenant may also set `"import_test_leads": true` (default `false`): the leads of Meta's Lead Ads Testing
Tool (placeholder answers, `test@fb.com`, `test@meta.com`) are then imported, e.g. for a trial account;
otherwise they are ignored with the reason `test_lead`. The default tenant's is `META_IMPORT_TEST_LEADS`.
"""


class Section(NamedTuple):
    title: str
    model: type[SettingsModel]
    fields: list[str]  # the model's fields shown in this section


def platform_models() -> list[tuple[str, type[SettingsModel]]]:
    """``(title, model)`` of every platform's settings: the built-in connectors', then the declarative sources'."""
    from chalicelib.connectors import settings_models

    return [(model.title, model) for model in settings_models() if model is not Settings]


def sections() -> list[Section]:
    """The document's tables: the bridge-wide settings, then each platform's (no two models share a variable:
    tests/test_settings.py)."""
    return [Section(model.title, model, list(model.model_fields))
            for model in (Settings, *(model for _, model in platform_models()))]


def render() -> str:
    """The whole of docs/settings.md."""
    parts = [INTRO]
    for section in sections():
        parts.append(f"## {section.title}\n\n{table(section)}")
        if section.model is Settings:
            parts.append(BRIDGE_NOTES)
    parts.append(TENANTS)
    return "\n".join(parts)


def table(section: Section) -> str:
    rows = ["| Variable | Default | Secret | Meaning |", "|---|---|---|---|"]
    for name in section.fields:
        field = section.model.model_fields[name]
        rows.append(f"| `{section.model.variable(name)}` | {default(field)} | {'yes' if is_secret(field) else '–'} "
                    f"| {meaning(field)} |")
    return "\n".join(rows) + "\n"


def default(field: FieldInfo) -> str:
    value: Any = field.get_default(call_default_factory=True)
    if value is PydanticUndefined:
        return "required"
    if value is None:
        return "–"
    if isinstance(value, bool):
        text = "true" if value else "false"  # as written in the environment
    elif isinstance(value, float) and value.is_integer():
        text = str(int(value))
    elif isinstance(value, (dict, list, tuple)):
        text = json.dumps(value, ensure_ascii=False)
    else:
        text = str(value)
    return f"`{text}`" if text else "empty"


def is_secret(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return field.repr is False or (isinstance(extra, dict) and extra.get("secret") is True)


# "docs/operations.md#imports-in-doubt" in a description becomes a link relative to docs/.
_DOC_REFERENCE = re.compile(r"(?<!\]\()(?<![\w/`\[])docs/([\w.-]+\.md)(#[\w-]+)?")


def meaning(field: FieldInfo) -> str:
    text = " ".join((field.description or "").split()).replace("|", "\\|")
    return _DOC_REFERENCE.sub(lambda match: f"[{match[1]}]({match[1]}{match[2] or ''})", text)


def run(args: argparse.Namespace) -> int:
    from bridge_cli.common import console, errors

    rendered = render()
    current = DOCUMENT.read_text() if DOCUMENT.exists() else None
    if args.check:
        if current != rendered:
            errors.print(f"docs/settings.md is out of date with the settings models: run `{COMMAND}`", soft_wrap=True)
            return 1
        console.print("docs/settings.md is up to date", soft_wrap=True)
        return 0
    if current != rendered:
        DOCUMENT.write_text(rendered)
    console.print(f"docs/settings.md {'written' if current != rendered else 'already up to date'}")
    return 0
