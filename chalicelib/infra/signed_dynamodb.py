"""One DynamoDB call signed by hand (AWS Signature Version 4) and sent with the container's httpx client.

The webhook path records what it sent to Fullwhere (docs/architecture.md, "Sweeps") but must not import boto3
(~170 ms on a cold start: docs/performance.md). DynamoDB's API is one JSON POST, and Lambda puts the function's
credentials in the environment, so the write needs only ``hashlib`` and ``hmac``. Used for that one write;
everything else goes through :mod:`chalicelib.infra.aws`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

SERVICE = "dynamodb"
CONTENT_TYPE = "application/x-amz-json-1.0"


class Unavailable(Exception):
    """The call could not be made or was refused (the reason names no credential)."""


def credentials(environ: Mapping[str, str] = os.environ) -> tuple[str, str, str | None] | None:
    """(access key, secret key, session token) from the environment (Lambda's), or ``None``."""
    key, secret = environ.get("AWS_ACCESS_KEY_ID"), environ.get("AWS_SECRET_ACCESS_KEY")
    if not key or not secret:
        return None
    return key, secret, environ.get("AWS_SESSION_TOKEN") or None


def region(environ: Mapping[str, str] = os.environ) -> str | None:
    return environ.get("AWS_REGION") or environ.get("AWS_DEFAULT_REGION") or None


def endpoint(environ: Mapping[str, str] = os.environ) -> str | None:
    """DynamoDB's URL as boto3 would choose it: ``AWS_ENDPOINT_URL_DYNAMODB``, ``AWS_ENDPOINT_URL``, else the
    region's public endpoint."""
    configured = environ.get("AWS_ENDPOINT_URL_DYNAMODB") or environ.get("AWS_ENDPOINT_URL")
    if configured:
        return configured.rstrip("/")
    name = region(environ)
    if not name:
        return None
    suffix = "amazonaws.com.cn" if name.startswith("cn-") else "amazonaws.com"
    return f"https://dynamodb.{name}.{suffix}"


def available(environ: Mapping[str, str] = os.environ) -> bool:
    return credentials(environ) is not None and endpoint(environ) is not None and region(environ) is not None


def signed_headers(url: str, target: str, body: bytes, environ: Mapping[str, str] = os.environ,
                   now: float | None = None) -> dict[str, str]:
    """The headers of a SigV4-signed DynamoDB ``target`` call (e.g. ``DynamoDB_20120810.PutItem``)."""
    found = credentials(environ)
    name = region(environ)
    if found is None or name is None:
        raise Unavailable("no AWS credentials or region in the environment")
    access_key, secret_key, token = found
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    day = stamp[:8]
    parts = urlsplit(url)
    headers = {"content-type": CONTENT_TYPE, "host": parts.netloc, "x-amz-date": stamp, "x-amz-target": target}
    if token:
        headers["x-amz-security-token"] = token
    names = ";".join(sorted(headers))
    canonical = "\n".join([
        "POST", parts.path or "/", "", "".join(f"{name}:{headers[name]}\n" for name in sorted(headers)), names,
        hashlib.sha256(body).hexdigest(),
    ])
    scope = f"{day}/{name}/{SERVICE}/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret_key}".encode()
    for part in (day, name, SERVICE, "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    signature = hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={access_key}/{scope}, SignedHeaders={names}, "
                                f"Signature={signature}")
    del headers["host"]  # httpx sends it, from the URL
    return headers


def call(operation: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Call DynamoDB's ``operation`` (``PutItem``...) within ``timeout`` seconds; :class:`Unavailable` on any
    failure (no retry: the callers are best-effort writes)."""
    import httpx

    from chalicelib.infra.http import http_client

    url = endpoint()
    if url is None:
        raise Unavailable("no DynamoDB endpoint or region in the environment")
    body = json.dumps(request, separators=(",", ":")).encode()
    headers = signed_headers(url + "/", f"DynamoDB_20120810.{operation}", body)
    try:
        response = http_client().post(url + "/", content=body, headers=headers,
                                      timeout=httpx.Timeout(timeout, connect=min(timeout, 1.0)))
    except httpx.HTTPError as exc:
        raise Unavailable(f"DynamoDB unreachable ({type(exc).__name__})") from None
    if response.status_code != 200:
        code = ""
        try:
            code = str(response.json().get("__type", "")).rsplit("#", 1)[-1][:80]
        except ValueError:
            pass
        raise Unavailable(f"DynamoDB answered {response.status_code} {code}".strip())
    try:
        answer = response.json()
    except ValueError:
        raise Unavailable("DynamoDB answered 200 without JSON") from None
    return answer if isinstance(answer, dict) else {}
