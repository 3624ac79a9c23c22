"""The whole bridge on 127.0.0.1 in one command: ``make run`` (``python -m sandbox.local_stack``).

Until Ctrl-C (or SIGTERM), this one supervisor process runs:

- the bridge's HTTP API: ``chalice local`` in a child process, with the environment below. The child is
  in its own process group, so Ctrl-C reaches only this supervisor, which stops it; it also dies with
  the supervisor (``PR_SET_PDEATHSIG``) if the supervisor is killed outright. Its access log, which
  quotes request paths, is relayed with every query value redacted (tokens travel in query strings);
- moto's server as SQS and DynamoDB, with the retry queue, its dead-letter queue (the visibility timeout,
  retentions and redrive policy of ``deploy/resources.yaml``, read from it) and the identity table;
- the retry worker: the handler the Lambda runs (``app.handler_map["retry_worker"]`` with a Lambda-like
  context), fed by :class:`sandbox.aws.LambdaSqsPoller` in a thread (batches of 10, partial batch
  failures, visibility as in AWS);
- the scheduled ``oracle_pull`` handler, every ``--pull-every`` seconds (30 by default; 5 minutes in AWS);
- the scheduled ``sweeps`` handler, every ``--sweep-every`` seconds (60 by default, as in AWS): each run sweeps the
  platform accounts whose ``SWEEP_MINUTES`` have passed (the sandbox's Mews enterprise, ...);
- the sandboxes of the platforms' APIs and, unless ``FULLWHERE_API_KEY``/``FULLWHERE_API_SECRET`` are
  set, the Fullwhere sandbox, whose customers are kept in ``<data dir>/fullwhere.sqlite3``;
- a small control endpoint for ``python -m bridge_cli`` (``demo``, ``sign --sandbox``): it seeds the
  sandboxes with sample guests and signs requests, for sandboxed platforms only (their credentials are
  the sandbox's public ones), and runs the OPERA pull and a sweep (``bridge_cli sweep``) on demand.

Where settings come from: Fullwhere is the real API when ``FULLWHERE_API_KEY`` is set, else the sandbox.
Each platform uses its sandbox unless the environment sets the setting that authenticates its webhooks
(e.g. ``DELIVEROO_WEBHOOK_SECRET``; ``SOURCES_FILE`` for the declarative sources): then every setting of
that platform comes from the environment. AWS is always the local moto server.

``<data dir>/stack.json`` tells the command-line tool where everything is (addresses only, never a
secret); it is removed on exit. The identity ledger (and the OPERA position) is saved to
``<data dir>/identity-<target>.json`` on exit and restored on start, one file per Fullwhere target so a
sandbox ledger never hides a guest from the real API. Queue contents live in memory only.
"""

from __future__ import annotations

import argparse
import base64
import ctypes
import hashlib
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from sandbox import aws
from sandbox.emulators.base import EmulatorServer, HttpError, Request
from sandbox.stack import Sandbox, template_queues

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = ROOT / ".sandbox"
STATE_FILE = "stack.json"
DEFAULT_PULL_SECONDS = 30.0
DEFAULT_SWEEP_SECONDS = 60.0  # the sweeps Lambda's schedule (app.py)
WORKER_TIMEOUT_SECONDS = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["dev"][
    "lambda_functions"]["retry_worker"]["lambda_timeout"]
PULL_TIMEOUT_SECONDS = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["dev"][
    "lambda_functions"]["oracle_pull"]["lambda_timeout"]
SWEEP_TIMEOUT_SECONDS = json.loads((ROOT / ".chalice" / "config.json").read_text())["stages"]["dev"][
    "lambda_functions"]["sweeps"]["lambda_timeout"]
