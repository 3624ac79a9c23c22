"""Signing for the declarative sources: any source of the sources document named by ``SOURCES_FILE``,
signed the way its entry's ``auth`` declares (the sandbox's own sources use it through their modules)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from pathlib import Path

from chalicelib.core.errors import SettingsError
from chalicelib.core.signatures import hmac_digest, standard_webhooks_signature
from chalicelib.domain.sources import NoAuth, Source, StandardWebhooksAuth, TokenAuth, parse_document
from sandbox.platforms import MissingSecret, UnknownPlatform


def entry(name: str, environ: Mapping[str, str]) -> Source:
    """The source ``name`` of the sources document of ``environ["SOURCES_FILE"]``, presets applied."""
    path = environ.get("SOURCES_FILE")
    if not path:
        raise UnknownPlatform(f"no source {name!r}: SOURCES_FILE names no sources document")
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read SOURCES_FILE {path}: {exc.strerror}") from None
    found = next((source for source in parse_document(text, f"SOURCES_FILE {Path(path).name}").sources
                  if source.name == name), None)
    if found is None:
        raise UnknownPlatform(f"no source {name!r} in SOURCES_FILE {path}")
    return found


def sign(name: str, body: bytes, environ: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The headers and query of a genuine request of source ``name`` carrying ``body``."""
    auth = entry(name, environ).auth
    if isinstance(auth, NoAuth):
        return {}, {}
    secret = auth.secret if auth.secret is not None else environ.get(auth.secret_env or "")
    if not secret:
        raise MissingSecret(f"{auth.secret_env} is not configured" if auth.secret_env
                            else f"the secret of source {name!r} is not configured")
    if isinstance(auth, TokenAuth):
        return ({}, {auth.query: secret}) if auth.query else ({auth.header: secret}, {})
    if isinstance(auth, StandardWebhooksAuth):
        message_id, timestamp = f"msg_{uuid.uuid4().hex}", str(int(time.time()))
        return {"webhook-id": message_id, "webhook-timestamp": timestamp,
                "webhook-signature": standard_webhooks_signature(secret, message_id, timestamp, body)}, {}
    if "{header:" in auth.signed or "{query:" in auth.signed:
        raise NotImplementedError(f"source {name!r} signs headers or query values: sign it with its sender")
    return {auth.header: auth.prefix + hmac_digest(secret.encode(), body, auth.algorithm, auth.encoding)}, {}
