"""OracleSimphony connector: NOT IMPLEMENTED YET (placeholder registered so the registry is stable while it is built)."""

from __future__ import annotations

from typing import Any

from chalicelib.connectors.base import Connector, Context, Event, ParsedWebhook, WebhookRequest
from chalicelib.errors import unauthorized
from chalicelib.fullwhere.models import CustomerImport
from chalicelib.settings import Settings


class OracleSimphonyConnector(Connector):
    name = "simphony"
    secret_setting = "simphony_hmac_keys"
    id_field = "oracleId"

    def verify(self, request: WebhookRequest, settings: Settings) -> None:
        raise unauthorized("simphony connector not implemented yet")

    def sign(self, body: bytes, settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
        raise NotImplementedError

    def parse(self, request: WebhookRequest) -> ParsedWebhook:
        raise NotImplementedError

    def map(self, guest: dict[str, Any], event: Event, context: Context) -> CustomerImport:
        raise NotImplementedError
