"""``python -m bridge_cli tenants check | urls | new-secret``, run as subprocesses as a user types them, against
the sandbox's emulators (the ones ``make run`` serves): the credentials are tried over real HTTP, and the
emulators answer 401 to a revoked key or a wrong token as the platforms do."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from chalicelib.connectors import settings_models
from chalicelib.core.registry import builtin_names
from sandbox.platforms import meta, mews, oracle
from sandbox.stack import FULLWHERE_SECRET, SECRETS

ROOT = Path(__file__).resolve().parent.parent
BRIDGE_SETTINGS = {model.variable(name) for model in settings_models() for name in model.model_fields}

BISTROT_KEY, BISTROT_SECRET = "bistrot-fullwhere-key", "bistrot-fullwhere-secret-81c2"
ZELTY_TENANT_SECRET, SEVENROOMS_TENANT_SECRET = "bistrot-zelty-secret-5e0d", "bistrot-sevenrooms-token-3b7a"
WRONG_MEWS_TOKEN, WRONG_FORK_SECRET, WRONG_PAGE_TOKEN = "mews-token-revoked-4411", "fork-secret-wrong-90aa", "page-token-wrong-7c3f"
REVOKED_KEY, REVOKED_SECRET = "revoked-fullwhere-key", "revoked-fullwhere-secret-e5d1"


def environment(sandbox, tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any bridge or AWS setting, then the sandbox's, as ``make run`` sets it
    (and no running local stack: LOCAL_STACK_DIR is empty)."""
    env = {key: value for key, value in os.environ.items()
           if key not in BRIDGE_SETTINGS and not key.startswith(("AWS_", "COMO_")) and key != "LOCAL_STACK_DIR"}
    env.update(sandbox.environment())
    env.update(COLUMNS="250", LOCAL_STACK_DIR=str(tmp_path / "no-stack"), PYTHONPATH=str(ROOT), **extra)
    return env


