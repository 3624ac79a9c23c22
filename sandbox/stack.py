"""Everything the bridge talks to, running on 127.0.0.1: the Fullwhere emulator, every platform API it
calls, and (optionally) moto's server with the retry queue, its dead-letter queue and the identity table.

``Sandbox.environment()`` is the bridge's configuration pointing at all of it, with the sandbox's own
fixed credentials, so every platform works out of the box. Used by ``make run`` (the local stack),
the demo, the fault-injection scenarios, the load script and the benchmarks.
"""

from __future__ import annotations

import json
import tempfile
import uuid
from pathlib import Path
from typing import Any

from sandbox import aws
from sandbox.emulators.base import EmulatorServer
from sandbox.emulators.como import ComoEmulator
from sandbox.emulators.fullwhere import FullwhereEmulator
from sandbox.emulators.meta import MetaGraphEmulator
from sandbox.emulators.mews import MewsEmulator
from sandbox.emulators.oracle import OhipEmulator
from sandbox.emulators.sevenrooms import SevenRoomsEmulator
from sandbox.emulators.thefork import TheForkEmulator
from sandbox.emulators.ubereats import UberEatsEmulator

# The sandbox's credentials: fixed, public, and only ever accepted by the sandbox's own emulators.
FULLWHERE_KEY, FULLWHERE_SECRET = "sandbox-key", "sandbox-secret"
SECRETS = {
    "deliveroo": "sandbox-deliveroo-webhook-secret",
    "uber_client_id": "sandbox-uber-client",
    "uber_client_secret": "sandbox-uber-secret",
    "mews_webhook_token": "sandbox-mews-token",
    "mews_client_token": "sandbox-mews-client",
    "mews_access_token": "sandbox-mews-access",
    "thefork_webhook_token": "sandbox-thefork-token",
    "thefork_client_id": "sandbox-thefork-client",
    "thefork_client_secret": "sandbox-thefork-secret",
    "meta_app_secret": "sandbox-meta-app-secret",
    "meta_verify_token": "sandbox-meta-verify",
    "meta_page_token": "sandbox-meta-page-token",
    "sevenrooms_webhook_secret": "sandbox-sevenrooms-token",
    "sevenrooms_client_id": "sandbox-sevenrooms-client",
    "sevenrooms_client_secret": "sandbox-sevenrooms-secret",
    "zelty": "sandbox-zelty-secret",
    "oracle_client_id": "sandbox-ohip-client",
    "oracle_client_secret": "sandbox-ohip-secret",
    "oracle_app_key": "sandbox-ohip-app-key",
    "simphony_key_id": "sandbox-simphony-key",
    "simphony_key": "c2FuZGJveC1zaW1waG9ueS1obWFjLWtleS0zMi1ieXRlcyE=",
    "como_webhook": "sandbox-como-secret",
    "como_api_key": "sandbox-como-key",
    "partouche": "sandbox-partouche-token",
    "chr365": "sandbox-chr365-secret",
    "zenchef": "whsec_c2FuZGJveC16ZW5jaGVmLXNlY3JldC0yNGJ5dGVz",
}
MEWS_ENTERPRISE = "851df8c8-90f2-4c4a-8e01-a4fc46b25178"
META_PAGE = "123123123"
ORACLE_HOTEL, ORACLE_SYSTEM = "HOTEL1", "FULLWHERE"


def sources_document(como_url: str) -> dict[str, Any]:
    """The declarative sources of the sandbox: every shipped preset, each with its own authentication."""
    return {"sources": [
        {"name": "como", "preset": "como",
         "auth": {"type": "hmac", "header": "X-Como-Signature", "secret": SECRETS["como_webhook"]},
         "fetch": {"url": como_url + "/getMemberDetails?returnAssets=active"}},
        {"name": "partouche", "preset": "partouche",
         "auth": {"type": "token", "query": "token", "secret": SECRETS["partouche"]}},
        {"name": "chr365", "preset": "chr365",
         "auth": {"type": "hmac", "header": "X-Chr365-Signature", "secret": SECRETS["chr365"]}},
        {"name": "zenchef", "preset": "zenchef", "auth": {"type": "standard_webhooks", "secret": SECRETS["zenchef"]}},
    ]}


