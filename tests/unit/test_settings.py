"""`load_settings`: defaults, the TOML file, the environment, overrides and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.errors import ConfigError
from gateway.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def empty_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run in an empty directory so a real `config/gateway.toml` is never read by accident."""
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


def write_toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    s = load_settings(environ={})
    assert s == Settings()
    assert s.database_url == "sqlite:///instance/gateway.db"
    assert s.public_url == "http://127.0.0.1:8000"
    assert s.default_region == "US"
    assert s.default_timezone == "UTC"
    assert s.callback_secret is None
    assert s.twilio_base_url == "https://api.twilio.com"
    assert (s.smtp_host, s.smtp_port, s.smtp_tls, s.smtp_from) == (None, 587, "starttls", None)
    assert s.dispatch_concurrency == 64
    assert s.channel_rates == ()
    assert s.default_after == 900.0
    assert s.default_ttl == 86400.0
    assert (s.retry_attempts, s.retry_backoff, s.retry_multiplier, s.retry_max_backoff) == (
        3,
        30.0,
        2.0,
        1800.0,
    )


def test_missing_default_config_file_is_fine(empty_cwd: Path) -> None:
    assert not (empty_cwd / "config" / "gateway.toml").exists()
    assert load_settings(environ={}).smtp_port == 587


def test_default_config_file_is_read_from_the_working_directory(empty_cwd: Path) -> None:
    (empty_cwd / "config").mkdir()
    (empty_cwd / "config" / "gateway.toml").write_text('default_region = "JP"\n', encoding="utf-8")
    assert load_settings(environ={}).default_region == "JP"


def test_toml_file_sets_values(tmp_path: Path) -> None:
    path = write_toml(
        tmp_path,
        'database_url = "sqlite:///data/gw.db"\n'
        'default_region = "jp"\n'
        'default_timezone = "Asia/Tokyo"\n'
        "smtp_port = 2525\n"
        'retry_backoff = "1m"\n'
        "default_after = 120\n"
        "channel_rates = { sms = 10, whatsapp = 80 }\n",
    )
    s = load_settings(environ={"GATEWAY_CONFIG_FILE": str(path)})
    assert s.database_url == "sqlite:///data/gw.db"
    assert s.default_region == "JP"
    assert s.default_timezone == "Asia/Tokyo"
    assert s.smtp_port == 2525
    assert s.retry_backoff == 60.0
    assert s.default_after == 120.0
    assert dict(s.channel_rates) == {"sms": 10.0, "whatsapp": 80.0}


def test_environment_overrides_the_toml_file(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'default_region = "JP"\nsmtp_port = 2525\nsmtp_tls = "tls"\n')
    env = {"GATEWAY_CONFIG_FILE": str(path), "GATEWAY_DEFAULT_REGION": "DE", "GATEWAY_SMTP_PORT": "465"}
    s = load_settings(environ=env)
    assert s.default_region == "DE"
    assert s.smtp_port == 465
    assert s.smtp_tls == "tls"  # only in the file


def test_overrides_beat_the_environment(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "smtp_port = 2525\n")
    env = {"GATEWAY_CONFIG_FILE": str(path), "GATEWAY_SMTP_PORT": "465"}
    assert load_settings(environ=env, overrides={"smtp_port": 1025}).smtp_port == 1025


def test_environment_values_are_parsed() -> None:
    env = {
        "GATEWAY_RETRY_BACKOFF": "90s",
        "GATEWAY_RETRY_MAX_BACKOFF": "1h",
        "GATEWAY_DEFAULT_TTL": "7d",
        "GATEWAY_DISPATCH_INTERVAL": "500ms",
        "GATEWAY_DEFAULT_AFTER": "45",
        "GATEWAY_RETRY_ATTEMPTS": "5",
        "GATEWAY_RETRY_MULTIPLIER": "1.5",
        "GATEWAY_SMTP_TLS": "NONE",
        "GATEWAY_CHANNEL_RATES": "sms=10, whatsapp=80,email=0",
        "GATEWAY_PUBLIC_URL": "https://gw.example.com/",
    }
    s = load_settings(environ=env)
    assert s.retry_backoff == 90.0
    assert s.retry_max_backoff == 3600.0
    assert s.default_ttl == 7 * 86400.0
    assert s.dispatch_interval == 0.5
    assert s.default_after == 45.0
    assert s.retry_attempts == 5
    assert s.retry_multiplier == 1.5
    assert s.smtp_tls == "none"
    assert dict(s.channel_rates) == {"sms": 10.0, "whatsapp": 80.0, "email": 0.0}
    assert s.public_url == "https://gw.example.com"


def test_empty_optional_value_means_unset() -> None:
    s = load_settings(environ={"GATEWAY_SMTP_HOST": "", "GATEWAY_TWILIO_FROM": "  "})
    assert s.smtp_host is None
    assert s.twilio_from is None


