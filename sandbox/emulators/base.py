"""Shared machinery for the local HTTP emulators of third-party APIs.

Each emulator is an `EmulatorServer` subclass: a stdlib ThreadingHTTPServer on
127.0.0.1 (ephemeral port by default) running in a background thread. Subclasses
only register route handlers and keep their own state; this module provides
request recording, scripted faults, artificial latency and clean shutdown, so
the three emulators behave the same way under failure.
"""

from __future__ import annotations

import json
import signal
import socket
import sys
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Self, Union
from urllib.parse import parse_qs, urlsplit

# A handler returns (status, body, extra_headers) or (status, body). The body is
# JSON-serialisable (sent as application/json), bytes (sent as-is) or None (empty).
Response = Union[tuple[int, Any], tuple[int, Any, dict[str, str]]]
Handler = Callable[["Request"], Response]

FAULT_KINDS = ("status", "delay", "drop", "malformed")


class HttpError(Exception):
    """Raised by a handler to answer with an error response without plumbing returns."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None):
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = headers or {}


@dataclass(frozen=True)
class Fault:
    """One scripted misbehaviour.

    kind="status":    answer `status` (default 500) with optional Retry-After and body text.
    kind="delay":     wait `seconds`, then answer normally (slow upstream / client timeout).
    kind="drop":      close the connection without any HTTP response.
    kind="malformed": answer 200 with a body that is not JSON (or `body` if given); with
                      `handled=True` the request is first handled as usual (an import is stored), only
                      its answer is mangled.
    """

    kind: str
    status: int = 500
    retry_after: str | int | None = None
    body: str | None = None
    seconds: float = 0.0
    handled: bool = False

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}, expected one of {FAULT_KINDS}")
        if self.kind == "delay" and self.seconds <= 0:
            raise ValueError("a delay fault needs seconds > 0")


@dataclass
class _Scripted:
    fault: Fault
    remaining: int
    path: str | None


class FaultPlan:
    """FIFO of scripted faults plus an optional permanent one ("service down").

    Each matching request consumes one use of the oldest matching entry. A path
    filter matches as a prefix of the request path (query string included).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: deque[_Scripted] = deque()
        self._always: _Scripted | None = None
        self.consumed = 0

    def add(self, fault: Fault, times: int = 1, path: str | None = None) -> FaultPlan:
        if times < 1:
            raise ValueError("times must be >= 1")
        with self._lock:
            self._queue.append(_Scripted(fault, times, path))
        return self

    def always(self, fault: Fault, path: str | None = None) -> FaultPlan:
        """Fail every matching request until clear() (takes precedence over add())."""
        with self._lock:
            self._always = _Scripted(fault, 0, path)
        return self

    def clear(self) -> None:
        """Forget pending and permanent faults (the consumed count is kept)."""
        with self._lock:
            self._queue.clear()
            self._always = None

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._always = None
            self.consumed = 0

    @property
    def pending(self) -> int:
        """Scripted uses not consumed yet (the permanent fault is not counted)."""
        with self._lock:
            return sum(entry.remaining for entry in self._queue)

    def take(self, path: str) -> Fault | None:
        with self._lock:
            if self._always and _matches(self._always.path, path):
                self.consumed += 1
                return self._always.fault
            for entry in self._queue:
                if _matches(entry.path, path):
                    entry.remaining -= 1
                    if entry.remaining == 0:
                        self._queue.remove(entry)
                    self.consumed += 1
                    return entry.fault
        return None


def instant(text: Any) -> datetime | None:
    """An ISO 8601 time in a request or a stored item (UTC when it has no zone); None when it is not one."""
    if not isinstance(text, str):
        return None
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def _matches(prefix: str | None, path: str) -> bool:
    return prefix is None or path.startswith(prefix)


