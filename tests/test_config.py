"""Settings come from the environment; production refuses to start with unsafe ones."""

import pytest

from newsletter.config import Config, ConfigError

GOOD = {
    "HERALD_ENV": "production",
    "SECRET_KEY": "k" * 48,
    "BASE_URL": "https://news.example.com",
    "DATABASE_URL": "postgresql+psycopg://herald@db/herald",
    "MAIL_URL": "smtp://user:pass@smtp.example.com:587?tls=starttls",
    "MAIL_FROM": "The Newsroom <digest@news.example.com>",
    "POSTAL_ADDRESS": "1 Real Street, Kyiv",
    "STRIPE_API_BASE": "",
    "STRIPE_SECRET_KEY": "sk_live_" + "x" * 24,
    "STRIPE_WEBHOOK_SECRET": "whsec_" + "y" * 32,
}


def test_development_defaults_need_no_settings():
    config = Config.from_env({})
    config.check()
    assert config.DATABASE_URL.startswith("sqlite:///")
    assert config.MAIL_URL.startswith("outbox:")
    assert config.CELERY_BROKER_URL == "filesystem://"


def test_a_complete_production_configuration_starts(monkeypatch):
    monkeypatch.setenv("SECRET_KEY", GOOD["SECRET_KEY"])
    Config.from_env(GOOD).check()


@pytest.mark.parametrize(
    ("change", "variable"),
    [
        ({"SECRET_KEY": None}, "SECRET_KEY"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY"),
        ({"BASE_URL": "http://news.example.com"}, "BASE_URL"),
        ({"DATABASE_URL": None}, "DATABASE_URL"),
        ({"MAIL_URL": None}, "MAIL_URL"),
        ({"POSTAL_ADDRESS": None}, "POSTAL_ADDRESS"),
        ({"MAIL_FROM": None}, "MAIL_FROM"),
        ({"STRIPE_API_BASE": None}, "STRIPE_API_BASE"),
        ({"STRIPE_SECRET_KEY": None}, "STRIPE_SECRET_KEY"),
        ({"STRIPE_WEBHOOK_SECRET": None}, "STRIPE_WEBHOOK_SECRET"),
    ],
)
def test_production_refuses_a_missing_or_unsafe_setting_and_names_it(monkeypatch, change, variable):
    env = dict(GOOD)
    for key, value in change.items():
        if value is None:
            env.pop(key)
        else:
            env[key] = value
    monkeypatch.delenv("SECRET_KEY", raising=False)
    if "SECRET_KEY" in env:
        monkeypatch.setenv("SECRET_KEY", env["SECRET_KEY"])
    with pytest.raises(ConfigError, match=variable):
        Config.from_env(env).check()


def test_create_app_refuses_to_start_in_production_without_a_secret(monkeypatch):
    from newsletter import create_app

    monkeypatch.delenv("SECRET_KEY", raising=False)
    env = {k: v for k, v in GOOD.items() if k != "SECRET_KEY"}
    with pytest.raises(ConfigError, match="SECRET_KEY"):
        create_app(Config.from_env(env))


def test_numbers_and_flags_are_parsed():
    config = Config.from_env({"TRUSTED_PROXIES": "2", "TICK_SECONDS": "0.5", "CSRF_ENABLED": "false"})
    assert (config.TRUSTED_PROXIES, config.TICK_SECONDS, config.CSRF_ENABLED) == (2, 0.5, False)


def test_message_ids_live_on_the_senders_domain():
    assert Config.from_env({"MAIL_FROM": "News <digest@news.example.com>"}).mail_domain == "news.example.com"


def test_the_local_fake_stripe_gets_a_test_key_and_donation_bounds_are_checked():
    assert Config.from_env({}).STRIPE_SECRET_KEY.startswith("sk_test_")
    assert Config.from_env({"STRIPE_API_BASE": ""}).STRIPE_SECRET_KEY == ""
    with pytest.raises(ConfigError, match="DONATION_MIN"):
        Config.from_env({"DONATION_MIN": "50", "DONATION_MAX": "10"}).check()
