"""Every AWS call a function makes, recorded where it arrives: a WSGI layer in front of moto's server.

Each function runs with credentials of its own role (assumed through moto's STS), so the access key of a
request's signature says which function made it. Recording at the server sees every call, whatever makes it:
boto3, or a request signed by hand (``chalicelib/infra/signed_dynamodb.py``), which a botocore event hook in
the function's process would miss. The rehearsal's own calls use other credentials and are not recorded.
"""

from __future__ import annotations

import io
import json
import re
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

# The request parameters that name the resource a call acts on (what IAM evaluates the call against).
RESOURCE_PARAMETERS = ("QueueUrl", "TableName", "SecretId", "logGroupName", "TopicArn", "FunctionName")
_CREDENTIAL = re.compile(r"Credential=([^/,\s]+)/\d{8}/[^/]+/([^/]+)/aws4_request")


@dataclass(frozen=True)
class Request:
    access_key: str
    service: str  # as signed: sqs, dynamodb, secretsmanager, logs...
    operation: str
    params: dict[str, Any]


def parse(environ: dict[str, Any], body: bytes) -> Request | None:
    """The signed AWS request in ``environ`` and ``body``, or None when it is not SigV4-signed."""
    credential = _CREDENTIAL.search(environ.get("HTTP_AUTHORIZATION", ""))
    if credential is None:
        return None
    access_key, service = credential.groups()
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    params: dict[str, Any] = {}
    if target:  # the JSON protocols: X-Amz-Target "DynamoDB_20120810.PutItem"
        operation = target.rsplit(".", 1)[-1]
        try:
            document = json.loads(body or b"{}")
        except ValueError:
            document = {}
        if isinstance(document, dict):
            params = {key: document[key] for key in RESOURCE_PARAMETERS if isinstance(document.get(key), str)}
            if isinstance(document.get("RequestItems"), dict):  # BatchGetItem, BatchWriteItem
                params["TableNames"] = sorted(document["RequestItems"])
    else:  # the query protocol: Action=...; a REST call is named by its method and path
        fields = {key: values[0] for key, values in parse_qs(environ.get("QUERY_STRING", "")).items()}
        if environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
            fields.update({key: values[0] for key, values in parse_qs(body.decode("utf-8", "replace")).items()})
        operation = fields.get("Action") or f"{environ.get('REQUEST_METHOD')} {environ.get('PATH_INFO')}"
        params = {key: fields[key] for key in RESOURCE_PARAMETERS if key in fields}
    return Request(access_key, service, operation, params)


class Recorder:
    """Wraps moto's WSGI application; ``owners`` maps an access key to the function it was issued to."""

    def __init__(self, application: Any):
        self.application = application
        self.owners: dict[str, str] = {}
        self._requests: dict[str, list[Request]] = {}
        self._lock = threading.Lock()

    @classmethod
    def install(cls, server: Any) -> Recorder:
        """In front of a started ``ThreadedMotoServer`` (werkzeug reads ``server.app`` for every request)."""
        recorder = cls(server._server.app)
        server._server.app = recorder
        return recorder

    def take(self, owner: str) -> list[Request]:
        """The requests made with ``owner``'s credentials since the last take."""
        with self._lock:
            return self._requests.pop(owner, [])

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        body = b""
        if environ.get("CONTENT_LENGTH"):  # read, then handed on as it came (a chunked body is left alone)
            body = environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"]))
            environ["wsgi.input"] = io.BytesIO(body)
        request = parse(environ, body)
        if request is not None and request.access_key in self.owners:
            with self._lock:
                self._requests.setdefault(self.owners[request.access_key], []).append(request)
        return self.application(environ, start_response)
