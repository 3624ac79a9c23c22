"""Meta's Lead Ads Testing Tool: its leads (placeholder answers, Meta's own test email) are ignored as
``test_lead`` unless the tenant opts in, so that every restaurant's setup check does not merge into one
placeholder customer."""

# ruff: noqa: F811 (the fixtures graph and meta come from tests/test_meta.py; tests take them as arguments)
from __future__ import annotations

import json

import pytest

from sandbox.platforms.meta import sample_test_lead_answers

# The Meta Graph emulator and the bridge configured for it, as tests/test_meta.py sets them up.
from tests.test_meta import PAGE_ID, PAGE_TOKEN, add_lead, by_lead, graph, meta, send, webhook  # noqa: F401

REAL = [{"name": "full_name", "values": ["Chloé Martin"]}, {"name": "email", "values": ["chloe.martin@example.fr"]}]


def outcomes(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def ignored_as_test_lead(lines: list[dict], lead_id: str) -> bool:
    return any(line["outcome"] == "ignored" and line.get("reason") == "test_lead" and line.get("event_id") == lead_id
               for line in lines)


def tenants_file(tmp_path, import_test_leads: bool | None):
    tenant = {"id": "bistro", "fullwhere_api_key": "test-key", "fullwhere_api_secret": "test-secret",
              "platforms": {"meta": {"accounts": {PAGE_ID: {"page_access_token": PAGE_TOKEN}}}}}
    if import_test_leads is not None:
        tenant["import_test_leads"] = import_test_leads
    path = tmp_path / "tenants.json"
    path.write_text(json.dumps({"tenants": [tenant]}))
    return path


@pytest.mark.parametrize("field_data", [
    pytest.param(sample_test_lead_answers(), id="placeholders-and-test@fb.com"),
    pytest.param(sample_test_lead_answers("test@meta.com"), id="placeholders-and-test@meta.com"),
    # Either sign alone is enough: a form whose only question is the email, or a custom form's placeholders.
    pytest.param([{"name": "E-mail", "values": ["Test@FB.com"]}], id="test@fb.com-alone"),
    pytest.param([{"name": "Prénom", "values": ["<test lead: dummy data for prénom >"]},
                  {"name": "phone_number", "values": ["+33612345678"]}], id="placeholder-alone"),
])
def test_testing_tool_lead_is_acknowledged_ignored_and_never_reaches_fullwhere(meta, graph, capsys, field_data):
    add_lead(graph, "701", field_data)

    response = send(meta, webhook((PAGE_ID, "701")))

    assert response.status_code == 200 and response.body == b""
    assert graph.lead_reads == 1  # read, then recognised
    assert meta.fullwhere.requests_matching("POST", "/partners/customer") == [] and meta.customers() == []
    assert meta.retry_jobs() == [] and meta.dead_letters() == []
    assert ignored_as_test_lead(outcomes(capsys), "701")


def test_real_lead_beside_a_test_lead_still_imports(meta, graph, capsys):
    add_lead(graph, "701", sample_test_lead_answers())
    add_lead(graph, "702", REAL)

    assert send(meta, webhook((PAGE_ID, "701"), (PAGE_ID, "702"))).status_code == 200

    [chloe] = meta.customers()
    assert (chloe["firstName"], chloe["email"], chloe["metaId"]) == ("Chloé", "chloe.martin@example.fr", "lead:702")
    lines = outcomes(capsys)
    assert ignored_as_test_lead(lines, "701") and not ignored_as_test_lead(lines, "702")


def test_default_tenant_opts_in_with_meta_import_test_leads(meta, graph, capsys):
    meta.configure(meta_import_test_leads="true")
    add_lead(graph, "701", sample_test_lead_answers())

    assert send(meta, webhook((PAGE_ID, "701"))).status_code == 200

    [lead] = by_lead(meta).values()
    assert lead["email"] == "test@fb.com" and lead["metaId"] == "lead:701"
    assert not ignored_as_test_lead(outcomes(capsys), "701")


def test_a_tenant_opts_in_in_the_tenants_document(meta, graph, tmp_path):
    add_lead(graph, "701", sample_test_lead_answers("test@meta.com"))
    # META_IMPORT_TEST_LEADS is the default tenant's: a tenant of the document decides for itself.
    meta.configure(tenants_file=tenants_file(tmp_path, None), meta_page_access_token=None,
                   meta_import_test_leads="true")
    assert send(meta, webhook((PAGE_ID, "701"))).status_code == 200
    assert meta.customers() == []

    meta.configure(tenants_file=tenants_file(tmp_path, True))
    assert send(meta, webhook((PAGE_ID, "701"))).status_code == 200
    [lead] = meta.customers()
    assert lead["email"] == "test@meta.com"


def test_recognising_a_test_lead():
    from chalicelib.connectors.meta import is_test_lead

    def lead(*pairs: tuple[str, str]) -> dict:
        return {"field_data": [{"name": name, "values": [value]} for name, value in pairs]}

    assert is_test_lead(lead(("full_name", "<test lead: dummy data for FULL_NAME>")))
    assert is_test_lead(lead(("company_name", " <Test Lead: dummy data for COMPANY_NAME > ")))
    assert is_test_lead(lead(("email", "TEST@meta.com")))
    # Only Meta's exact placeholder and addresses: a guest who writes "test" somewhere is a guest.
    assert not is_test_lead(lead(("full_name", "Test Lead"), ("email", "test@fbmail.com")))
    assert not is_test_lead(lead(("notes", "test lead: dummy data for FULL_NAME"), ("email", "test@example.com")))
    assert not is_test_lead({}) and not is_test_lead({"field_data": "x"})
