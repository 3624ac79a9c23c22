"""CloudWatch metrics in the Embedded Metric Format (EMF), written to the logs: no API call, no client.

Every log line (:func:`chalicelib.infra.logs.log`) counts one ``Events`` datapoint, and its ``latency_ms``
as ``Latency``, per platform and outcome, and for ``skipped`` and ``ignored`` lines per reason too (bounded to
:data:`REASONS`); :func:`flush` writes them once per invocation
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
                            "queued", "held", "retried", "dead_lettered", "failed", "handshake", "pull_finished",
                            "recovered", "sweep_finished"})

# Outcomes counted per reason as well, so that a restaurant sees why its guests were not imported.
REASONED_OUTCOMES = frozenset({"skipped", "ignored", "held"})
# The reasons that become a dimension value; any other reason counts as OTHER, so that a free-text reason
# (an error message, a payload's words) can never create metrics at will. Keep in step with the reasons
# the pipeline and connectors give (docs/platforms.md, "What each platform yields").
REASONS = frozenset({
    "no_identity",                       # no email, no valid phone, no platform id (pipeline)
    "no_contact_and_no_identity_table",  # a platform id only, and no identity ledger configured (pipeline)
    "known_guest_changed",               # the ledger's customer changed since (pipeline)
    "test_lead",                         # a Meta test lead (Meta connector)
    "event_not_imported",                # an event type that carries no guest, by design (webhook handler)
    "no_guest",                          # the platform has no guest behind the event (pipeline)
    "pull_in_progress",                  # another OPERA pull holds the hotel's position (scheduled pull)
    # Why an event is held (core.errors.Held.CAUSES): the operator's to fix, alarmed (HeldAlarm).
    "credentials_rejected",              # Fullwhere or a platform API refused the bridge's credentials (401/403)
    "not_configured",                    # a credential, or the platform itself, is not configured
    "unrouted",                          # no tenant lists the event's account yet
})
# Reasons logged as sentences, and the dimension value each counts as.
_REASON_ALIASES = {
    "event type not imported": "event_not_imported",
    "no guest behind this event": "no_guest",
    "another run holds this hotel's position": "pull_in_progress",
}
OTHER = "other"

_lock = threading.Lock()
# (platform, outcome, reason); reason is "" for outcomes not counted per reason.
_counts: dict[tuple[str, str, str], int] = defaultdict(int)
_latencies: dict[tuple[str, str, str], list[float]] = defaultdict(list)


def reason_dimension(outcome: str, reason: object) -> str:
    """The ``reason`` dimension of one line: a known reason, ``other``, or "" (none) for other outcomes."""
    if outcome not in REASONED_OUTCOMES:
        return ""
    if isinstance(reason, str):
        if reason in REASONS:
            return reason
        if reason in _REASON_ALIASES:
            return _REASON_ALIASES[reason]
    return OTHER


def record(outcome: str, platform: str | None, latency_ms: float | None = None, reason: object = None) -> None:
    """Count one outcome (called by :func:`chalicelib.infra.logs.log` for every line)."""
    key = (platform or UNKNOWN, outcome, reason_dimension(outcome, reason))
    with _lock:
        _counts[key] += 1
        if latency_ms is not None and outcome in TIMED_OUTCOMES and isinstance(latency_ms, (int, float)):
            _latencies[key].append(float(latency_ms))


def pending() -> dict[tuple[str, str, str], int]:
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
    merged_counts: dict[tuple[str, str, str], int] = defaultdict(int)
    merged_latencies: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    for (platform, outcome, reason), count in counts.items():
        key = (platform if platform in known else UNKNOWN, outcome, reason)
        merged_counts[key] += count
        merged_latencies[key] += latencies.get((platform, outcome, reason), [])
    function = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")
    lines = [line for key in sorted(merged_counts)
             for line in documents(key[0], key[1], merged_counts[key], merged_latencies[key], function,
                                   reason=key[2] or None)]
    out = stream or sys.stdout
    try:
        out.write("".join(_ENCODER.encode(line) + "\n" for line in lines))
    except Exception:  # metrics must never break the invocation they describe
        return 0
    return len(lines)


# One encoder for every line (json.dumps with options builds a new one per call).
_ENCODER = json.JSONEncoder(separators=(",", ":"))


def documents(platform: str, outcome: str, count: int, latencies: list[float],
              function: str | None = None, reason: str | None = None) -> list[dict[str, Any]]:
    """The EMF documents of one (platform, outcome[, reason]): the count, and the latencies 100 at a time.

    With a reason, the set ``[platform, outcome, reason]`` comes first; the two usual sets stay, so that
    per-outcome graphs and alarms add up every reason's lines."""
    dimensions = [["platform", "outcome"], ["outcome"]]
    if reason:
        dimensions.insert(0, ["platform", "outcome", "reason"])
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
                    "Dimensions": dimensions,
                    "Metrics": metrics,
                }],
            },
            "platform": platform,
            "outcome": outcome,
            **({"reason": reason} if reason else {}),
            **values,
        }
        if function:
            document["function"] = function  # a property, not a dimension: searchable in Logs Insights
        result.append(document)
    return result

