"""The Fullwhere partner API: the customer models and the HTTP client."""

from chalicelib.fullwhere.client import FullwhereClient, ImportResult
from chalicelib.fullwhere.models import PLATFORM_ID_FIELDS, CustomerImport, PartnerCustomer

__all__ = ["FullwhereClient", "ImportResult", "CustomerImport", "PartnerCustomer", "PLATFORM_ID_FIELDS"]
