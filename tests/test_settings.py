"""Settings come from the environment, lazily; Secrets Manager may hold the secret values."""

from __future__ import annotations

import json

import pytest

from chalicelib.settings import Settings, SettingsError, load_settings


def test_defaults_are_the_documented_ones():
    settings = load_settings({})
    assert settings.fullwhere_api_url == "https://api.fullwhere.com"
    assert settings.inline_budget_seconds == 3
    assert settings.ubereats_api_url == "https://api.uber.com"
    assert settings.ubereats_auth_url == "https://auth.uber.com"
    assert settings.mews_api_url == "https://api.mews.com"
    assert settings.retry_queue_url is None and settings.identity_table is None


def test_every_setting_is_read_from_its_upper_case_variable():
    environ = {name.upper(): "1" if field.annotation in (int, float) else "x"
               for name, field in Settings.model_fields.items() if field.annotation in (str, "str | None", int, float)}
    environ.update({"FULLWHERE_API_KEY": "key", "INLINE_BUDGET_SECONDS": "1.5", "MAX_ATTEMPTS": "3"})
    settings = load_settings(environ)
    assert (settings.fullwhere_api_key, settings.inline_budget_seconds, settings.max_attempts) == ("key", 1.5, 3)


def test_empty_variables_count_as_unset():
    assert load_settings({"FULLWHERE_API_URL": ""}).fullwhere_api_url == "https://api.fullwhere.com"


def test_invalid_value_names_the_setting_not_the_value():
    with pytest.raises(SettingsError) as error:
        load_settings({"INLINE_BUDGET_SECONDS": "-4"})
    assert "INLINE_BUDGET_SECONDS" in str(error.value)


def test_secrets_repr_hides_values():
    settings = load_settings({"FULLWHERE_API_SECRET": "very-secret", "MEWS_WEBHOOK_TOKEN": "tok-123"})
    assert "very-secret" not in repr(settings) and "tok-123" not in repr(settings)


def test_secret_document_fills_settings_and_the_environment_wins(bridge):
    from tests.support.aws import client

    client("secretsmanager", bridge.endpoint).create_secret(
        Name="bridge/settings",
        SecretString=json.dumps({"FULLWHERE_API_SECRET": "from-secret", "DELIVEROO_WEBHOOK_SECRET": "d-secret",
                                 "MEWS_CLIENT_TOKEN": "from-secret-too"}),
    )
    bridge.configure(secrets_id="bridge/settings", fullwhere_api_secret=None)
    from chalicelib.settings import get_settings

    settings = get_settings()
    assert settings.fullwhere_api_secret == "from-secret"
    assert settings.deliveroo_webhook_secret == "deliveroo-webhook-secret"  # the environment wins
    assert settings.mews_client_token == "mews-client"


def test_settings_are_read_once_per_container(bridge, monkeypatch):
    from chalicelib.settings import get_settings

    first = get_settings()
    monkeypatch.setenv("INLINE_BUDGET_SECONDS", "7")
    assert get_settings() is first
