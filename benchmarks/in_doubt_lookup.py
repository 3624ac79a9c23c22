"""The lookup of an import in doubt: how fast the bridge reads Fullwhere's customer list.

    .venv/bin/python -m benchmarks.in_doubt_lookup                          # 10,000 customers; 0 and 50 ms a page
    .venv/bin/python -m benchmarks.in_doubt_lookup --customers 20000 --latency 0.1

A guest without email or phone whose import's answer was lost is looked up in the list before it is
imported again (docs/reliability.md, "Imports in doubt"); proving it absent means reading every page of
100. This measures ``FullwhereClient.find_customer`` reading the whole list of the Fullwhere emulator on
127.0.0.1 (the id is absent), against a bare ``httpx.Client`` posting the same pages and decoding their
JSON, for each ``--latency`` the emulator adds to every page. It prints milliseconds per page and what
that means for the retry worker: pages one invocation reads (120 s timeout, less the 3 s kept in
reserve), and invocations for ``FULLWHERE_LIST_MAX_PAGES`` pages.

Bounded: at most 20,000 customers, loopback only.
"""

from __future__ import annotations

import argparse
import sys
import time

from benchmarks._common import Figure, report, say, summary

WORKER_SECONDS = 120 - 3  # .chalice/config.json's retry_worker timeout, less LAMBDA_SAFETY_SECONDS
MAX_CUSTOMERS = 20_000


def run(customers: int = 10_000, latencies: tuple[float, ...] = (0.0, 0.05), rounds: int = 3) -> list[Figure]:
    import httpx

    from chalicelib.domain.fullwhere.client import LIST_PAGE_SIZE, FullwhereClient
    from chalicelib.infra.http import Deadline
    from chalicelib.infra.settings import Settings
    from sandbox.emulators.fullwhere import FullwhereEmulator

    customers = min(customers, MAX_CUSTOMERS)
    pages = customers // LIST_PAGE_SIZE + 1  # the last page is the short one
    max_pages = Settings.model_fields["fullwhere_list_max_pages"].default
    figures = []
    with FullwhereEmulator() as fullwhere:
        for n in range(customers):
            fullwhere.add_customer("test-key", email=f"guest{n}@example.org", firstName=f"Guest{n}",
                                   deliverooId=f"loyalty:{n}")
        client = FullwhereClient(fullwhere.url, "test-key", "test-secret")
        headers = {"X-API-KEY": "test-key", "X-API-SECRET": "test-secret"}
        with httpx.Client(timeout=30) as bare:
            for latency in latencies:
                fullwhere.latency = latency
                bridge_s, bare_s = [], []
                for _ in range(rounds):
                    start = time.perf_counter()
                    if client.find_customer("deliverooId", "loyalty:absent", Deadline(600, 30), pages) is not None:
                        raise RuntimeError("an absent id was found")
                    bridge_s.append(time.perf_counter() - start)
                    start = time.perf_counter()
                    for page in range(1, pages + 1):
                        bare.post(fullwhere.url + "/partners/customer/list", headers=headers,
                                  json={"limit": LIST_PAGE_SIZE, "page": page}).json()
                    bare_s.append(time.perf_counter() - start)
                per_page, floor = min(bridge_s) / pages * 1000, min(bare_s) / pages * 1000
                per_invocation = int(WORKER_SECONDS / (per_page / 1000))
                figures.append(report(Figure(
                    "list lookup", f"{latency * 1000:g} ms a page", per_page, floor, "ms", None,
                    note=f"{pages} pages of {LIST_PAGE_SIZE}, best of {rounds}; one worker invocation reads "
                         f"~{per_invocation} pages; {max_pages} pages take ~{-(-max_pages // per_invocation)} "
                         f"invocation(s)")))
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--customers", type=int, default=10_000, help=f"customers in the list (at most {MAX_CUSTOMERS})")
    parser.add_argument("--latency", type=float, action="append",
                        help="seconds the emulator adds to each page (repeatable; default 0 and 0.05)")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    run(args.customers, tuple(args.latency or (0.0, 0.05)), args.rounds)
    say("(a page is read at once and holds 100 customers; the figure is the bridge's, the floor a bare httpx "
        "client decoding the same pages)")
    return summary()


if __name__ == "__main__":
    sys.exit(main())