# The queues of the AWS stack (deploy/resources.yaml: VisibilityTimeout, retentions, maxReceiveCount).
QUEUES = template_queues()
MAX_RECEIVE_COUNT, VISIBILITY_TIMEOUT = QUEUES.max_receive_count, QUEUES.visibility_timeout
# Settings the local stack cannot honour: its AWS is moto, which holds no secret.
UNSUPPORTED = ("SECRETS_ID", "TENANTS_SECRET_ID", "SOURCES_SECRET_ID")
SOURCES_GROUP = "sources"  # the declarative sources (Como, Groupe Partouche, Chr365, Zenchef, ...)


class StackError(Exception):
    """A reason the stack cannot start, for the user (no traceback)."""


def data_dir_default() -> Path:
    return Path(os.environ.get("LOCAL_STACK_DIR") or DEFAULT_DATA_DIR)


# -- where each setting comes from ----------------------------------------------------------------

def secret_variable(connector) -> str | None:
    """The environment variable of the secret that authenticates ``connector``'s webhooks (None for a
    declarative source, whose secret is declared in the sources document)."""
    if not connector.secret_setting:
        return None
    model = connector.settings_model
    return model.variable(connector.secret_setting) if model else connector.secret_setting.upper()


def _groups() -> dict[str, tuple[tuple[str, ...], tuple[str, ...]]]:
    """Each group of settings: (variable prefixes, the variables whose presence means "from the environment")."""
    from chalicelib.connectors import builtin_names, get_connector

    groups = {"fullwhere": (("FULLWHERE_",), ("FULLWHERE_API_KEY", "FULLWHERE_API_SECRET"))}
    for name in builtin_names():
        groups[name] = ((name.upper() + "_",), (secret_variable(get_connector(name)),))
    groups[SOURCES_GROUP] = (("SOURCES_", "COMO_"), ("SOURCES_FILE", "SOURCES_SECRET_ID"))
    return groups


def _group_of(variable: str, groups: dict[str, tuple[tuple[str, ...], tuple[str, ...]]]) -> str | None:
    for name, (prefixes, _) in groups.items():
        if variable.startswith(prefixes):
            return name
    return None


def origins(environ: dict[str, str] | os._Environ) -> dict[str, str]:
    """``{"fullwhere": "sandbox" | "environment", "<platform>": ..., "sources": ...}``."""
    return {name: "environment" if any(environ.get(variable) for variable in keys) else "sandbox"
            for name, (_, keys) in _groups().items()}


def check_environment(environ: dict[str, str] | os._Environ) -> None:
    """Refuse, before starting anything, an environment the local stack cannot honour."""
    for variable in UNSUPPORTED:
        if environ.get(variable):
            raise StackError(f"{variable} is set, but the local stack's AWS is moto, which holds no secret: "
                             "put those settings in the environment (or a file: TENANTS_FILE, SOURCES_FILE) instead")
    if bool(environ.get("FULLWHERE_API_KEY")) != bool(environ.get("FULLWHERE_API_SECRET")):
        raise StackError("set both FULLWHERE_API_KEY and FULLWHERE_API_SECRET (the real Fullwhere API), or neither "
                         "(the Fullwhere sandbox)")


def bridge_environment(environ: dict[str, str] | os._Environ, sandbox: Sandbox) -> tuple[dict[str, str], dict[str, str]]:
    """The bridge's environment: the given one, with the sandbox's values for every group the environment
    does not configure, and moto as AWS. Returns (environment, origins)."""
    check_environment(environ)
    groups, where = _groups(), origins(environ)
    env = dict(environ)
    for variable, value in sandbox.environment().items():
        group = _group_of(variable, groups)
        if group is None or where[group] == "sandbox":  # AWS and queue settings always point at moto
            env[variable] = value
    env["PYTHONUNBUFFERED"] = "1"
    return env, where


# -- the control endpoint used by the command-line tool -----------------------------------------

