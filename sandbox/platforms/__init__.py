"""Everything the sandbox knows of each platform, one module per platform (``sandbox/platforms/<name>.py``).

A platform's module holds its API emulator and helpers, the sandbox's fixed credentials for it
(``SECRETS``), and:

- ``emulator() -> EmulatorServer``: its API emulator (left out when the bridge calls no API of it);
- ``environment(emulator) -> dict[str, str]``: the bridge's variables pointing at that emulator, with the
  sandbox's credentials (left out when it needs none);
- ``sign(body, environ) -> (headers, query)``: what a genuine request carrying ``body`` would have, signed
  with the secrets in ``environ`` (:class:`MissingSecret` when the one it needs is not set); a declarative
  source has none: it is signed as its entry of the sources document declares;
- ``SAMPLE``: its sample guest (:class:`Sample`);
- a declarative source also has ``source(emulator) -> dict``, its entry of the sandbox's sources document.

Used by the sandbox (:mod:`sandbox.stack`, :mod:`sandbox.samples`), the local stack and ``bridge_cli``; none
of it is deployed. The tests sign with their own independent code (``tests/support/signing.py``).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import json
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

if TYPE_CHECKING:
    from sandbox.stack import Sandbox

FIXTURES = Path(__file__).resolve().parent.parent.parent / "tests" / "fixtures"


class MissingSecret(Exception):
    """The setting a platform's requests are signed with is not set (the message names it, never a value)."""


class UnknownPlatform(LookupError):
    """No sandbox module of that name, and no source of that name in the sources document."""


def names() -> list[str]:
    """The platforms the sandbox serves: every built-in one, then each shipped preset that has a module."""
    return list(_names())


@functools.lru_cache(maxsize=1)
def _names() -> tuple[str, ...]:
    from chalicelib.core.registry import builtin_names
    from chalicelib.domain.sources import PRESETS_DIR

    presets = sorted(path.stem for path in PRESETS_DIR.glob("*.json"))
    return (*builtin_names(), *(name for name in presets if importlib.util.find_spec(f"{__name__}.{name}")))


def module(name: str) -> ModuleType:
    """The sandbox module of ``name`` (one of :func:`names`)."""
    if name not in _names():
        raise UnknownPlatform(name)
    return importlib.import_module(f"{__name__}.{name}")


def emulator(name: str) -> Any:
    """A new API emulator of platform ``name``, or None when the bridge calls no API of it."""
    make = getattr(module(name), "emulator", None)
    return make() if make else None


def environment(name: str, server: Any) -> dict[str, str]:
    """The bridge's variables for platform ``name`` in the sandbox (``server``: its emulator, if any)."""
    variables = getattr(module(name), "environment", None)
    return variables(server) if variables else {}


def sign_for(platform: str, body: bytes, environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """``sign`` of ``platform``'s module; a declarative source (a module without ``sign``, or any source of the
    sources document named by ``SOURCES_FILE``) is signed as the document declares."""
    sign = getattr(module(platform), "sign", None) if platform in _names() else None
    if sign is not None:
        return sign(body, environ)
    from sandbox.platforms import declarative

    return declarative.sign(platform, body, environ)


def required(environ: Mapping[str, str], variable: str) -> str:
    """``environ[variable]``, or :class:`MissingSecret` when it is unset or empty."""
    value = environ.get(variable)
    if not value:
        raise MissingSecret(f"{variable} is not configured")
    return value


# -- samples --------------------------------------------------------------------------------------

def fixture(name: str) -> Any:
    """A documented payload of ``tests/fixtures/``."""
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))


def guest_uuid(platform: str, n: int) -> str:
    """A uuid that is the same for the same (``platform``, ``n``) in every run."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"fullwhere-sandbox/{platform}/{n}"))


@dataclass(frozen=True)
class Delivery:
    """A webhook request as the platform would send it."""

    platform: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"/webhooks/{self.platform}" + (f"?{urlencode(self.query)}" if self.query else "")


def delivery(sandbox: Sandbox, platform: str, body: bytes) -> Delivery:
    """``body`` as ``platform`` sends it, signed with the sandbox's credentials."""
    headers, query = sign_for(platform, body, sandbox.environment())
    return Delivery(platform, body, {"Content-Type": "application/json", **headers}, query)


@dataclass(frozen=True)
class Sample:
    """One sample guest of a platform, as many distinct ones as wanted (see :mod:`sandbox.samples`)."""

    platform: str
    id_field: str
    build: Callable[[Sandbox, int], dict[str, Any] | None]  # seeds the emulator, returns the webhook payload
    guest_id: Callable[[int], str]
    pulled: bool = False  # OPERA Cloud: no webhook, the scheduled pull reads the event
    imports: bool = True  # Simphony: verified and acknowledged, nothing to import

    def prepare(self, sandbox: Sandbox, n: int) -> Delivery | None:
        payload = self.build(sandbox, n)
        if payload is None:
            return None
        return delivery(sandbox, self.platform, json.dumps(payload).encode())