class Sandbox:
    """Start with ``with Sandbox() as sandbox:``; ``sandbox.environment()`` configures the bridge."""

    def __init__(self, fullwhere_db: str | None = None, fullwhere_latency: float = 0.0, with_aws: bool = True,
                 ports: dict[str, int] | None = None, with_fullwhere: bool = True, aws_names: bool = False):
        # ports: fixed ports by name ("fullwhere", "aws"); the others are picked by the OS.
        # with_fullwhere=False: the real Fullwhere API is used (local stack with FULLWHERE_API_KEY set).
        # aws_names=True: the queues and table get the AWS stack's names (the local stack). Otherwise each
        # sandbox gets its own, since moto servers in one process share their state.
        ports = ports or {}

        def port(name: str) -> dict[str, int]:
            return {"port": ports[name]} if name in ports else {}

        self.fullwhere = FullwhereEmulator(accounts={FULLWHERE_KEY: FULLWHERE_SECRET}, db_path=fullwhere_db,
                                           latency=fullwhere_latency, **port("fullwhere"))
        self.platforms: dict[str, EmulatorServer] = {
            "ubereats": UberEatsEmulator(client_id=SECRETS["uber_client_id"], client_secret=SECRETS["uber_client_secret"],
                                         token_limit_per_hour=None),
            "mews": MewsEmulator(client_token=SECRETS["mews_client_token"],
                                 access_tokens={MEWS_ENTERPRISE: SECRETS["mews_access_token"]}),
            "thefork": TheForkEmulator(clients={SECRETS["thefork_client_id"]: SECRETS["thefork_client_secret"]}),
            "meta": MetaGraphEmulator(app_secret=SECRETS["meta_app_secret"],
                                      page_tokens={META_PAGE: SECRETS["meta_page_token"]}),
            "sevenrooms": SevenRoomsEmulator(client_id=SECRETS["sevenrooms_client_id"],
                                             client_secret=SECRETS["sevenrooms_client_secret"]),
            "oracle": OhipEmulator(clients={SECRETS["oracle_client_id"]: SECRETS["oracle_client_secret"]},
                                   app_keys={SECRETS["oracle_app_key"]}, external_system_code=ORACLE_SYSTEM),
            "como": ComoEmulator(api_key=SECRETS["como_api_key"]),
        }
        self.with_aws = with_aws
        self.with_fullwhere = with_fullwhere
        self._aws_port = ports.get("aws", 0)
        self._moto = None
        self.aws_endpoint: str | None = None
        self.retry_queue_url: str | None = None
        self.dead_letter_queue_url: str | None = None
        suffix = "" if aws_names else f"-{uuid.uuid4().hex[:8]}"
        self.retry_queue_name = f"fullwhere-bridge-retry{suffix}"
        self.dead_letter_queue_name = f"fullwhere-bridge-dead-letter{suffix}"
        self.identity_table = f"fullwhere-bridge-identity{suffix}"
        self._workdir = tempfile.TemporaryDirectory(prefix="fullwhere-sandbox-")
        self.sources_file = Path(self._workdir.name) / "sources.json"

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self, max_receive_count: int = 8, visibility_timeout: int = 720) -> "Sandbox":
        if self.with_fullwhere:
            self.fullwhere.start()
        for server in self.platforms.values():
            server.start()
        self.sources_file.write_text(json.dumps(sources_document(self.platforms["como"].url)))
        if self.with_aws:
            self._moto, self.aws_endpoint = aws.start_moto(self._aws_port)
            self.retry_queue_url, self.dead_letter_queue_url = aws.create_queues(
                self.aws_endpoint, self.retry_queue_name, max_receive_count=max_receive_count,
                visibility_timeout=visibility_timeout, dead_letter_name=self.dead_letter_queue_name)
            aws.create_identity_table(self.aws_endpoint, self.identity_table)
        return self

    def stop(self) -> None:
        for server in (self.fullwhere, *self.platforms.values()):
            server.stop()
        if self._moto is not None:
            aws.stop_moto(self._moto)
            self._moto = None
        self._workdir.cleanup()

    def __enter__(self) -> "Sandbox":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    def reset(self) -> None:
        """Forget every emulator's data (not the queues)."""
        for server in (self.fullwhere, *self.platforms.values()):
            server.reset()

    # -- configuration -----------------------------------------------------------------------------
    def environment(self) -> dict[str, str]:
        """Every setting the bridge needs to use the sandbox (plus boto3's, when it runs moto)."""
        p = self.platforms
        env = {
            "DELIVEROO_WEBHOOK_SECRET": SECRETS["deliveroo"],
            "UBEREATS_CLIENT_ID": SECRETS["uber_client_id"],
            "UBEREATS_CLIENT_SECRET": SECRETS["uber_client_secret"],
            "UBEREATS_API_URL": p["ubereats"].url,
            "UBEREATS_AUTH_URL": p["ubereats"].url,
            "MEWS_WEBHOOK_TOKEN": SECRETS["mews_webhook_token"],
            "MEWS_CLIENT_TOKEN": SECRETS["mews_client_token"],
            "MEWS_ACCESS_TOKEN": SECRETS["mews_access_token"],
            "MEWS_API_URL": p["mews"].url,
            "THEFORK_WEBHOOK_TOKEN": SECRETS["thefork_webhook_token"],
            "THEFORK_CLIENT_ID": SECRETS["thefork_client_id"],
            "THEFORK_CLIENT_SECRET": SECRETS["thefork_client_secret"],
            "THEFORK_API_URL": p["thefork"].api_url,
            "THEFORK_AUTH_URL": p["thefork"].url,
            "META_APP_SECRET": SECRETS["meta_app_secret"],
            "META_VERIFY_TOKEN": SECRETS["meta_verify_token"],
            "META_PAGE_ACCESS_TOKEN": SECRETS["meta_page_token"],
            "META_GRAPH_URL": p["meta"].url + "/v25.0",
            "SEVENROOMS_WEBHOOK_SECRET": SECRETS["sevenrooms_webhook_secret"],
            "SEVENROOMS_CLIENT_ID": SECRETS["sevenrooms_client_id"],
            "SEVENROOMS_CLIENT_SECRET": SECRETS["sevenrooms_client_secret"],
            "SEVENROOMS_API_URL": p["sevenrooms"].api_url,
            "ZELTY_WEBHOOK_SECRET": SECRETS["zelty"],
            "ORACLE_GATEWAY_URL": p["oracle"].url,
            "ORACLE_CLIENT_ID": SECRETS["oracle_client_id"],
            "ORACLE_CLIENT_SECRET": SECRETS["oracle_client_secret"],
            "ORACLE_APP_KEY": SECRETS["oracle_app_key"],
            "ORACLE_EXTERNAL_SYSTEM_CODE": ORACLE_SYSTEM,
            "ORACLE_HOTEL_IDS": ORACLE_HOTEL,
            "SIMPHONY_HMAC_KEYS": json.dumps({SECRETS["simphony_key_id"]: SECRETS["simphony_key"]}),
            "SOURCES_FILE": str(self.sources_file),
            "COMO_API_KEY": SECRETS["como_api_key"],
            "COMO_BRANCH_ID": "sandbox-branch",
            "COMO_POS_ID": "sandbox-pos",
        }
        if self.fullwhere.running:
            env.update({"FULLWHERE_API_URL": self.fullwhere.url, "FULLWHERE_API_KEY": FULLWHERE_KEY,
                        "FULLWHERE_API_SECRET": FULLWHERE_SECRET})
        if self.aws_endpoint:
            env.update(aws.aws_env(self.aws_endpoint))
            env.update({
                "RETRY_QUEUE_URL": self.retry_queue_url,
                "DEAD_LETTER_QUEUE_URL": self.dead_letter_queue_url,
                "IDENTITY_TABLE": self.identity_table,
            })
        return env


def reset_bridge_caches() -> None:
    """Make the bridge in this process forget what it caches per container (settings, tenants and sources
    documents, HTTP and AWS clients, tokens): what a new Lambda container would start without."""
    from chalicelib.infra import aws as bridge_aws, http, settings, tokens
    from chalicelib.domain import sources, tenants

    settings.reset_settings()
    sources.reset_sources()
    tenants.reset_directory()
    bridge_aws.reset_clients()
    http.reset_http_client()
    tokens.clear_all_token_caches()
