"""One Lambda execution environment of the rehearsal: run as ``python -S -B bootstrap.py TASK OPT RUNTIME FD``.

This file is the rehearsal's stand-in for Lambda's own runtime, never part of the package. Before anything
else it builds ``sys.path`` as the Python 3.11 runtime does (AWS Lambda Developer Guide, "Working with .zip
file archives for Python Lambda functions"): the function's code (``/var/task``), the layers
(``/opt/python/lib/python3.11/site-packages``, ``/opt/python``), the runtime's own boto3 (``/var/runtime``),
then the standard library; ``-S`` keeps the virtualenv's site-packages out. It then serves invocations
one by one, as a warm container does: one JSON request per line on stdin, one JSON answer per line on
the file descriptor ``FD``. Each answer carries the handler's result or error, what it wrote to
stdout/stderr (Lambda's log lines) and where each module it loaded came from. The AWS calls it makes are
recorded where they arrive, by moto's server (``recorder.py``), whatever client makes them.
"""

import sys

TASK, OPT, RUNTIME, ANSWERS = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
_stdlib = [entry for entry in sys.path[1:] if entry]  # [0] is this file's folder: not on Lambda's path
sys.path[:] = [TASK, f"{OPT}/python/lib/python3.11/site-packages", f"{OPT}/python", RUNTIME, *_stdlib]

import importlib  # (after the path above: nothing of the function may shadow these)
import io
import json
import os
import threading
import time
import traceback


class _Captured(io.TextIOBase):
    """stdout and stderr of the function: what Lambda would ship to its log group, one invocation at a time."""

    def __init__(self):
        self._parts: list[str] = []
        self._lock = threading.Lock()

    def writable(self):
        return True

    def write(self, text):
        with self._lock:
            self._parts.append(text)
        return len(text)

    def take(self) -> str:
        with self._lock:
            text, self._parts = "".join(self._parts), []
        return text


class Context:
    """The attributes and method of Lambda's Python context object that a handler may use."""

    def __init__(self, request):
        environ = os.environ
        self.function_name = environ["AWS_LAMBDA_FUNCTION_NAME"]
        self.function_version = environ.get("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        self.invoked_function_arn = request["function_arn"]
        self.memory_limit_in_mb = environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"]
        self.aws_request_id = request["request_id"]
        self.log_group_name = environ["AWS_LAMBDA_LOG_GROUP_NAME"]
        self.log_stream_name = environ["AWS_LAMBDA_LOG_STREAM_NAME"]
        self.identity = None
        self.client_context = None
        self._deadline_ms = request["deadline_ms"]

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int(self._deadline_ms - time.time() * 1000))


def _load_handler():
    module_name, _, attribute = os.environ["_HANDLER"].rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def _origins() -> dict[str, str]:
    """Where each top-level module outside the standard library was loaded from."""
    found = {}
    for name, module in list(sys.modules.items()):
        path = getattr(module, "__file__", None)
        if "." not in name and path and not any(path.startswith(entry) for entry in _stdlib):
            found[name] = path
    return found


def main() -> None:
    captured = _Captured()
    requests, answers = sys.stdin, os.fdopen(ANSWERS, "w", encoding="utf-8")
    sys.stdout = sys.stderr = captured
    handler = None
    for line in requests:
        request = json.loads(line)
        answer: dict = {}
        try:
            if handler is None:  # Lambda's init phase: imported on the first invocation, kept after
                handler = _load_handler()
            answer["result"] = handler(request["event"], Context(request))
        except Exception as exc:  # noqa: BLE001 (reported as Lambda reports a function error)
            answer["error"] = {"errorType": type(exc).__name__, "errorMessage": str(exc)}
            traceback.print_exc()
        answer["logs"] = captured.take()
        answer["origins"] = _origins()
        answers.write(json.dumps(answer, default=str) + "\n")
        answers.flush()


if __name__ == "__main__":
    main()