def cli(env: dict[str, str], *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bridge_cli", "tenants", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def rows(result: subprocess.CompletedProcess) -> list[dict[str, str]]:
    return [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]


def status_of(found: list[dict[str, str]], tenant: str, platform: str, account: str = "",
              credential: str = "API credentials") -> dict[str, str]:
    matching = [row for row in found if (row["tenant"], row["platform"], row["account"], row["credential"])
                == (tenant, platform, account, credential)]
    assert len(matching) == 1, (tenant, platform, account, credential, found)
    return matching[0]


def assert_no_secret(result: subprocess.CompletedProcess, *extra: str) -> None:
    output = result.stdout + result.stderr
    leaked = [value for value in {*SECRETS.values(), FULLWHERE_SECRET, *extra} if value in output]
    assert not leaked, f"secrets printed: {leaked}"


def bistrot(zelty_secret: str = ZELTY_TENANT_SECRET) -> dict:
    """A restaurant with its own Fullwhere account, its own credentials on every platform with an API, and its
    own webhook secrets where each account registers its own (Zelty, SevenRooms)."""
    return {
        "id": "bistrot", "fullwhere_api_key": BISTROT_KEY, "fullwhere_api_secret": BISTROT_SECRET, "platforms": {
            "mews": {"accounts": {mews.ENTERPRISE: {"access_token": SECRETS["mews_access_token"]}}},
            "meta": {"accounts": {meta.PAGE: {"page_access_token": SECRETS["meta_page_token"]}}},
            "thefork": {"accounts": {"restaurant-1": {"client_id": SECRETS["thefork_client_id"],
                                                      "client_secret": SECRETS["thefork_client_secret"]}}},
            "sevenrooms": {"webhook_secret": SEVENROOMS_TENANT_SECRET,
                           "accounts": {"venue-1": {"client_id": SECRETS["sevenrooms_client_id"],
                                                    "client_secret": SECRETS["sevenrooms_client_secret"]}}},
            "oracle": {"accounts": {oracle.HOTEL: {"client_id": SECRETS["oracle_client_id"],
                                                   "client_secret": SECRETS["oracle_client_secret"],
                                                   "app_key": SECRETS["oracle_app_key"]}}},
            "ubereats": {"accounts": {"store-1": {}, "store-2": {}}},
            "zelty": {"webhook_secret": zelty_secret, "accounts": {"10445": {}}},
        }}


@pytest.fixture
def fullwhere_account(sandbox):
    """The bistrot's Fullwhere account, opened in the Fullwhere sandbox for the test."""
    sandbox.fullwhere.accounts[BISTROT_KEY] = BISTROT_SECRET
    yield sandbox.fullwhere
    sandbox.fullwhere.accounts.pop(BISTROT_KEY, None)


def write(path: Path, document: dict) -> Path:
    path.write_text(json.dumps(document))
    return path


# -- check ---------------------------------------------------------------------------------------------

def test_check_reports_all_ok_on_the_sandbox_defaults(sandbox, tmp_path):
    env = environment(sandbox, tmp_path)
    result = cli(env, "check", "--json")
    assert result.returncode == 0, result.stdout + result.stderr
    found = rows(result)
    assert found and all(row["status"] == "ok" for row in found), found
    assert {row["tenant"] for row in found} == {"default"}
    # Every platform the bridge calls was tried, and Fullwhere with limit 1.
    tried = {row["platform"] for row in found if row["credential"] == "API credentials"}
    assert tried == {"ubereats", "mews", "thefork", "meta", "sevenrooms", "oracle"}
    assert [r.body for r in sandbox.fullwhere.requests_matching("POST", "/partners/customer/list")][-1] == \
        {"limit": 1, "page": 1}
    assert "enterprise " + mews.ENTERPRISE in status_of(found, "default", "mews")["reason"]
    assert "Page " + meta.PAGE in status_of(found, "default", "meta")["reason"]
    webhooks = {row["platform"] for row in found if row["credential"] == "webhook secret"}
    assert webhooks == set(builtin_names()) - {"oracle"} | {"como", "chr365", "partouche", "zenchef"}

    table = cli(env, "check")
    assert table.returncode == 0 and "Tenant default" in table.stdout
    assert re.search(r"\b\d+ ok\b", table.stdout) and "rejected" not in table.stdout
    assert_no_secret(result)
    assert_no_secret(table)


def test_check_reports_a_revoked_fullwhere_key_and_rejected_platform_tokens(sandbox, tmp_path, fullwhere_account):
    rogue = {
        "id": "rogue", "fullwhere_api_key": REVOKED_KEY, "fullwhere_api_secret": REVOKED_SECRET, "platforms": {
            "mews": {"accounts": {"another-enterprise": {"access_token": WRONG_MEWS_TOKEN},
                                  # a genuine token, filed under an enterprise it does not open
                                  "third-enterprise": {"access_token": SECRETS["mews_access_token"]}}},
            "thefork": {"accounts": {"restaurant-2": {"client_id": SECRETS["thefork_client_id"],
                                                      "client_secret": WRONG_FORK_SECRET}}},
            "meta": {"accounts": {"999": {"page_access_token": WRONG_PAGE_TOKEN}}},
        }}
    document = write(tmp_path / "tenants.json", {"tenants": [bistrot(), rogue]})
    env = environment(sandbox, tmp_path)
    sandbox.fullwhere.accounts[REVOKED_KEY] = REVOKED_SECRET

    before = cli(env, "check", "--file", str(document), "--tenant", "rogue", "--json")
    assert status_of(rows(before), "rogue", "fullwhere", credential="API key and secret")["status"] == "ok"
    del sandbox.fullwhere.accounts[REVOKED_KEY]  # the key is revoked in Fullwhere
    sandbox.platforms["mews"].reset()
    sandbox.platforms["thefork"].reset()

    result = cli(env, "check", "--file", str(document), "--json")
    assert result.returncode == 1, result.stdout + result.stderr
    found = rows(result)
    fullwhere = status_of(found, "rogue", "fullwhere", credential="API key and secret")
    assert fullwhere["status"] == "rejected" and "401" in fullwhere["reason"]
    for platform, account in (("mews", "another-enterprise"), ("thefork", "restaurant-2")):
        row = status_of(found, "rogue", platform, account)
        assert row["status"] == "rejected" and "401" in row["reason"], row
    assert status_of(found, "rogue", "meta", "999")["status"] == "rejected"
    misfiled = status_of(found, "rogue", "mews", "third-enterprise")
    assert misfiled["status"] == "rejected" and mews.ENTERPRISE in misfiled["reason"]
    # The credentials were tried over HTTP (the emulators' 401s are in the reasons), not judged locally.
    tried = [r.body.get("AccessToken") for r in sandbox.platforms["mews"].requests_matching("POST", mews.CONFIGURATION_PATH)]
    assert WRONG_MEWS_TOKEN in tried
    assert WRONG_FORK_SECRET in [r.form().get("client_secret") for r in
                                 sandbox.platforms["thefork"].requests_matching("POST", "/oauth/token")]

    # The other restaurant is untouched by its neighbour's failures: all its credentials work.
    bistro_rows = [row for row in found if row["tenant"] == "bistrot"]
    assert {row["status"] for row in bistro_rows} == {"ok"}, bistro_rows
    zelty_secret = status_of(bistro_rows, "bistrot", "zelty", credential="webhook secret")
    assert "platforms.zelty.webhook_secret" in zelty_secret["reason"]
    # One token for the app's client credentials, however many stores share them.
    assert len([row for row in bistro_rows if row["platform"] == "ubereats" and row["account"]]) == 2

    table = cli(env, "check", "--file", str(document))
    assert table.returncode == 1 and "Tenant rogue" in table.stdout and "rejected" in table.stdout
    for run in (before, result, table):
        assert_no_secret(run, BISTROT_SECRET, REVOKED_SECRET, WRONG_MEWS_TOKEN, WRONG_FORK_SECRET, WRONG_PAGE_TOKEN,
                         ZELTY_TENANT_SECRET, SEVENROOMS_TENANT_SECRET)


def test_check_of_an_unreachable_fullwhere_exits_3_and_a_missing_credential_is_not_configured(sandbox, tmp_path):
    document = write(tmp_path / "tenants.json", {"tenants": [
        {"id": "offline", "fullwhere_api_key": "k", "fullwhere_api_secret": "offline-secret",
         "fullwhere_api_url": "http://127.0.0.1:9", "platforms": {
             "meta": {"accounts": {"4242": {}}},
             # the deployment's TheFork client is never lent to a named tenant
             "thefork": {"accounts": {"restaurant-9": {}}},
             "zelty": {"accounts": {"77": {}}}}},
    ]})
    sandbox.platforms["thefork"].reset()
    result = cli(environment(sandbox, tmp_path), "check", "--file", str(document), "--json")
    assert result.returncode == 3, result.stdout + result.stderr
    found = rows(result)
    assert status_of(found, "offline", "fullwhere", credential="API key and secret")["status"] == "unreachable"
    page = status_of(found, "offline", "meta", "4242")
    assert page["status"] == "not configured" and "page_access_token" in page["reason"]
    assert status_of(found, "offline", "thefork", "restaurant-9")["status"] == "not configured"
    zelty = status_of(found, "offline", "zelty", credential="webhook secret")
    assert zelty["status"] == "not configured" and "platforms.zelty.webhook_secret" in zelty["reason"]
    assert not sandbox.platforms["thefork"].requests_matching("POST", "/oauth/token")  # nothing borrowed was tried


def test_an_invalid_document_is_refused_with_the_bridge_s_own_message(sandbox, tmp_path):
    from chalicelib.core.errors import SettingsError
    from chalicelib.domain.tenants import load_directory
    from chalicelib.infra.settings import Settings

    twice = {"tenants": [
        {"id": "a", "fullwhere_api_key": "k", "fullwhere_api_secret": "s", "platforms": {"zelty": {"accounts": {"1": {}}}}},
        {"id": "b", "fullwhere_api_key": "k", "fullwhere_api_secret": "s", "platforms": {"zelty": {"accounts": {"1": {}}}}},
    ]}
    document = write(tmp_path / "tenants.json", twice)
    with pytest.raises(SettingsError) as expected:
        load_directory(Settings(tenants_file=str(document)))
    for command in ("check", "urls"):
        result = cli(environment(sandbox, tmp_path, TENANTS_FILE=str(document)), command)
        assert result.returncode == 1
        assert f"error: {expected.value}" in " ".join(result.stderr.split()), result.stderr
        assert "Traceback" not in result.stderr
    valid = write(tmp_path / "valid.json", {"tenants": twice["tenants"][:1]})
    unknown = cli(environment(sandbox, tmp_path), "check", "--file", str(valid), "--tenant", "nobody")
    assert unknown.returncode == 2 and "no tenant 'nobody'; the document has: a" in unknown.stderr


# -- urls ----------------------------------------------------------------------------------------------

def test_urls_name_the_secrets_and_show_them_only_when_asked(sandbox, tmp_path):
    document = write(tmp_path / "tenants.json", {"tenants": [bistrot()]})
    env = environment(sandbox, tmp_path)
    base = "https://abc123.execute-api.eu-west-3.amazonaws.com/api/"

    named = cli(env, "urls", "--file", str(document), "--base", base, "--json")
    assert named.returncode == 0, named.stderr
    by_platform = {row["platform"]: row for row in rows(named)}
    assert set(by_platform) == set(bistrot()["platforms"])
    assert by_platform["zelty"]["url"] == base + "webhooks/zelty"
    assert by_platform["mews"]["url"] == base + "webhooks/mews?Token=<MEWS_WEBHOOK_TOKEN>"
    assert by_platform["thefork"]["url"] == base + "webhooks/thefork?token=<THEFORK_WEBHOOK_TOKEN>"
    assert by_platform["sevenrooms"]["url"] == base + "webhooks/sevenrooms?token=<platforms.sevenrooms.webhook_secret>"
    assert by_platform["oracle"]["url"] == ""
    assert "platforms.zelty.webhook_secret of tenant bistrot" in by_platform["zelty"]["secret"]
    assert "Mews support" in by_platform["mews"]["where"] and "secret_key" in by_platform["zelty"]["where"]
    assert all(row["secret_value"] is None for row in by_platform.values())
    assert_no_secret(named, ZELTY_TENANT_SECRET, SEVENROOMS_TENANT_SECRET)

    shown = {row["platform"]: row for row in rows(cli(env, "urls", "--file", str(document), "--base", base,
                                                      "--show-secrets", "--json"))}
    token = parse_qs(urlsplit(shown["mews"]["url"]).query)["Token"]
    assert token == [SECRETS["mews_webhook_token"]]
    assert shown["mews"]["secret_value"] == SECRETS["mews_webhook_token"]
    assert shown["zelty"]["secret_value"] == ZELTY_TENANT_SECRET
    assert parse_qs(urlsplit(shown["sevenrooms"]["url"]).query)["token"] == [SEVENROOMS_TENANT_SECRET]
    assert shown["ubereats"]["secret_value"] is None  # Uber's own client secret: nothing to give Uber

    human = cli(env, "urls", "--file", str(document), "--tenant", "bistrot")
    assert human.returncode == 0 and "https://<bridge>/webhooks/zelty" in human.stdout
    assert "--show-secrets" in human.stdout
    assert_no_secret(human, ZELTY_TENANT_SECRET, SEVENROOMS_TENANT_SECRET)


def test_the_url_with_its_token_is_one_the_bridge_accepts(sandbox, tmp_path, monkeypatch):
    """The URL printed with --show-secrets is the one the connectors verify: its query passes them, for the
    default tenant (the deployment's tokens) as for a named one (its own SevenRooms token)."""
    from chalicelib.connectors import get_connector
    from chalicelib.connectors.base import WebhookRequest
    from chalicelib.core.errors import RejectedRequest
    from chalicelib.domain.tenants import get_directory
    from sandbox import platforms
    from sandbox.stack import reset_bridge_caches

    env = environment(sandbox, tmp_path)
    default = {row["platform"]: row for row in rows(cli(env, "urls", "--show-secrets", "--json"))}
    document = write(tmp_path / "tenants.json", {"tenants": [bistrot()]})
    named = {row["platform"]: row for row in rows(cli(env, "urls", "--file", str(document), "--show-secrets",
                                                      "--json"))}
    for name in ("TENANTS_FILE", "TENANTS_SECRET_ID", "SECRETS_ID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in sandbox.environment().items():
        monkeypatch.setenv(name, value)
    reset_bridge_caches()
    try:
        cases = [(platform, default[platform]["url"], None) for platform in ("mews", "thefork", "sevenrooms", "partouche")]
        monkeypatch.setenv("TENANTS_FILE", str(document))
        reset_bridge_caches()
        tenant = get_directory().get("bistrot")
        cases += [("sevenrooms", named["sevenrooms"]["url"], tenant), ("mews", named["mews"]["url"], None)]
        for platform, url, signer in cases:
            query = {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}
            assert query, platform
            body = json.dumps(platforms.module(platform).SAMPLE.build(sandbox, 1)).encode()
            named_signer = (signer,) if signer else ()  # per-integration connectors verify with the deployment's
            get_connector(platform).verify(WebhookRequest(platform, body, {}, query), *named_signer)
            wrong = {key: value + "x" for key, value in query.items()}
            with pytest.raises(RejectedRequest):
                get_connector(platform).verify(WebhookRequest(platform, body, {}, wrong), *named_signer)
        # A named tenant's SevenRooms URL carries its own token, never the deployment's.
        assert named["sevenrooms"]["url"] != default["sevenrooms"]["url"]
    finally:
        reset_bridge_caches()


# -- new-secret ----------------------------------------------------------------------------------------

def test_new_secret_in_each_platform_s_format(sandbox, tmp_path):
    from chalicelib.connectors.simphony import hmac_keys
    from chalicelib.core.signatures import standard_webhooks_secret

    env = environment(sandbox, tmp_path)
    every = cli(env, "new-secret")
    assert every.returncode == 0, every.stderr
    made = {platform: secret for platform, secret in
            re.findall(r"^(\S+) \(.*?\): it goes in .*\n  (\S.*)$", every.stdout, flags=re.M)}
    # One for every platform whose secret the operator chooses, none for those the platform gives.
    assert set(made) == {"mews", "thefork", "meta", "sevenrooms", "zelty", "simphony", "como", "chr365", "partouche",
                         "zenchef"}, every.stdout
    for platform in ("mews", "thefork", "meta", "sevenrooms", "partouche"):  # URL tokens (partouche: ?token=)
        assert re.fullmatch(r"[A-Za-z0-9_-]{43,}", made[platform]), platform
    for platform in ("zelty", "chr365", "como"):  # HMAC keys
        assert re.fullmatch(r"[0-9a-f]{64}", made[platform]), platform
    assert made["zenchef"].startswith("whsec_") and len(standard_webhooks_secret(made["zenchef"])) == 32
    simphony = json.loads(made["simphony"])
    assert simphony["keyType"] == "hmac-sha256"
    assert len(hmac_keys(json.dumps({simphony["keyId"]: simphony["hmacKey"]}))[simphony["keyId"]]) == 32
    assert len(set(made.values())) == len(made)

    alone = cli(env, "new-secret", "--platform", "zelty")
    assert alone.returncode == 0 and re.fullmatch(r"[0-9a-f]{64}\n", alone.stdout)  # the secret alone, for scripts
    assert alone.stdout.strip() != made["zelty"] and "platforms.zelty.webhook_secret" in alone.stderr
    given = cli(env, "new-secret", "--platform", "deliveroo")
    assert given.returncode == 1 and "Deliveroo gives you" in given.stderr and not given.stdout
    unknown = cli(env, "new-secret", "--platform", "nowhere")
    assert unknown.returncode == 2 and "unknown platform 'nowhere'" in unknown.stderr


# -- the README's walk-through -------------------------------------------------------------------------

def test_onboarding_a_restaurant_as_the_readme_shows(sandbox, tmp_path, fullwhere_account):
    """The README's commands, in its order, in a directory holding tenants.json."""
    env = environment(sandbox, tmp_path)
    new = cli(env, "new-secret", "--platform", "zelty", cwd=tmp_path)
    zelty = new.stdout.strip()
    restaurant = bistrot(zelty_secret=zelty)
    restaurant["id"] = "le-bistrot"
    write(tmp_path / "tenants.json", {"tenants": [restaurant]})

    check = cli(env, "check", "--file", "tenants.json", "--tenant", "le-bistrot", cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "Tenant le-bistrot" in check.stdout and "rejected" not in check.stdout
    urls = cli(env, "urls", "--file", "tenants.json", "--tenant", "le-bistrot", "--base", "https://<bridge>/",
               cwd=tmp_path)
    assert urls.returncode == 0 and "URL:    https://<bridge>/webhooks/zelty" in urls.stdout
    assert_no_secret(check, BISTROT_SECRET, zelty)
    assert_no_secret(urls, BISTROT_SECRET, zelty)
    readme = (ROOT / "README.md").read_text()
    for command in ("tenants new-secret --platform zelty", "tenants check --file tenants.json --tenant le-bistrot",
                    "tenants urls --file tenants.json --tenant le-bistrot --base https://<bridge>/"):
        assert f".venv/bin/python -m bridge_cli {command}" in readme


def test_every_tenants_command_has_help_and_every_platform_a_place_to_register(capsys):
    from bridge_cli.__main__ import main
    from bridge_cli.tenants import WHERE

    for command in (["tenants"], ["tenants", "check"], ["tenants", "urls"], ["tenants", "new-secret"]):
        with pytest.raises(SystemExit) as exit_:
            main([*command, "--help"])
        assert exit_.value.code == 0
        assert f"usage: python -m bridge_cli {' '.join(command)}" in capsys.readouterr().out
    assert set(WHERE) == set(builtin_names())