class StackControl(EmulatorServer):
    """``POST /samples``, ``POST /sign``, ``POST /oracle-pull``, ``POST /sweep``, ``GET /state`` (see the module
    docstring)."""

    def __init__(self, stack: "LocalStack"):
        super().__init__()
        self.stack = stack
        self.route("GET", "/state", lambda request: (200, stack.state()))
        self.route("POST", "/samples", self._samples)
        self.route("POST", "/sign", self._sign)
        self.route("POST", "/oracle-pull", lambda request: (200, stack.run_oracle_pull()))
        self.route("POST", "/sweep", self._sweep)

    def _body(self, request: Request) -> dict[str, Any]:
        body = request.body if request.is_json else ({} if request.body is None else None)
        if not isinstance(body, dict):
            raise HttpError(400, {"error": "the body must be a JSON object"})
        return body

    def _sandboxed(self, platform: str) -> bool:
        group = platform if platform in self.stack.origins else SOURCES_GROUP
        return self.stack.origins.get(group) == "sandbox"

    def _samples(self, request: Request):
        """Seed guest ``n`` (a new one by default) of every sandboxed platform; return the signed webhooks."""
        from sandbox.samples import SAMPLES

        body = self._body(request)
        wanted = body.get("platforms") or list(SAMPLES)
        n = body.get("n") or self.stack.next_guest_number()
        if not isinstance(n, int) or not isinstance(wanted, list):
            raise HttpError(400, {"error": "n must be an integer and platforms a list"})
        deliveries, skipped = [], {}
        for platform in wanted:
            sample = SAMPLES.get(platform)
            if sample is None:
                skipped[platform] = "no sample for this platform"
                continue
            if not self._sandboxed(platform):
                skipped[platform] = "its settings come from the environment, not the sandbox"
                continue
            delivery = sample.prepare(self.stack.sandbox, n)
            deliveries.append({
                "platform": platform, "id_field": sample.id_field, "guest_id": sample.guest_id(n),
                "imports": sample.imports, "pulled": sample.pulled,
                "path": delivery.path if delivery else None,
                "headers": delivery.headers if delivery else {},
                "body": delivery.body.decode() if delivery else None,
            })
        return 200, {"n": n, "deliveries": deliveries, "skipped": skipped}

    def _sweep(self, request: Request):
        """One sweep now (``bridge_cli sweep``): every account, due or not; ``since``: a backfill from then."""
        from datetime import datetime

        body = self._body(request)
        try:
            since = datetime.fromisoformat(body["since"]) if body.get("since") else None
        except (TypeError, ValueError):
            raise HttpError(400, {"error": "since must be an ISO 8601 date-time"}) from None
        platforms, tenants = body.get("platforms") or [], body.get("tenants") or []
        if not isinstance(platforms, list) or not isinstance(tenants, list):
            raise HttpError(400, {"error": "platforms and tenants must be lists"})
        return 200, self.stack.run_sweeps(since=since, platforms=platforms, tenants=tenants, force=True)

    def _sign(self, request: Request):
        """Sign a body with the sandbox's settings (sandboxed platforms only: never an environment secret)."""
        from sandbox import platforms

        body = self._body(request)
        platform = body.get("platform")
        try:
            payload = base64.b64decode(body.get("body_base64") or "", validate=True)
        except (TypeError, ValueError):
            payload = None
        if not isinstance(platform, str) or payload is None:
            raise HttpError(400, {"error": "platform and body_base64 are required"})
        if not self._sandboxed(platform):
            raise HttpError(409, {"error": f"{platform}'s settings come from the environment, not the sandbox"})
        if platform not in platforms.names():
            raise HttpError(404, {"error": f"unknown platform {platform!r}"})
        try:
            delivery = platforms.delivery(self.stack.sandbox, platform, payload)
        except NotImplementedError as exc:
            raise HttpError(409, {"error": str(exc)}) from None
        return 200, {"headers": delivery.headers, "query": delivery.query}


# -- the stack ------------------------------------------------------------------------------------