@dataclass
class Request:
    """What a handler sees, and what `EmulatorServer.requests` records."""

    method: str
    path: str  # as sent, query string included
    headers: dict[str, str]  # keys lower-cased
    raw: bytes = field(repr=False)
    body: Any  # parsed JSON, else the raw bytes (None when there was no body)
    is_json: bool

    @classmethod
    def parse(cls, method: str, path: str, headers: dict[str, str], raw: bytes) -> Request:
        body: Any = raw or None
        is_json = False
        if raw:
            try:
                body, is_json = json.loads(raw), True
            except ValueError:  # includes UnicodeDecodeError
                pass
        return cls(method, path, headers, raw, body, is_json)

    @property
    def route(self) -> str:
        """The path without its query string (what routing matches on)."""
        return urlsplit(self.path).path

    @property
    def query(self) -> dict[str, str]:
        """Query parameters, first value of each."""
        return {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def form(self) -> dict[str, str]:
        """The body parsed as application/x-www-form-urlencoded, first value of each."""
        text = self.raw.decode("utf-8", errors="replace")
        return {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}


class _HTTPServer(ThreadingHTTPServer):
    # Daemon handler threads: a test process must never hang on a stuck connection.
    daemon_threads = True
    # The stdlib default backlog (5) drops connections under concurrent load,
    # which shows up as 1 s SYN-retry stalls in benchmarks.
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], emulator: EmulatorServer):
        self.emulator = emulator
        super().__init__(address, _RequestHandler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (timeouts, dropped connections, stop()) is expected.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real APIs and pooled clients expect
    server_version = "LocalEmulator/1.0"
    timeout = 60  # an idle keep-alive connection releases its thread eventually
    # Headers and body go out in two writes; with Nagle on, delayed ACKs add ~40 ms per call.
    disable_nagle_algorithm = True
    server: _HTTPServer

    def setup(self) -> None:
        super().setup()
        self.server.emulator._track(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.emulator._untrack(self.connection)

    def _serve(self) -> None:
        self.server.emulator._serve(self)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded in .requests; stderr noise would clutter pytest output


class EmulatorServer:
    """Base class: routing, recording, faults, latency, lifecycle.

    Subclasses call `route()` / `route_prefix()` in __init__ and override
    `reset_state()` to clear their own data. Handlers run concurrently: guard
    shared state with `self.lock`.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0):
        self.host = host
        self.port = port
        self._default_latency = latency
        self.latency = latency  # seconds added to every request (benchmarks)
        self.faults = FaultPlan()
        self.lock = threading.RLock()
        self.errors: list[BaseException] = []  # handler crashes, answered as 500
        self._exact: dict[tuple[str, str], Handler] = {}
        self._prefixes: list[tuple[str, str, Handler]] = []
        self._requests: list[Request] = []
        self._requests_lock = threading.Lock()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        # Requests being served right now, and the most at once since the last reset (a drain's concurrency).
        self.in_flight = 0
        self.peak_in_flight = 0
        self._in_flight_lock = threading.Lock()

    # -- routing ---------------------------------------------------------------

    def route(self, method: str, path: str, handler: Handler) -> None:
        self._exact[(method.upper(), path)] = handler

    def route_prefix(self, method: str, prefix: str, handler: Handler) -> None:
        self._prefixes.append((method.upper(), prefix, handler))
        # Longest prefix first so specific routes win over generic ones.
        self._prefixes.sort(key=lambda entry: len(entry[1]), reverse=True)

    def _find_handler(self, method: str, route: str) -> Handler | None:
        handler = self._exact.get((method, route))
        if handler is not None:
            return handler
        for m, prefix, candidate in self._prefixes:
            if m == method and route.startswith(prefix):
                return candidate
        return None

    # -- lifecycle -------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError(f"{type(self).__name__} is not started")
        return f"http://{self.host}:{self._httpd.server_address[1]}"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> Self:
        if self._httpd is not None:
            return self
        self._stopping.clear()
        self._httpd = _HTTPServer((self.host, self.port), self)
        # Keep the bound port so a stop()/start() cycle (restart scenarios) keeps the URL.
        self.port = self._httpd.server_address[1]
        self._thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.01},  # stop() waits up to one poll interval
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, thread = self._httpd, self._thread
        if httpd is None:
            return
        self._stopping.set()  # wakes handlers sleeping on latency/delay faults
        httpd.shutdown()
        # Handler threads blocked reading idle keep-alive connections would linger:
        # shut their sockets so they exit now.
        with self._connections_lock:
            connections = list(self._connections)
        for conn in connections:
            _shutdown_socket(conn)
        httpd.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.add(conn)

    def _untrack(self, conn: socket.socket) -> None:
        with self._connections_lock:
            self._connections.discard(conn)

    # -- state -----------------------------------------------------------------

    @property
    def requests(self) -> list[Request]:
        """Snapshot of every request received (faulted ones included), oldest first."""
        with self._requests_lock:
            return list(self._requests)

    def requests_matching(self, method: str | None = None, path: str | None = None) -> list[Request]:
        """Recorded requests filtered by method and/or path prefix."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method.upper()) and _matches(path, r.path)
        ]

    @property
    def fault_count(self) -> int:
        return self.faults.consumed

    def reset(self) -> None:
        """Back to a fresh emulator: data, recorded requests, faults and latency."""
        with self.lock:
            self.reset_state()
        with self._requests_lock:
            self._requests.clear()
        self.faults.reset()
        self.latency = self._default_latency
        self.errors.clear()
        with self._in_flight_lock:
            self.peak_in_flight = self.in_flight

    def reset_state(self) -> None:
        """Hook for subclasses: clear emulated data and counters."""

    # -- request handling ------------------------------------------------------

    def _serve(self, handler: _RequestHandler) -> None:
        with self._in_flight_lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            self._serve_counted(handler)
        finally:
            with self._in_flight_lock:
                self.in_flight -= 1

    def _serve_counted(self, handler: _RequestHandler) -> None:
        raw = _read_body(handler)
        headers = {k.lower(): v for k, v in handler.headers.items()}
        request = Request.parse(handler.command, handler.path, headers, raw)
        with self._requests_lock:
            self._requests.append(request)

        if self.latency:
            self._stopping.wait(self.latency)
        fault = self.faults.take(request.path)
        if fault is not None:
            if fault.kind == "drop":
                handler.close_connection = True
                _shutdown_socket(handler.connection)
                return
            if fault.kind == "delay":
                self._stopping.wait(fault.seconds)  # then fall through to a normal answer
            elif fault.kind == "status":
                self._send(handler, *_fault_response(fault))
                return
            elif fault.kind == "malformed":
                if fault.handled:
                    self._dispatch(request)
                body = (fault.body if fault.body is not None else '{"truncated": ').encode()
                # Claims JSON on purpose: clients must not trust the Content-Type alone.
                self._send(handler, 200, body, {"Content-Type": "application/json"})
                return

        self._send(handler, *self._dispatch(request))

    def _dispatch(self, request: Request) -> tuple[int, Any, dict[str, str]]:
        handler = self._find_handler(request.method, request.route)
        if handler is None:
            return 404, {
                "statusCode": 404,
                "message": f"Cannot {request.method} {request.route}",
                "error": "Not Found",
            }, {}
        try:
            result = handler(request)
        except HttpError as err:
            return err.status, err.body, err.headers
        except Exception as err:  # an emulator bug must show up, not hang the client
            self.errors.append(err)
            return 500, {"message": f"emulator error: {err!r}"}, {}
        status, body, *rest = result
        return status, body, (rest[0] if rest else {})

    def _send(self, handler: _RequestHandler, status: int, body: Any, extra: dict[str, str]) -> None:
        if body is None:
            data, content_type = b"", None
        elif isinstance(body, (bytes, bytearray)):
            data, content_type = bytes(body), "application/octet-stream"
        else:
            data, content_type = json.dumps(body).encode(), "application/json"
        headers = {"Content-Type": content_type} if content_type else {}
        for name, value in extra.items():  # extra headers override defaults, case-insensitively
            headers = {k: v for k, v in headers.items() if k.lower() != name.lower()}
            headers[name] = str(value)
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)


