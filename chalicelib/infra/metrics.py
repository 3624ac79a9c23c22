"""CloudWatch metrics in the Embedded Metric Format (EMF), written to the logs: no API call, no client.

Every log line (:func:`chalicelib.infra.logs.log`) counts one ``Events`` datapoint, and its ``latency_ms``
as ``Latency``, per platform and outcome; :func:`flush` writes them once per invocation
(:mod:`chalicelib.handlers.invocation`). A few lines rather than Powertools' ``Metrics``, which would cost
cold start and layer size. Format, dimensions and figures: docs/reliability.md, "Metrics".
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Collection
from typing import Any

NAMESPACE = "FullwhereBridge"
MAX_VALUES = 100  # EMF: at most 100 values in one metric array
UNKNOWN = "unknown"
# Outcomes whose latency is a meaningful distribution (a request or an event reaching its end).
TIMED_OUTCOMES = frozenset({"acknowledged", "rejected", "imported", "merged", "duplicate", "skipped", "ignored",
                            "queued", "retried", "dead_lettered", "failed", "handshake", "pull_finished"})

_lock = threading.Lock()
_counts: dict[tuple[str, str], int] = defaultdict(int)
_latencies: dict[tuple[str, str], list[float]] = defaultdict(list)


def record(outcome: str, platform: str | None, latency_ms: float | None = None) -> None:
    """Count one outcome (called by :func:`chalicelib.infra.logs.log` for every line)."""
    key = (platform or UNKNOWN, outcome)
    with _lock:
        _counts[key] += 1
        if latency_ms is not None and outcome in TIMED_OUTCOMES and isinstance(latency_ms, (int, float)):
            _latencies[key].append(float(latency_ms))


def pending() -> dict[tuple[str, str], int]:
    """The counts not flushed yet (for tests and the scenario runner)."""
    with _lock:
        return dict(_counts)


def flush(stream: Any = None, platforms: Collection[str] = ()) -> int:
    """Write the counts as EMF lines and forget them; returns the number of lines written.

    A platform not in ``platforms`` is counted as ``unknown``: a 404's path segment is chosen by whoever
    sends the request, and must not create metrics at will."""
    with _lock:
        counts, latencies = dict(_counts), {key: list(values) for key, values in _latencies.items()}
        _counts.clear()
        _latencies.clear()
    if not counts:
        return 0
    known = set(platforms)
    merged_counts: dict[tuple[str, str], int] = defaultdict(int)
    merged_latencies: dict[tuple[str, str], list[float]] = defaultdict(list)
    for (platform, outcome), count in counts.items():
        key = (platform if platform in known else UNKNOWN, outcome)
        merged_counts[key] += count
        merged_latencies[key] += latencies.get((platform, outcome), [])
    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    lines = [line for key in sorted(merged_counts)
             for line in documents(key[0], key[1], merged_counts[key], merged_latencies[key], function)]
    out = stream or sys.stdout
    try:
        out.write("".join(_ENCODER.encode(line) + "\n" for line in lines))
    except Exception:  # metrics must never break the invocation they describe
        return 0
    return len(lines)


# One encoder for every line (json.dumps with options builds a new one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def documents(platform: str, outcome: str, count: int, latencies: list[float],
              function: str | None = None) -> list[dict[str, Any]]:
    """The EMF documents of one (platform, outcome): the count, and the latencies 100 at a time."""
    chunks = [latencies[start:start + MAX_VALUES] for start in range(0, len(latencies), MAX_VALUES)] or [[]]
    result = []
    for index, chunk in enumerate(chunks):
        metrics, values = [], {}
        if index == 0:
            metrics.append({"Name": "Events", "Unit": "Count"})
            values["Events"] = count
        if chunk:
            metrics.append({"Name": "Latency", "Unit": "Milliseconds"})
            values["Latency"] = [round(value, 1) for value in chunk]
        document: dict[str, Any] = {
            "_aws": {
                "Timestamp": int(time.time() * 1000),
                "CloudWatchMetrics": [{
                    "Namespace": NAMESPACE,
                    "Dimensions": [["platform", "outcome"], ["outcome"]],
                    "Metrics": metrics,
                }],
            },
            "platform": platform,
            "outcome": outcome,
            **values,
        }
        if function:
            document["function"] = function  # a property, not a dimension: searchable in Logs Insights
        result.append(document)
    return result