def test_unknown_toml_key_is_rejected(tmp_path: Path) -> None:
    path = write_toml(tmp_path, 'smtp_port = 25\nsmtp_hots = "mail.example.com"\n')
    with pytest.raises(ConfigError, match="smtp_hots"):
        load_settings(environ={"GATEWAY_CONFIG_FILE": str(path)})


def test_invalid_toml_is_rejected(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "smtp_port = \n")
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"GATEWAY_CONFIG_FILE": str(path)})
    assert str(info.value).startswith("GATEWAY_CONFIG_FILE")


def test_missing_explicit_config_file_is_an_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"GATEWAY_CONFIG_FILE": str(missing)})
    assert str(info.value).startswith("GATEWAY_CONFIG_FILE")
    assert "nope.toml" in str(info.value)


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GATEWAY_DATABASE_URL", "mysql://db/gateway"),
        ("GATEWAY_DATABASE_URL", "not a url"),
        ("GATEWAY_PUBLIC_URL", "ftp://gw.example.com"),
        ("GATEWAY_PUBLIC_URL", "gw.example.com"),
        ("GATEWAY_DEFAULT_REGION", "XX"),
        ("GATEWAY_DEFAULT_TIMEZONE", "Mars/Base"),
        ("GATEWAY_SMTP_PORT", "abc"),
        ("GATEWAY_SMTP_PORT", "70000"),
        ("GATEWAY_SMTP_PORT", "0"),
        ("GATEWAY_SMTP_TLS", "maybe"),
        ("GATEWAY_LOG_LEVEL", "chatty"),
        ("GATEWAY_CHANNEL_RATES", "sms"),
        ("GATEWAY_CHANNEL_RATES", "sms=fast"),
        ("GATEWAY_CHANNEL_RATES", "sms=-1"),
        ("GATEWAY_RETRY_BACKOFF", "soon"),
        ("GATEWAY_RETRY_BACKOFF", "-5"),
        ("GATEWAY_DEFAULT_TTL", "-1h"),
        ("GATEWAY_RETRY_ATTEMPTS", "0"),
        ("GATEWAY_RETRY_MULTIPLIER", "0.5"),
        ("GATEWAY_RETRY_JITTER", "-0.1"),
        ("GATEWAY_DISPATCH_CONCURRENCY", "many"),
    ],
)
def test_bad_environment_value_names_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={variable: value})
    assert str(info.value).startswith(f"{variable}:")


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("GATEWAY_RETRY_MULTIPLIER", "nan"),
        ("GATEWAY_RETRY_MULTIPLIER", "inf"),
        ("GATEWAY_RETRY_JITTER", "nan"),
        ("GATEWAY_CHANNEL_RATES", "sms=nan"),
    ],
)
def test_non_finite_numbers_are_rejected(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={variable: value})
    assert str(info.value).startswith(f"{variable}:")


@pytest.mark.parametrize(
    ("toml", "variable"),
    [
        ("smtp_port = 70000\n", "GATEWAY_SMTP_PORT"),
        ("smtp_port = true\n", "GATEWAY_SMTP_PORT"),
        ("public_url = 5\n", "GATEWAY_PUBLIC_URL"),
        ('default_timezone = "Mars/Base"\n', "GATEWAY_DEFAULT_TIMEZONE"),
        ('retry_backoff = "soon"\n', "GATEWAY_RETRY_BACKOFF"),
        ("retry_backoff = -3\n", "GATEWAY_RETRY_BACKOFF"),
    ],
)
def test_bad_toml_value_names_the_variable(tmp_path: Path, toml: str, variable: str) -> None:
    path = write_toml(tmp_path, toml)
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"GATEWAY_CONFIG_FILE": str(path)})
    assert str(info.value).startswith(f"{variable}:")


def test_bad_toml_value_is_fine_when_the_environment_replaces_it(tmp_path: Path) -> None:
    path = write_toml(tmp_path, "smtp_port = 70000\n")
    assert (
        load_settings(environ={"GATEWAY_CONFIG_FILE": str(path), "GATEWAY_SMTP_PORT": "25"}).smtp_port == 25
    )


def test_bad_override_names_the_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(environ={}, overrides={"smtp_tls": "maybe"})
    assert str(info.value).startswith("GATEWAY_SMTP_TLS:")


def test_postgresql_url_is_accepted() -> None:
    url = "postgresql+psycopg://gw:secret@db:5432/gateway"
    assert load_settings(environ={"GATEWAY_DATABASE_URL": url}).database_url == url


@pytest.mark.parametrize(
    ("rates", "channel", "expected"),
    [
        ("sms=10,whatsapp=80", "sms", 10.0),
        ("sms=10,whatsapp=80", "whatsapp", 80.0),
        ("sms=10,whatsapp=80", "email", 25.0),
        ("sms=0", "sms", 0.0),
        ("", "sms", 25.0),
    ],
)
def test_rate_for(rates: str, channel: str, expected: float) -> None:
    s = load_settings(environ={"GATEWAY_CHANNEL_RATES": rates})
    assert s.rate_for(channel, 25.0) == expected
