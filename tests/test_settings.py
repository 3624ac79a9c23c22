"""Settings come from the environment, lazily; Secrets Manager may hold the secret values."""

from __future__ import annotations

import json

import pytest

from chalicelib.connectors import settings_models
from chalicelib.connectors.deliveroo import DeliverooSettings
from chalicelib.connectors.mews import MewsSettings
from chalicelib.connectors.ubereats import UberEatsSettings
from chalicelib.core.errors import SettingsError
from chalicelib.infra.settings import load_settings, settings_of


def test_defaults_are_the_documented_ones():
    settings = load_settings({})
    assert settings.fullwhere_api_url == "https://api.fullwhere.com"
    assert settings.inline_budget_seconds == 3
    assert settings.retry_queue_url is None and settings.identity_table is None
    uber = load_settings({}, UberEatsSettings)
    assert (uber.api_url, uber.auth_url) == ("https://api.uber.com", "https://auth.uber.com")
    assert load_settings({}, MewsSettings).api_url == "https://api.mews.com"


def test_every_setting_is_read_from_its_upper_case_variable():
    values = {"FULLWHERE_API_KEY": "key", "RETRY_QUEUE_URL": "http://q", "INLINE_BUDGET_SECONDS": "1.5",
              "RETRY_HORIZON_HOURS": "3", "MEWS_API_URL": "https://api.mews-demo.com/", "LOG_LEVEL": "debug",
              "DEFAULT_PHONE_REGION": "gb", "IDENTITY_TABLE": "ledger"}
    settings = load_settings(values)
    assert (settings.fullwhere_api_key, settings.retry_queue_url, settings.inline_budget_seconds) == ("key", "http://q", 1.5)
    assert (settings.retry_horizon_hours, settings.log_level) == (3.0, "debug")
    assert (settings.default_phone_region, settings.identity_table) == ("GB", "ledger")
    assert load_settings(values, MewsSettings).api_url == "https://api.mews-demo.com"
    documented = {"FULLWHERE_API_URL", "FULLWHERE_API_KEY", "FULLWHERE_API_SECRET", "RETRY_QUEUE_URL",
                  "DEAD_LETTER_QUEUE_URL", "INLINE_BUDGET_SECONDS", "DELIVEROO_WEBHOOK_SECRET", "UBEREATS_CLIENT_ID",
                  "UBEREATS_CLIENT_SECRET", "UBEREATS_API_URL", "UBEREATS_AUTH_URL", "MEWS_WEBHOOK_TOKEN",
                  "MEWS_CLIENT_TOKEN", "MEWS_ACCESS_TOKEN", "MEWS_API_URL", "IDENTITY_TABLE", "TENANTS_FILE",
                  "TENANTS_SECRET_ID", "SECRETS_ID"}
    assert documented <= {model.variable(name) for model in settings_models() for name in model.model_fields}


def test_no_two_settings_models_read_the_same_variable():
    variables = [model.variable(name) for model in settings_models() for name in model.model_fields]
    assert len(variables) == len(set(variables))


def test_settings_document_is_generated_from_the_models():
    from bridge_cli import settings_doc

    assert settings_doc.DOCUMENT.read_text() == settings_doc.render(), (
        "docs/settings.md differs from the settings models: run `.venv/bin/python -m bridge_cli settings-doc`")


def test_every_documented_setting_has_a_description():
    from bridge_cli import settings_doc

    sections = settings_doc.sections()
    assert {section.title for section in sections} >= {"Bridge-wide settings", "Uber Eats"}
    undescribed = [section.model.variable(name) for section in sections for name in section.fields
                   if not (section.model.model_fields[name].description or "").strip()]
    assert undescribed == []


def test_empty_variables_count_as_unset():
    assert load_settings({"FULLWHERE_API_URL": ""}).fullwhere_api_url == "https://api.fullwhere.com"


def test_invalid_value_names_the_setting_not_the_value():
    with pytest.raises(SettingsError) as error:
        load_settings({"INLINE_BUDGET_SECONDS": "-4"})
    assert "INLINE_BUDGET_SECONDS" in str(error.value)


def test_secrets_repr_hides_values():
    environ = {"FULLWHERE_API_SECRET": "very-secret", "MEWS_WEBHOOK_TOKEN": "tok-123"}
    assert "very-secret" not in repr(load_settings(environ))
    assert "tok-123" not in repr(load_settings(environ, MewsSettings))


def test_secret_document_fills_settings_and_the_environment_wins(bridge):
    from sandbox.aws import client

    client("secretsmanager", bridge.endpoint).create_secret(
        Name="bridge/settings",
        SecretString=json.dumps({"FULLWHERE_API_SECRET": "from-secret", "DELIVEROO_WEBHOOK_SECRET": "d-secret",
                                 "MEWS_CLIENT_TOKEN": "from-secret-too"}),
    )
    bridge.configure(secrets_id="bridge/settings", fullwhere_api_secret=None)
    from chalicelib.infra.settings import get_settings

    assert get_settings().fullwhere_api_secret == "from-secret"
    # One secret document serves every group of settings, and the environment wins over it.
    assert settings_of(DeliverooSettings).webhook_secret == "deliveroo-webhook-secret"
    assert settings_of(MewsSettings).client_token == "mews-client"


def test_settings_are_kept_until_the_refresh_interval(bridge, monkeypatch):  # CONFIG_REFRESH_SECONDS, 300 s
    from chalicelib.infra.settings import get_settings

    first = get_settings()
    monkeypatch.setenv("INLINE_BUDGET_SECONDS", "7")
    assert get_settings() is first
