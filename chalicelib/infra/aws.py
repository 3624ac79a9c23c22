"""Lazily created boto3 clients, kept for the life of the container.

boto3 is slow to import and its clients slow to create (docs/performance.md), and a webhook for a guest
with an email never needs AWS: boto3 is imported here only, on the first call that needs it. Endpoints and
region come from boto3's standard configuration (``AWS_REGION``, ``AWS_ENDPOINT_URL_SQS``, ...), which is
how tests reach moto's server.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_clients: dict[str, Any] = {}


def client(service: str) -> Any:
    """A shared boto3 client with short timeouts: a webhook must not hang on an unreachable AWS endpoint."""
    existing = _clients.get(service)
    if existing is not None:
        return existing
    with _lock:
        if service not in _clients:
            import boto3
            from botocore.config import Config

            config = Config(
                connect_timeout=2,
                read_timeout=5,
                retries={"mode": "standard", "total_max_attempts": 2},
            )
            _clients[service] = boto3.session.Session().client(service, config=config)
        return _clients[service]


def reset_clients() -> None:
    """Drop cached clients (tests point boto3 at a new endpoint between scenarios)."""
    with _lock:
        _clients.clear()


def aws_error_types() -> tuple[type[BaseException], ...]:
    """The exceptions a boto3 call raises when AWS is unreachable or refuses: callers classify them."""
    from botocore.exceptions import BotoCoreError, ClientError

    return (BotoCoreError, ClientError)


def read_secret(secret_id: str) -> str:
    """The text of a Secrets Manager secret; :class:`SettingsError` (never the value) when it can't be read."""
    from chalicelib.core.errors import SettingsError

    try:
        return client("secretsmanager").get_secret_value(SecretId=secret_id)["SecretString"]
    except aws_error_types() as exc:
        raise SettingsError(f"cannot read secret {secret_id!r} ({type(exc).__name__})") from None
    except KeyError:
        raise SettingsError(f"secret {secret_id!r} holds no SecretString") from None
