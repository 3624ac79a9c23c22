"""HTTP client of the Fullwhere partner API (``X-API-KEY`` / ``X-API-SECRET``).

Outcomes are classified once for the whole bridge, by :mod:`chalicelib.infra.http`: 2xx is success;
408, 425, 429 (with its ``Retry-After``), 5xx, timeouts and connection errors raise
:class:`~chalicelib.core.errors.RetryableError`; any other 4xx raises
:class:`~chalicelib.core.errors.PermanentError` carrying Fullwhere's answer, truncated, as the reason.

The import's response body is not documented. A 2xx counts as imported whatever the body says; the
customer id is taken from it when it is a JSON object with an ``id``, which the identity ledger keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from chalicelib.core.errors import Held, PermanentError, RetryableError
from chalicelib.domain.fullwhere.models import CustomerImport, PartnerCustomer
from chalicelib.infra.http import Deadline, raise_for_status, send

WHAT = "Fullwhere"


@dataclass(frozen=True)
class ImportResult:
    status: int
    customer_id: str | None

    @property
    def created(self) -> bool | None:
        """201 means created and 200 merged on the emulator; the real API's codes are undocumented."""
        return {201: True, 200: False}.get(self.status)


class FullwhereClient:
    def __init__(self, base_url: str, api_key: str | None, api_secret: str | None):
        if not api_key or not api_secret:
            raise Held("Fullwhere API key or secret not configured for this tenant", "not_configured")
        self._base_url = base_url.rstrip("/")
        self._headers = {"X-API-KEY": api_key, "X-API-SECRET": api_secret}

    def _call(self, method: str, path: str, deadline: Deadline, **kwargs: Any):
        response = send(method, self._base_url + path, deadline, what=WHAT, headers=self._headers, **kwargs)
        raise_for_status(response, WHAT)
        return response

    def import_customer(self, customer: CustomerImport, deadline: Deadline) -> ImportResult:
        """``POST /partners/customer``: create, or fill the nulls of the customer with the same email/phone."""
        response = self._call("POST", "/partners/customer", deadline, json=customer.payload())
        return ImportResult(response.status_code, _customer_id(response))

    def import_batch(self, customers: list[CustomerImport], deadline: Deadline) -> Any:
        """``POST /partners/customer/batch``.

        ASSUMPTION: the body of this endpoint is not documented. We send ``{"customers": [<the single
        import body>, ...]}`` (the same items as the single import, wrapped in an object as NestJS DTOs
        usually are) and return the parsed response as is. Confirm with Fullwhere before relying on it;
        callers fall back to single imports when it is refused with a 4xx.
        """
        body = {"customers": [customer.payload() for customer in customers]}
        return _json(self._call("POST", "/partners/customer/batch", deadline, json=body))

    def list_customers(self, deadline: Deadline, page: int = 1, limit: int = 10) -> Any:
        """``POST /partners/customer/list`` with ``{"limit": 1–100, "page": ≥1}``; the response shape is undocumented."""
        if not 1 <= limit <= 100 or page < 1:
            raise ValueError("limit must be 1-100 and page >= 1")
        return _json(self._call("POST", "/partners/customer/list", deadline, json={"limit": limit, "page": page}))

    def find_customer(self, id_field: str, value: str, deadline: Deadline, max_pages: int, start_page: int = 1,
                      on_page: Callable[[int], None] | None = None) -> dict[str, Any] | None:
        """The customer whose ``id_field`` (``deliverooId``, ...) is ``value``, by reading the whole list.

        The partner API has no lookup by platform id and its list has no filter and no documented order,
        so only a full read proves a customer absent: pages of 100 until one is short. A long list may
        take more than one invocation: ``on_page`` hears each page before it is read, and ``start_page``
        resumes there. Raises :class:`PermanentError` when the list cannot answer the question: its JSON
        is not one of the shapes :func:`list_items` reads, it ignores ``page``, or it is longer than
        ``max_pages``.
        """
        previous = None
        for page in range(start_page, max_pages + 1):
            if on_page:
                on_page(page)
            body = self.list_customers(deadline, page=page, limit=LIST_PAGE_SIZE)
            if body is None:  # not JSON at all: a garbled answer, worth another try
                raise RetryableError("Fullwhere's customer list answered something that is not JSON")
            items = list_items(body)
            if items is None:  # JSON, but not a list of customers where the bridge looks: a wrong assumption
                raise PermanentError("Fullwhere's customer list answered in a shape the bridge cannot read")
            for item in items:
                if item.get(id_field) == value:
                    return item
            if len(items) < LIST_PAGE_SIZE:
                return None
            if items == previous:
                raise PermanentError("Fullwhere's customer list answered the same page twice (paging ignored)")
            previous = items
        raise PermanentError(f"Fullwhere's customer list is longer than {max_pages} pages (FULLWHERE_LIST_MAX_PAGES)")

    def get_customer(self, customer_id: str, deadline: Deadline) -> PartnerCustomer | None:
        """``GET /partners/customer?id=``; ``None`` when Fullwhere answers 404."""
        response = send("GET", self._base_url + "/partners/customer", deadline, what=WHAT,
                        headers=self._headers, params={"id": customer_id})
        if response.status_code == 404:
            return None
        raise_for_status(response, WHAT)
        return PartnerCustomer.model_validate(response.json())


LIST_PAGE_SIZE = 100  # the most the list endpoint allows
LIST_ENVELOPE_KEYS = ("data", "items", "customers", "results")


def list_items(body: Any) -> list[dict[str, Any]] | None:
    """The customers of one list page, or ``None`` for an answer that is not a list of customers.

    ASSUMPTION: the list's response is undocumented. Accepted: a bare JSON array, or an object holding
    the array under one of :data:`LIST_ENVELOPE_KEYS` (``{"data": [...], "total": ...}`` is NestJS's
    usual pagination envelope).
    """
    if isinstance(body, dict):
        body = next((body[key] for key in LIST_ENVELOPE_KEYS if isinstance(body.get(key), list)), None)
    if not isinstance(body, list) or not all(isinstance(item, dict) for item in body):
        return None
    return body


def _json(response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _customer_id(response) -> str | None:
    body = _json(response)
    if isinstance(body, dict) and isinstance(body.get("id"), str):
        return body["id"]
    return None
