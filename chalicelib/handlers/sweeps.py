"""The ``sweeps`` Lambda, run every minute: sweeps each platform account whose ``SWEEP_MINUTES`` have passed
(:mod:`chalicelib.flow.sweep`; docs/architecture.md, "Sweeps")."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from chalicelib.core.errors import SettingsError
from chalicelib.infra.logs import log

# Time kept back from the Lambda's remaining time, so that every cursor is released before it ends.
LAMBDA_SAFETY_SECONDS = 10.0


def handle(remaining_ms: Callable[[], float] | None = None) -> dict[str, Any]:
    """One scheduled run over the due accounts; returns counts (no personal data)."""
    from chalicelib.connectors import all_connectors
    from chalicelib.domain.tenants import get_directory
    from chalicelib.flow import sweep
    from chalicelib.infra.settings import get_settings

    try:
        settings = get_settings()
        directory = get_directory()
        connectors = all_connectors()
    except SettingsError as exc:
        log("sweep_skipped", reason="misconfigured", detail=str(exc), level=logging.ERROR)
        return {"status": "misconfigured"}
    budget = sweep.DEFAULT_BUDGET_SECONDS
    if remaining_ms is not None:
        budget = min(budget, remaining_ms() / 1000 - LAMBDA_SAFETY_SECONDS)
    return sweep.run(connectors, directory, settings, budget)
