"""MetaLeadAds connector: NOT IMPLEMENTED YET (placeholder registered so the registry is stable while it is built)."""

from __future__ import annotations

from typing import Any

from chalicelib.connectors.base import Connector, Context, Event, ParsedWebhook, WebhookRequest
from chalicelib.errors import unauthorized
from chalicelib.fullwhere.models import CustomerImport
from chalicelib.settings import Settings


class MetaLeadAdsConnector(Connector):
    name = "meta"
    secret_setting = "meta_app_secret"
    id_field = "metaId"

    def verify(self, request: WebhookRequest, settings: Settings) -> None:
        raise unauthorized("meta connector not implemented yet")

    def sign(self, body: bytes, settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
        raise NotImplementedError

    def parse(self, request: WebhookRequest) -> ParsedWebhook:
        raise NotImplementedError

    def map(self, guest: dict[str, Any], event: Event, context: Context) -> CustomerImport:
        raise NotImplementedError
