"""The Fullwhere partner API: the customer models and the HTTP client."""

from chalicelib.domain.fullwhere.client import FullwhereClient, ImportResult
from chalicelib.domain.fullwhere.models import PLATFORM_ID_FIELDS, CustomerImport, PartnerCustomer

__all__ = ["FullwhereClient", "ImportResult", "CustomerImport", "PartnerCustomer", "PLATFORM_ID_FIELDS"]
