"""What every command shares: errors for the user, the console, the local stack's state, the settings."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console

from sandbox.local_stack import process_alive

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BRIDGE_URL = "http://127.0.0.1:8000"

console = Console(highlight=False)
errors = Console(stderr=True, highlight=False)


class CliError(Exception):
    """A problem the user can fix: printed as one clear message, without a traceback."""

    exit_code = 1


class UsageError(CliError):
    exit_code = 2


def stack_state_path() -> Path:
    """Where ``make run`` writes its state (``$LOCAL_STACK_DIR/stack.json``, by default ``.sandbox/stack.json``)."""
    return Path(os.environ.get("LOCAL_STACK_DIR") or ROOT / ".sandbox") / "stack.json"


def local_stack(required: bool = True) -> dict[str, Any] | None:
    """The running local stack's addresses (never a secret); ``None`` (or an error) when none runs."""
    path = stack_state_path()
    try:
        state = json.loads(path.read_text())
        running = process_alive(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        running = False
    if running:
        return state
    if required:
        raise CliError(f"no local stack is running (looked for {path}): start it with `make run` in another terminal")
    return None


def bridge_url(given: str | None) -> str:
    """The bridge to talk to: ``--url``, else the running local stack's, else http://127.0.0.1:8000."""
    if given:
        return given.rstrip("/")
    state = local_stack(required=False)
    return state["bridge_url"] if state else DEFAULT_BRIDGE_URL


def bridge_settings():
    """The bridge's settings from this process's environment (errors name the setting, never its value)."""
    from chalicelib.core.errors import SettingsError
    from chalicelib.infra.settings import load_settings

    try:
        return load_settings(os.environ)
    except SettingsError as exc:
        raise CliError(str(exc)) from None


def fullwhere_target() -> tuple[Any, str]:
    """The Fullwhere client to use and a sentence saying which Fullwhere it is.

    ``FULLWHERE_API_KEY``/``FULLWHERE_API_SECRET`` in the environment: that account (``FULLWHERE_API_URL``).
    Otherwise the running local stack's Fullwhere sandbox.
    """
    from chalicelib.core.errors import PermanentError
    from chalicelib.domain.fullwhere import FullwhereClient

    if os.environ.get("FULLWHERE_API_KEY") or os.environ.get("FULLWHERE_API_SECRET"):
        settings = bridge_settings()
        try:
            client = FullwhereClient(settings.fullwhere_api_url, settings.fullwhere_api_key, settings.fullwhere_api_secret)
        except PermanentError as exc:
            raise CliError(f"{exc.reason}: set both FULLWHERE_API_KEY and FULLWHERE_API_SECRET") from None
        return client, f"Fullwhere at {settings.fullwhere_api_url} (FULLWHERE_API_KEY from the environment)"
    state = local_stack(required=False)
    if state is None:
        raise CliError("no Fullwhere to talk to: set FULLWHERE_API_KEY and FULLWHERE_API_SECRET (and FULLWHERE_API_URL "
                       "if not the production API), or start the local stack with `make run` to use its sandbox")
    return stack_fullwhere(state)


def stack_fullwhere(state: dict[str, Any]) -> tuple[Any, str]:
    """The Fullwhere the running local stack imports into: its sandbox, or the API whose key is in the environment."""
    from chalicelib.domain.fullwhere import FullwhereClient

    fullwhere = state["fullwhere"]
    if fullwhere["source"] == "sandbox":
        from sandbox.stack import FULLWHERE_KEY, FULLWHERE_SECRET  # the sandbox's fixed, public credentials

        return FullwhereClient(fullwhere["url"], FULLWHERE_KEY, FULLWHERE_SECRET), \
            f"the local stack's Fullwhere sandbox at {fullwhere['url']}"
    key, secret = os.environ.get("FULLWHERE_API_KEY"), os.environ.get("FULLWHERE_API_SECRET")
    if not key or not secret:
        raise CliError(f"the local stack imports into {fullwhere['url']}: set FULLWHERE_API_KEY and FULLWHERE_API_SECRET "
                       "here too, to read its customers")
    return FullwhereClient(fullwhere["url"], key, secret), f"Fullwhere at {fullwhere['url']}"


def read_input(file: str) -> bytes:
    """The bytes of FILE, or of standard input for ``-``."""
    import sys

    if file == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(file).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror}") from None


def control(state: dict[str, Any], path: str, body: dict[str, Any], timeout: float = 120) -> Any:
    """Call the local stack's control endpoint (seeding and signing for its sandboxes)."""
    try:
        response = httpx.post(state["control_url"] + path, json=body, timeout=timeout)
    except httpx.HTTPError as exc:
        raise CliError(f"the local stack does not answer ({type(exc).__name__}): is `make run` still running?") from None
    if response.status_code != 200:
        try:
            reason = response.json().get("error")
        except ValueError:
            reason = None
        raise CliError(reason or f"the local stack answered {response.status_code}")
    return response.json()


def platform_names() -> list[str]:
    from chalicelib.connectors import platform_names as names
    from chalicelib.core.errors import SettingsError

    try:
        return names()
    except SettingsError as exc:
        raise CliError(str(exc)) from None
