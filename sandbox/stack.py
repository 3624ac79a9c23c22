"""Everything the bridge talks to, running on 127.0.0.1: the Fullwhere emulator, every platform API it
calls, and (optionally) moto's server with the retry queue, its dead-letter queue and the identity table.

``Sandbox.environment()`` is the bridge's configuration pointing at all of it, with the sandbox's own
fixed credentials, so every platform works out of the box. Used by ``make run`` (the local stack),
the demo, the fault-injection scenarios, the load script and the benchmarks.
"""

from __future__ import annotations

import functools
import json
import tempfile
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sandbox import aws, platforms
from sandbox.emulators.base import EmulatorServer
from sandbox.emulators.fullwhere import FullwhereEmulator

# The sandbox's credentials: fixed, public, and only ever accepted by the sandbox's own emulators. Each
# platform's are in its module (sandbox/platforms/); SECRETS gathers them all (the tests look for leaks).
FULLWHERE_KEY, FULLWHERE_SECRET = "sandbox-key", "sandbox-secret"
SECRETS: dict[str, str] = {key: value for name in platforms.names() for key, value in platforms.module(name).SECRETS.items()}


TEMPLATE = Path(__file__).resolve().parent.parent / "deploy" / "resources.yaml"


@dataclass(frozen=True)
class QueuePolicy:
    """The queues' limits in the AWS stack: what the sandbox's queues copy."""

    visibility_timeout: int
    max_receive_count: int
    retention: int  # seconds, the retry queue's MessageRetentionPeriod
    dead_letter_retention: int


@functools.cache
def template_queues(path: Path = TEMPLATE) -> QueuePolicy:
    """The queue attributes of ``deploy/resources.yaml``, read rather than copied so the two never differ."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # CloudFormation's short forms (!Ref, !GetAtt, ...): the attributes read here are plain numbers.
    Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
    resources = yaml.load(path.read_text(), Loader=Loader)["Resources"]
    retry, dead_letter = resources["RetryQueue"]["Properties"], resources["DeadLetterQueue"]["Properties"]
    return QueuePolicy(visibility_timeout=int(retry["VisibilityTimeout"]),
                       max_receive_count=int(retry["RedrivePolicy"]["maxReceiveCount"]),
                       retention=int(retry["MessageRetentionPeriod"]),
                       dead_letter_retention=int(dead_letter["MessageRetentionPeriod"]))


def sources_document(emulators: Mapping[str, EmulatorServer]) -> dict[str, Any]:
    """The sandbox's declarative sources, each with its own authentication (``emulators``: by platform)."""
    return {"sources": [platforms.module(name).source(emulators.get(name)) for name in platforms.names()
                        if hasattr(platforms.module(name), "source")]}


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
        # The API emulator of every platform that has one, by platform.
        self.platforms: dict[str, EmulatorServer] = {
            name: server for name in platforms.names() if (server := platforms.emulator(name)) is not None}
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
    def start(self, max_receive_count: int | None = None, visibility_timeout: int | None = None) -> "Sandbox":
        """Start everything; the queues get the AWS stack's attributes (:func:`template_queues`) unless given."""
        if self.with_fullwhere:
            self.fullwhere.start()
        for server in self.platforms.values():
            server.start()
        self.sources_file.write_text(json.dumps(sources_document(self.platforms)))
        if self.with_aws:
            self._moto, self.aws_endpoint = aws.start_moto(self._aws_port)
            policy = template_queues()
            self.retry_queue_url, self.dead_letter_queue_url = aws.create_queues(
                self.aws_endpoint, self.retry_queue_name,
                max_receive_count=policy.max_receive_count if max_receive_count is None else max_receive_count,
                visibility_timeout=policy.visibility_timeout if visibility_timeout is None else visibility_timeout,
                dead_letter_name=self.dead_letter_queue_name, retention=policy.retention,
                dead_letter_retention=policy.dead_letter_retention)
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
        env = {"SOURCES_FILE": str(self.sources_file)}
        for name in platforms.names():
            env.update(platforms.environment(name, self.platforms.get(name)))
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
    from chalicelib.domain import sources, tenants
    from chalicelib.infra import aws as bridge_aws
    from chalicelib.infra import http, settings, tokens

    settings.reset_settings()
    sources.reset_sources()
    tenants.reset_directory()
    bridge_aws.reset_clients()
    http.reset_http_client()
    tokens.clear_all_token_caches()