def _read_body(handler: _RequestHandler) -> bytes:
    if "chunked" in handler.headers.get("Transfer-Encoding", "").lower():
        # Streaming clients send chunked bodies; leaving chunks unread would
        # corrupt the next request on the keep-alive connection.
        chunks = []
        while True:
            size = int(handler.rfile.readline().split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while handler.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(handler.rfile.read(size))
            handler.rfile.readline()  # CRLF after each chunk
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


def _fault_response(fault: Fault) -> tuple[int, Any, dict[str, str]]:
    headers = {} if fault.retry_after is None else {"Retry-After": str(fault.retry_after)}
    if fault.body is None:
        return fault.status, {"statusCode": fault.status, "message": "injected fault"}, headers
    try:
        json.loads(fault.body)
        headers.setdefault("Content-Type", "application/json")
    except ValueError:
        headers.setdefault("Content-Type", "text/plain; charset=utf-8")
    return fault.status, fault.body.encode(), headers


def _shutdown_socket(conn: socket.socket) -> None:
    # shutdown() (not close()) ends the TCP stream at once even though the
    # handler's file objects still reference the socket; socketserver closes it.
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def serve_until_interrupted(server: EmulatorServer) -> None:
    """Run an emulator in the foreground (standalone sandboxes) until Ctrl-C or SIGTERM."""
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    server.start()
    print(f"{type(server).__name__} listening on {server.url}", flush=True)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
