"""Every issue-6 target in one run, each figure beside its floor measured in the same run.

    .venv/bin/python -m benchmarks            # ~3 minutes: builds the package, starts the sandbox
    .venv/bin/python -m benchmarks --quick    # fewer rounds, for a first look

Prints each figure as it is measured, then a summary; the exit status is 1 when a target is missed.
Results and how to read them: docs/performance.md. (``benchmarks/load.py``, throughput and latency
percentiles under load, and ``benchmarks/in_doubt_lookup.py``, the cost of reading Fullwhere's customer
list for an import in doubt, are separate: docs/reliability.md.)
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

from benchmarks import _common, cold_start, end_to_end, per_event, retry_throughput


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds (noisier figures)")
    args = parser.parse_args()
    started = time.monotonic()
    _common.say(f"Python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs; "
                f"load average {os.getloadavg()[0]:.2f} at the start")
    cold_start.run(rounds=7 if args.quick else 31)
    per_event.run(events=100 if args.quick else 500)
    end_to_end.run(iterations=15 if args.quick else 60)
    retry_throughput.run(rounds=2 if args.quick else 5)
    _common.say(f"\n{time.monotonic() - started:.0f} s; load average {os.getloadavg()[0]:.2f} at the end "
                "(other work on the machine stretches every wall-clock figure)")
    return _common.summary()


if __name__ == "__main__":
    sys.exit(main())