class LocalStack:
    def __init__(self, port: int = 8000, fullwhere_port: int = 8900, aws_port: int = 8901,
                 data_dir: Path | None = None, pull_every: float = DEFAULT_PULL_SECONDS,
                 environ: dict[str, str] | None = None, sweep_every: float = DEFAULT_SWEEP_SECONDS):
        self.port = port
        self.fullwhere_port = fullwhere_port
        self.aws_port = aws_port
        self.data_dir = Path(data_dir or data_dir_default()).resolve()
        self.pull_every = pull_every
        self.sweep_every = sweep_every
        self.environ = dict(os.environ if environ is None else environ)
        self.sandbox: Sandbox | None = None
        self.env: dict[str, str] = {}
        self.origins: dict[str, str] = {}
        self.control: StackControl | None = None
        self.api: subprocess.Popen | None = None
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._pull_lock = threading.Lock()
        self._sweep_lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self._app = None

    @property
    def bridge_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def real_fullwhere(self) -> bool:
        return bool(self.environ.get("FULLWHERE_API_KEY"))

    @property
    def state_path(self) -> Path:
        return self.data_dir / STATE_FILE

    # -- start ---------------------------------------------------------------------------------
    def start(self) -> None:
        check_environment(self.environ)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._refuse_second_stack()
        _require_free_port(self.port, "the bridge's HTTP API", "PORT=<another port> make run")
        # moto's server would hang on a taken port rather than fail: check the fixed ports first.
        for port, what, option in ((self.fullwhere_port, "the Fullwhere sandbox", "--fullwhere-port"),
                                   (self.aws_port, "moto's server", "--aws-port")):
            if port and not (option == "--fullwhere-port" and self.real_fullwhere):
                _require_free_port(port, what, f'make run ARGS="{option} <another port, or 0 for any free one>"')
        self.sandbox = Sandbox(
            fullwhere_db=None if self.real_fullwhere else str(self.data_dir / "fullwhere.sqlite3"),
            ports={"fullwhere": self.fullwhere_port, "aws": self.aws_port}, with_fullwhere=not self.real_fullwhere,
            aws_names=True)
        try:
            self.sandbox.start()  # the queues of deploy/resources.yaml (QUEUES)
        except OSError as exc:
            raise StackError(f"a sandbox port is taken ({exc.strerror}): choose others with --fullwhere-port and "
                             "--aws-port (0 picks free ones)") from None
        self.env, self.origins = bridge_environment(self.environ, self.sandbox)
        self._check_settings()
        # The retry worker and the OPERA pull run in this process: they read the same environment.
        os.environ.update(self.env)
        self._restore_ledger()
        self.control = StackControl(self).start()
        self._start_api()
        self._start_thread("retry-worker", self._work)
        if self.pull_every > 0:
            self._start_thread("oracle-pull", self._pull_periodically)
        if self.sweep_every > 0:
            self._start_thread("sweeps", self._sweep_periodically)
        _write_json(self.state_path, self.state())

    def _refuse_second_stack(self) -> None:
        try:
            pid = json.loads(self.state_path.read_text())["pid"]
        except (OSError, ValueError, KeyError, TypeError):
            return
        if process_alive(pid):
            raise StackError(f"a local stack is already running with {self.data_dir} (pid {pid}): stop it first, "
                             "or give this one another LOCAL_STACK_DIR")

    def _check_settings(self) -> None:
        from chalicelib.core.errors import SettingsError
        from chalicelib.domain.sources import SourcesSettings, load_sources
        from chalicelib.infra.settings import load_settings

        try:
            load_sources(load_settings(self.env, SourcesSettings))
        except SettingsError as exc:
            raise StackError(str(exc)) from None

    def _start_api(self) -> None:
        command = [sys.executable, "-m", "sandbox.local_stack", "_chalice-local", str(self.port), str(os.getpid())]
        self.api = subprocess.Popen(command, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, text=True, bufsize=1, process_group=0)
        recent: list[str] = []
        self._start_thread("api-output", self._relay, recent)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.api.poll() is not None:
                time.sleep(0.2)  # let the relay print the child's last words
                raise StackError(f"chalice local exited with status {self.api.returncode}:\n  " + "\n  ".join(recent[-10:]))
            try:
                with urllib.request.urlopen(self.bridge_url + "/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise StackError(f"chalice local did not answer on {self.bridge_url}/health within 60 s")

    def _relay(self, recent: list[str]) -> None:
        assert self.api is not None and self.api.stdout is not None
        for line in self.api.stdout:
            line = redact_query_strings(line.rstrip("\n"))
            recent.append(line)
            del recent[:-20]
            print(line, flush=True)

    def _start_thread(self, name: str, target, *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    # -- the retry worker and the scheduled pull -------------------------------------------------
    def _handlers(self):
        if self._app is None:
            from app import app

            self._app = app
        return self._app.handler_map

    def _work(self) -> None:
        from chalice.local import LambdaContext

        handler = self._handlers()["retry_worker"]
        poller = aws.LambdaSqsPoller(
            self.sandbox.retry_queue_url,
            lambda event: handler(event, LambdaContext("retry_worker", 512, max_runtime_ms=WORKER_TIMEOUT_SECONDS * 1000)),
            batch_size=10, endpoint_url=self.sandbox.aws_endpoint)
        reported = 0
        while not self._stopping.is_set():
            try:
                poller.poll_once(wait_seconds=1)
            except Exception as exc:  # moto going away at shutdown, or a passing error: poll again
                if self._stopping.is_set():
                    return
                print(f"[stack] retry worker: polling failed ({type(exc).__name__}); trying again", flush=True)
                self._stopping.wait(1)
            for error in poller.errors[reported:]:  # as Lambda would: the batch failed and comes back later
                print(f"[stack] retry worker: the handler raised {type(error).__name__}; the batch will be retried",
                      flush=True)
            reported = len(poller.errors)

    def _pull_periodically(self) -> None:
        while not self._stopping.wait(self.pull_every):
            self.run_oracle_pull()

    def run_oracle_pull(self) -> dict[str, Any]:
        from chalice.local import LambdaContext

        event = {"version": "0", "id": "local", "detail-type": "Scheduled Event", "source": "aws.events",
                 "account": "123456789012", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "region": aws.REGION, "resources": [], "detail": {}}
        with self._pull_lock:
            try:
                result = self._handlers()["oracle_pull"](
                    event, LambdaContext("oracle_pull", 512, max_runtime_ms=PULL_TIMEOUT_SECONDS * 1000))
            except Exception as exc:  # as Lambda would: this run failed, the next one tries again
                print(f"[stack] oracle_pull raised {type(exc).__name__}", flush=True)
                return {"status": "failed", "error": type(exc).__name__}
        return result if isinstance(result, dict) else {"status": "ok"}

    def _sweep_periodically(self) -> None:
        while not self._stopping.wait(self.sweep_every):
            self.run_sweeps()

    def run_sweeps(self, since=None, platforms=(), tenants=(), force: bool = False) -> dict[str, Any]:
        """The ``sweeps`` handler as its schedule runs it; with arguments (``bridge_cli sweep``), the same run
        over every account, or a backfill from ``since``."""
        from chalice.local import LambdaContext

        event = {"version": "0", "id": "local", "detail-type": "Scheduled Event", "source": "aws.events",
                 "account": "123456789012", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                 "region": aws.REGION, "resources": [], "detail": {}}
        with self._sweep_lock:
            try:
                if since is None and not platforms and not tenants and not force:
                    result = self._handlers()["sweeps"](
                        event, LambdaContext("sweeps", 512, max_runtime_ms=SWEEP_TIMEOUT_SECONDS * 1000))
                else:
                    from chalicelib.connectors import all_connectors
                    from chalicelib.domain.tenants import get_directory
                    from chalicelib.flow import sweep
                    from chalicelib.infra import metrics
                    from chalicelib.infra.settings import get_settings

                    try:
                        result = sweep.run(all_connectors(), get_directory(), get_settings(), 3600.0, since=since,
                                           platforms=platforms, tenants=tenants, force=force)
                    finally:
                        metrics.flush()
            except Exception as exc:  # as Lambda would: this run failed, the next one tries again
                print(f"[stack] sweeps raised {type(exc).__name__}", flush=True)
                return {"status": "failed", "error": type(exc).__name__}
        return result if isinstance(result, dict) else {"status": "ok"}

    def next_guest_number(self) -> int:
        """A new sample guest number for the demo, kept across restarts (the Fullwhere sandbox is too)."""
        path = self.data_dir / "demo.json"
        with self._counter_lock:
            try:
                last = int(json.loads(path.read_text())["last_guest"])
            except (OSError, ValueError, KeyError, TypeError):
                last = 0
            _write_json(path, {"last_guest": last + 1})
            return last + 1

    # -- what the tool and the user are told ------------------------------------------------------
    def webhook_urls(self) -> dict[str, dict[str, Any]]:
        """Each platform's webhook URL (query secrets shown as ``<SETTING>``), where its settings come from, and
        whether it is configured (read here from the connectors: ``/health`` tells only its status)."""
        from chalicelib.connectors import all_connectors
        from chalicelib.core.errors import SettingsError
        from sandbox.platforms import sign_for

        # This process runs with the bridge's environment (start()), so the sources are the bridge's.
        connectors = all_connectors()
        urls = {}
        for connector in connectors:
            group = connector.name if connector.name in self.origins else SOURCES_GROUP
            entry: dict[str, Any] = {"settings": self.origins.get(group, "environment")}
            try:
                entry["configured"] = connector.configured()
            except SettingsError:  # the bridge answers 503 for it, and its log says why
                entry["configured"] = False
            if connector.name == "oracle":
                entry["webhook_url"] = ""
                entry["note"] = f"no webhook: pulled every {self.pull_every:g} s" if self.pull_every > 0 else "no webhook"
            else:
                url = f"{self.bridge_url}/webhooks/{connector.name}"
                try:
                    _, query = sign_for(connector.name, b"{}", self.env)
                except Exception:  # not configured: the URL without its token
                    query = {}
                source_auth = getattr(getattr(connector, "source", None), "auth", None)
                placeholder = (secret_variable(connector) or getattr(source_auth, "secret_env", None)
                               or f"secret of source {connector.name}")
                if query:
                    url += "?" + "&".join(f"{key}=<{placeholder}>" for key in query)
                entry["webhook_url"] = url
            urls[connector.name] = entry
        return urls

    def state(self) -> dict[str, Any]:
        sandbox = self.sandbox
        assert sandbox is not None
        fullwhere = ({"source": "environment", "url": self.env.get("FULLWHERE_API_URL") or "https://api.fullwhere.com"}
                     if self.real_fullwhere else
                     {"source": "sandbox", "url": sandbox.fullwhere.url, "db": str(self.data_dir / "fullwhere.sqlite3")})
        return {
            "pid": os.getpid(),
            "bridge_url": self.bridge_url,
            "control_url": self.control.url if self.control else None,
            "fullwhere": fullwhere,
            "aws": {"endpoint": sandbox.aws_endpoint, "region": aws.REGION,
                    "retry_queue_url": sandbox.retry_queue_url,
                    "dead_letter_queue_url": sandbox.dead_letter_queue_url,
                    "identity_table": sandbox.identity_table},
            "platforms": self.webhook_urls(),
            "platform_sandboxes": {name: server.url for name, server in sandbox.platforms.items()},
            "oracle_pull_seconds": self.pull_every,
            "sweep_seconds": self.sweep_every,
        }

    def banner(self) -> str:
        state = self.state()
        lines = [f"Fullwhere bridge running on {self.bridge_url} (chalice local). Ctrl-C stops everything.", "",
                 "Webhook URLs (settings from):"]
        for name, entry in state["platforms"].items():
            where = entry["webhook_url"] or entry.get("note", "")
            unset = "" if entry["configured"] else ", not configured: refuses every request"
            lines.append(f"  {name:<11} {where}  ({entry['settings']}{unset})")
        fullwhere = state["fullwhere"]
        if fullwhere["source"] == "sandbox":
            lines.append(f"\nFullwhere: the sandbox on {fullwhere['url']}, customers kept in {fullwhere['db']}")
        else:
            lines.append(f"\nFullwhere: {fullwhere['url']} with FULLWHERE_API_KEY/FULLWHERE_API_SECRET from the environment")
        lines.append("Platform API sandboxes: " + ", ".join(f"{name} {url}" for name, url in state["platform_sandboxes"].items()))
        lines.append(f"AWS (moto): {state['aws']['endpoint']}, region {aws.REGION}: queue fullwhere-bridge-retry "
                     f"(visibility {VISIBILITY_TIMEOUT} s, retention {_days(QUEUES.retention)}, maxReceiveCount "
                     f"{MAX_RECEIVE_COUNT}) -> fullwhere-bridge-dead-letter (retention "
                     f"{_days(QUEUES.dead_letter_retention)}), table {state['aws']['identity_table']}")
        lines.append("Retry worker: polling the retry queue, batches of 10. OPERA pull: "
                     + (f"every {self.pull_every:g} s (every 5 minutes in AWS)." if self.pull_every > 0 else "off.")
                     + " Sweeps: " + (f"every {self.sweep_every:g} s (each account every SWEEP_MINUTES)."
                                      if self.sweep_every > 0 else "off."))
        lines.append("Try it: .venv/bin/python -m bridge_cli demo")
        return "\n".join(lines)

    # -- the identity ledger survives a restart -------------------------------------------------
    def _ledger_path(self) -> Path:
        if not self.real_fullwhere:
            return self.data_dir / "identity-sandbox.json"
        target = f"{self.env.get('FULLWHERE_API_URL', '')}\n{self.environ.get('FULLWHERE_API_KEY', '')}"
        return self.data_dir / f"identity-{hashlib.sha256(target.encode()).hexdigest()[:12]}.json"

    def _restore_ledger(self) -> None:
        path = self._ledger_path()
        if not path.exists():
            return
        try:
            items = json.loads(path.read_text())
        except ValueError:
            print(f"[stack] {path.name} is not readable JSON: the identity ledger starts empty", flush=True)
            return
        dynamodb = aws.client("dynamodb", self.sandbox.aws_endpoint)
        for start in range(0, len(items), 25):
            requests = [{"PutRequest": {"Item": item}} for item in items[start:start + 25]]
            unprocessed = {self.sandbox.identity_table: requests}
            while unprocessed:
                unprocessed = dynamodb.batch_write_item(RequestItems=unprocessed).get("UnprocessedItems") or {}

    def _save_ledger(self) -> None:
        dynamodb = aws.client("dynamodb", self.sandbox.aws_endpoint)
        items = []
        for page in dynamodb.get_paginator("scan").paginate(TableName=self.sandbox.identity_table):
            items.extend(page["Items"])
        _write_json(self._ledger_path(), items)

    # -- stop -----------------------------------------------------------------------------------
    def stop(self) -> None:
        self._stopping.set()
        if self.api is not None:
            _terminate(self.api)
        for thread in self._threads:
            thread.join(timeout=15)
        if self.control is not None:
            self.control.stop()
        sandbox = self.sandbox
        if sandbox is not None:
            if sandbox.aws_endpoint:
                try:
                    self._save_ledger()
                    left = {name: aws.queue_depth(sandbox.aws_endpoint, url) for name, url in
                            (("retry", sandbox.retry_queue_url), ("dead-letter", sandbox.dead_letter_queue_url))}
                    for name, count in left.items():
                        if count:
                            print(f"[stack] {count} message(s) in the {name} queue are dropped: the local queues "
                                  "live in memory", flush=True)
                except Exception as exc:
                    print(f"[stack] could not save the identity ledger ({type(exc).__name__})", flush=True)
            sandbox.stop()
        try:
            if json.loads(self.state_path.read_text()).get("pid") == os.getpid():
                self.state_path.unlink()
        except (OSError, ValueError):
            pass


# -- helpers --------------------------------------------------------------------------------------

_QUERY = re.compile(r"(/[^\s?\"']*)\?([^\s\"']*)")


def redact_query_strings(line: str) -> str:
    """Every ``path?query`` in a line with its query values replaced (``?Token=REDACTED``)."""
    from chalicelib.infra.logs import redact_url

    return _QUERY.sub(lambda match: redact_url(match.group(0)), line)


def _days(seconds: int) -> str:
    return f"{seconds / 86400:g} days"


def _write_json(path: Path, document: Any) -> None:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(document, indent=2))
    temporary.replace(path)


def process_alive(pid: Any) -> bool:
    """Whether ``pid`` names a running process (of any user)."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _require_free_port(port: int, what: str, hint: str) -> None:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            raise StackError(f"port {port} ({what}) is in use: {hint}") from None


def _terminate(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def _die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGTERM this process when its parent dies (PR_SET_PDEATHSIG); no-op elsewhere."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        sys.exit(0)


def _chalice_local(port: str, parent_pid: str) -> None:
    """The API child process: ``chalice local`` on 127.0.0.1, bound to its parent's life."""
    _die_with_parent(int(parent_pid))
    from chalice.cli import main as chalice_main

    sys.argv = ["chalice", "local", "--host", "127.0.0.1", "--port", port, "--no-autoreload"]
    sys.exit(chalice_main())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox.local_stack",
        description="Run the whole Fullwhere bridge on 127.0.0.1 until Ctrl-C: the HTTP API (chalice local), "
                    "moto's SQS and DynamoDB, the retry worker, the scheduled OPERA pull and the sandboxes.")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT") or 8000),
                        help="port of the bridge's HTTP API (default 8000, or $PORT)")
    parser.add_argument("--fullwhere-port", type=int, default=8900,
                        help="port of the Fullwhere sandbox (default 8900; 0 picks a free one)")
    parser.add_argument("--aws-port", type=int, default=8901, help="port of moto's server (default 8901; 0 picks a free one)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="where the Fullwhere sandbox's customers, the identity ledger and stack.json are kept "
                             "(default .sandbox, or $LOCAL_STACK_DIR)")
    parser.add_argument("--pull-every", type=float, default=DEFAULT_PULL_SECONDS, metavar="SECONDS",
                        help="run the scheduled OPERA Cloud pull this often (default 30; every 5 minutes in AWS; 0: never)")
    parser.add_argument("--sweep-every", type=float, default=DEFAULT_SWEEP_SECONDS, metavar="SECONDS",
                        help="run the scheduled sweeps this often (default 60, as in AWS; 0: never)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["_chalice-local"]:
        _chalice_local(*argv[1:3])
        return 0
    args = parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # moto's server would log every SQS call  # the bridge's log lines reach a pipe as they happen

    def terminate(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    # Ctrl-C stops the stack even when started from a shell that ignores SIGINT (a background job).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    stack = LocalStack(port=args.port, fullwhere_port=args.fullwhere_port, aws_port=args.aws_port,
                       data_dir=args.data_dir, pull_every=args.pull_every, sweep_every=args.sweep_every)
    status = 0
    try:
        stack.start()
        print(stack.banner(), flush=True)
        while stack.api.poll() is None:
            time.sleep(0.5)
        print(f"[stack] chalice local exited with status {stack.api.returncode}: stopping", flush=True)
        status = 1
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        status = 2
    except KeyboardInterrupt:
        print("\n[stack] stopping...", flush=True)
    finally:
        # A second Ctrl-C must not cut the clean-up short (it would leave chalice local behind).
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        stack.stop()
        print("[stack] stopped", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
