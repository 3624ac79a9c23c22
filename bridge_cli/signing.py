"""``sign`` and ``replay``: make a payload a valid webhook of a platform, and send one to a bridge."""

from __future__ import annotations

import base64
import os
import shlex
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx

from bridge_cli.common import (
    CliError,
    UsageError,
    bridge_url,
    console,
    control,
    local_stack,
    platform_names,
    read_input,
)


def signature(platform: str, body: bytes, sandbox: bool) -> tuple[dict[str, str], dict[str, str]]:
    """The headers and query parameters a genuine request of ``platform`` carrying ``body`` would have.

    Signed with the settings in the environment (a declarative source: from the sources document named by
    ``SOURCES_FILE``), or, with ``sandbox``, by the running local stack with its sandbox's settings.
    """
    if sandbox:
        state = local_stack()
        answer = control(state, "/sign", {"platform": platform, "body_base64": base64.b64encode(body).decode()})
        return answer["headers"], answer["query"]

    from chalicelib.core.errors import SettingsError
    from sandbox import platforms

    try:
        headers, query = platforms.sign_for(platform, body, os.environ)
    except platforms.UnknownPlatform:
        raise UsageError(f"unknown platform {platform!r}; known: {', '.join(platform_names())}") from None
    except platforms.MissingSecret as exc:
        raise CliError(f"cannot sign for {platform}: {exc}. Set it in the environment, or add --sandbox to "
                       "sign with the running local stack's sandbox settings") from None
    except (NotImplementedError, SettingsError) as exc:
        raise CliError(str(exc)) from None
    return {"Content-Type": "application/json", **headers}, query


def webhook_url(base: str, platform: str, query: dict[str, str]) -> str:
    """``base`` + ``/webhooks/<platform>`` (unless ``base`` already is that URL), with ``query`` added."""
    parts = urlsplit(base)
    path = parts.path.rstrip("/")
    if not path.endswith(f"/webhooks/{platform}"):
        path += f"/webhooks/{platform}"
    merged = parse_qsl(parts.query, keep_blank_values=True) + list(query.items())
    return urlunsplit(parts._replace(path=path, query=urlencode(merged)))


def sign(args) -> int:
    body = read_input(args.file)
    headers, query = signature(args.platform, body, args.sandbox)
    url = webhook_url(bridge_url(args.url), args.platform, query)
    if args.curl:
        command = ["curl", "-sS", "-X", "POST", url]
        for name, value in headers.items():
            command += ["-H", f"{name}: {value}"]
        command += ["--data-binary", f"@{args.file}"]
        console.print(" ".join(shlex.quote(part) for part in command), soft_wrap=True)
        return 0
    console.print(f"POST {url}", soft_wrap=True)
    for name, value in headers.items():
        console.print(f"{name}: {value}", soft_wrap=True)
    return 0


def replay(args) -> int:
    body = read_input(args.file)
    headers: dict[str, str] = {}
    for header in args.header or []:
        name, sep, value = header.partition(":")
        if not sep or not name.strip():
            raise UsageError(f"--header {header!r} is not 'Name: value'")
        headers[name.strip()] = value.strip()
    query: dict[str, str] = {}
    if not args.as_is:
        signed_headers, query = signature(args.platform, body, args.sandbox)
        headers = {**signed_headers, **headers}
    headers.setdefault("Content-Type", "application/json")
    url = webhook_url(bridge_url(args.url), args.platform, query)
    shown = urlunsplit(urlsplit(url)._replace(query=""))  # query values can be tokens
    try:
        response = httpx.post(url, content=body, headers=headers, timeout=args.timeout)
    except httpx.HTTPError as exc:
        raise CliError(f"cannot reach {shown} ({type(exc).__name__}): is the bridge running? (`make run`)") from None
    style = "green" if response.is_success else "red"
    console.print(f"POST {shown} -> [{style}]{response.status_code} {response.reason_phrase}[/{style}]")
    if response.text:
        console.print(response.text[:2000], markup=False, soft_wrap=True)
    return 0 if response.is_success else 1
