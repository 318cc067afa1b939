"""Settings from `config/gateway.toml` and `GATEWAY_*` environment variables, validated at start-up.

Precedence: built-in default < the TOML file < the environment. The TOML file uses the variable's name in
lower case without the `GATEWAY_` prefix (`database_url = "..."`). `GATEWAY_CONFIG_FILE` names the file
(default `config/gateway.toml` in the working directory; a missing default file is fine).
"""

from __future__ import annotations

import math
import os
import tomllib
import zoneinfo
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from dataclasses import field as dc_field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import phonenumbers

from gateway.errors import ConfigError
from gateway.timeutil import format_duration, parse_duration

Parser = Callable[[Any], Any]


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError("must be a string")
    return value


def _optional_text(value: Any) -> str | None:
    text = _text(value).strip()
    return text or None


def _int(low: int, high: int) -> Parser:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("must be an integer")
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise ValueError("must be an integer") from None
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}")
        return number

    return parse


def _optional_port(value: Any) -> int | None:
    if isinstance(value, str) and not value.strip():
        return None
    port: int = _int(1, 65535)(value)
    return port


def _fernet_keys(value: Any) -> str | None:
    from cryptography.fernet import Fernet

    text = _text(value).strip()
    if not text:
        return None
    for key in text.split(","):
        try:
            Fernet(key.strip())
        except (ValueError, TypeError):
            raise ValueError("must be Fernet keys (32 url-safe base64 bytes each), comma-separated") from None
    return text


def _optional_int(low: int, high: int) -> Parser:
    def parse(value: Any) -> int | None:
        if isinstance(value, str) and not value.strip():
            return None
        number: int = _int(low, high)(value)
        return number

    return parse


def _float(low: float) -> Parser:
    def parse(value: Any) -> float:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError("must be a number") from None
        if not math.isfinite(number):
            raise ValueError("must be a finite number")
        if number < low:
            raise ValueError(f"must be at least {low}")
        return number

    return parse


def _duration(value: Any) -> float:
    if isinstance(value, str) and value.strip().lstrip("-").replace(".", "", 1).isdigit():
        value = float(value)
    return parse_duration(value)


def _url(value: Any) -> str:
    text = _text(value).strip().rstrip("/")
    parsed = urlparse(text)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise ValueError("must be an http(s) URL")
    return text


def _database_url(value: Any) -> str:
    text = _text(value).strip()
    if not (text.startswith("sqlite:") or text.startswith("postgresql")):
        raise ValueError("must be a sqlite:/// or postgresql+psycopg:// SQLAlchemy URL")
    return text


def _region(value: Any) -> str:
    text = _text(value).strip().upper()
    if text not in phonenumbers.SUPPORTED_REGIONS:
        raise ValueError("must be a two-letter region code such as US or JP")
    return text


def _timezone(value: Any) -> str:
    text = _text(value).strip()
    try:
        zoneinfo.ZoneInfo(text)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError("must be an IANA time zone such as UTC or Asia/Tokyo") from None
    return text


def _choice(*options: str) -> Parser:
    def parse(value: Any) -> str:
        text = _text(value).strip().lower()
        if text not in options:
            raise ValueError("must be one of " + ", ".join(options))
        return text

    return parse


def _ratio(value: Any) -> float:
    number: float = _float(0.0)(value)
    if not 0 < number <= 1:
        raise ValueError("must be a fraction above 0 and at most 1, e.g. 0.5")
    return number


def _rates(value: Any) -> tuple[tuple[str, float], ...]:
    if isinstance(value, Mapping):
        value = ",".join(f"{k}={v}" for k, v in value.items())
    rates: dict[str, float] = {}
    for part in _text(value).split(","):
        if not part.strip():
            continue
        name, sep, number = part.partition("=")
        if not sep:
            raise ValueError("must look like 'sms=10,email=50'")
        try:
            rates[name.strip()] = float(number)
        except ValueError:
            raise ValueError(f"rate for {name.strip()!r} must be a number") from None
        if not math.isfinite(rates[name.strip()]) or rates[name.strip()] < 0:
            raise ValueError("rates must be finite and not negative")
    return tuple(rates.items())


def setting(default: Any, parse: Parser, doc: str) -> Any:
    return dc_field(default=default, metadata={"parse": parse, "doc": doc})


@dataclass(frozen=True)
class Settings:
    """Every setting of the gateway; `GATEWAY_<NAME>` overrides `<name>` of the TOML file."""

    database_url: str = setting(
        "sqlite:///instance/gateway.db", _database_url, "SQLAlchemy URL of the database"
    )
    public_url: str = setting(
        "http://127.0.0.1:8000", _url, "public base URL, for callback URLs and signature checks"
    )
    default_region: str = setting("US", _region, "region for phone numbers without a country code")
    default_timezone: str = setting("UTC", _timezone, "time zone of contacts without a phone")
    callback_secret: str | None = setting(
        None, _optional_text, "signs status_callback deliveries (generated and stored if unset)"
    )
    log_level: str = setting("INFO", _choice("debug", "info", "warning", "error"), "logging level")
    reprobe_after: float = setting(
        30 * 86400.0, _duration, "how long a channel stays unreachable before it is tried again"
    )
    # Inbound email
    inbound_smtp_port: int | None = setting(
        None, _optional_port, "port of the inbound SMTP listener that `gateway serve` starts (unset: none)"
    )
    inbound_smtp_host: str = setting("127.0.0.1", _text, "address the inbound SMTP listener binds")
    inbound_email_domain: str | None = setting(
        None, _optional_text, "domain of Reply-To addresses (reply+<token>@domain) on outgoing email"
    )
    # Scale-out and data protection
    db_pool_size: int = setting(10, _int(1, 500), "database connections per process (PostgreSQL)")
    api_rate_limit: float = setting(
        100.0, _float(0.0), "requests per second per API key in each API process (0 = no limit)"
    )
    encryption_key: str | None = setting(
        None, _fernet_keys, "Fernet keys, comma-separated, newest first: bodies are encrypted at rest"
    )
    retention_days: int | None = setting(
        None, _optional_int(1, 36500), "erase message bodies older than this many days (unset: keep)"
    )
    # Twilio (SMS)
    twilio_account_sid: str | None = setting(None, _optional_text, "Twilio account SID")
    twilio_auth_token: str | None = setting(None, _optional_text, "Twilio auth token")
    twilio_from: str | None = setting(None, _optional_text, "sender number for SMS")
    twilio_messaging_service_sid: str | None = setting(
        None, _optional_text, "Twilio messaging service (used instead of twilio_from)"
    )
    twilio_base_url: str = setting("https://api.twilio.com", _url, "Twilio REST base URL")
    twilio_mms: str = setting(
        "off", _choice("off", "on"), "on: images go on SMS as MMS (MediaUrl; US and Canadian senders only)"
    )
    # SMTP (email)
    smtp_host: str | None = setting(None, _optional_text, "SMTP server host")
    smtp_port: int = setting(587, _int(1, 65535), "SMTP server port")
    smtp_username: str | None = setting(None, _optional_text, "SMTP user name")
    smtp_password: str | None = setting(None, _optional_text, "SMTP password")
    smtp_tls: str = setting("starttls", _choice("none", "starttls", "tls"), "none, starttls or tls")
    smtp_from: str | None = setting(None, _optional_text, "From address of emails")
    smtp_pool_size: int = setting(4, _int(1, 64), "SMTP connections kept open and reused")
    media_fetch_max_bytes: int = setting(
        10 * 1024**2, _int(1, 1024**3), "largest file email fetches to attach, in bytes (larger is rejected)"
    )
    media_fetch_timeout: float = setting(10.0, _duration, "how long email may take to fetch one attachment")
    media_fetch_private: str = setting(
        "off", _choice("off", "on"), "on: email may fetch attachments from loopback and private addresses"
    )
    # WhatsApp (Cloud API, or through Twilio), Messenger and Instagram
    whatsapp_token: str | None = setting(
        None, _optional_text, "WhatsApp Cloud API access token (when set, WhatsApp uses the Cloud API)"
    )
    whatsapp_phone_number_id: str | None = setting(None, _optional_text, "WhatsApp Cloud API phone number id")
    twilio_whatsapp_from: str | None = setting(
        None, _optional_text, "WhatsApp sender through Twilio, e.g. +14155238886 (used without the token)"
    )
    messenger_page_token: str | None = setting(None, _optional_text, "Messenger Page access token")
    messenger_page_id: str | None = setting(None, _optional_text, "Facebook Page id of Messenger messages")
    instagram_token: str | None = setting(None, _optional_text, "Instagram messaging access token")
    instagram_account_id: str | None = setting(None, _optional_text, "Instagram professional account id")
    meta_app_secret: str | None = setting(
        None, _optional_text, "Meta app secret: checks X-Hub-Signature-256 of Meta webhooks"
    )
    meta_verify_token: str | None = setting(
        None, _optional_text, "answer to Meta's hub.verify_token when subscribing the webhooks"
    )
    meta_graph_url: str = setting("https://graph.facebook.com/v21.0", _url, "Meta Graph API base URL")
    # Telegram, LINE, Viber, X, WeChat and Discord (gateway/channels/)
    telegram_bot_token: str | None = setting(None, _optional_text, "Telegram bot token from @BotFather")
    telegram_secret_token: str | None = setting(
        None, _optional_text, "secret_token given to setWebhook, checked on every update"
    )
    telegram_api_url: str = setting("https://api.telegram.org", _url, "Telegram Bot API base URL")
    line_channel_token: str | None = setting(None, _optional_text, "LINE channel access token")
    line_channel_secret: str | None = setting(None, _optional_text, "LINE channel secret (signs webhooks)")
    line_api_url: str = setting("https://api.line.me", _url, "LINE Messaging API base URL")
    viber_auth_token: str | None = setting(None, _optional_text, "Viber bot auth token (also signs webhooks)")
    viber_sender_name: str | None = setting(None, _optional_text, "sender name shown on Viber messages")
    viber_api_url: str = setting("https://chatapi.viber.com/pa", _url, "Viber REST bot API base URL")
    x_bearer_token: str | None = setting(None, _optional_text, "X OAuth 2.0 user token with dm.write")
    x_consumer_secret: str | None = setting(
        None, _optional_text, "X app consumer secret (CRC answers and webhook signatures)"
    )
    x_api_url: str = setting("https://api.x.com", _url, "X API base URL")
    wechat_app_id: str | None = setting(None, _optional_text, "WeChat Official Account AppID")
    wechat_app_secret: str | None = setting(None, _optional_text, "WeChat Official Account AppSecret")
    wechat_token: str | None = setting(
        None, _optional_text, "WeChat server-configuration Token (signs webhooks)"
    )
    wechat_api_url: str = setting("https://api.weixin.qq.com", _url, "WeChat API base URL")
    discord_bot_token: str | None = setting(None, _optional_text, "Discord bot token")
    discord_api_url: str = setting("https://discord.com/api/v10", _url, "Discord REST API base URL")
    # Dispatcher
    dispatch_concurrency: int = setting(64, _int(1, 10000), "in-flight provider calls per dispatcher")
    dispatch_interval: float = setting(1.0, _duration, "how often the scheduler wakes the dispatcher")
    dispatch_lease: float = setting(
        120.0, _duration, "how long a claim lasts; a dead worker's claims are retaken after it"
    )
    dispatch_batch: int = setting(200, _int(1, 10000), "rows claimed per round")
    event_loop: str = setting(
        "uvloop",
        _choice("uvloop", "asyncio"),
        "the dispatcher's event loop: uvloop (asyncio's own where uvloop is not installed), or asyncio",
    )
    provider_timeout: float = setting(30.0, _duration, "timeout of one provider call")
    event_backoff: float = setting(2.0, _duration, "delay before an event delivery is retried the first time")
    event_max_backoff: float = setting(3600.0, _duration, "longest delay between event delivery retries")
    bot_hook_timeout: float = setting(
        5.0, _duration, "how long a `respond` webhook has to answer a message.inbound event with a reply"
    )
    bot_hook_max_age: float = setting(
        60.0, _duration, "a bot hook's reply is sent only if its answer comes this soon after the inbound"
    )
    channel_rates: tuple[tuple[str, float], ...] = setting(
        (), _rates, "messages per second per channel, e.g. 'sms=10,email=50' (0 = unlimited)"
    )
    # Routing defaults (used when neither a rule nor the request says otherwise)
    default_after: float = setting(900.0, _duration, "how long a step may take to reach `until`")
    default_ttl: float = setting(86400.0, _duration, "how long a message may wait to be sent")
    retry_attempts: int = setting(3, _int(1, 100), "tries per step, the first one included")
    retry_backoff: float = setting(30.0, _duration, "delay before the first retry")
    retry_multiplier: float = setting(2.0, _float(1.0), "backoff growth per retry")
    retry_max_backoff: float = setting(1800.0, _duration, "longest delay between retries")
    retry_jitter: float = setting(0.2, _float(0.0), "random spread of each delay, as a fraction")
    # Operability: logs, metrics, readiness, circuit breakers (docs/operations.md)
    log_format: str = setting(
        "text", _choice("text", "json"), "log lines: text, or json (one object per line)"
    )
    metrics_token: str | None = setting(
        None, _optional_text, "bearer token GET /metrics requires (unset: /metrics answers 404)"
    )
    ready_max_lag: float = setting(
        300.0, _duration, "/readyz fails when the oldest due message waited longer (0 = no check)"
    )
    ready_max_breaker_open: float = setting(
        600.0, _duration, "/readyz fails when a channel's circuit breaker stayed open longer (0 = no check)"
    )
    breaker_window: int = setting(20, _int(1, 10000), "recent provider calls per channel a breaker weighs")
    breaker_min_calls: int = setting(10, _int(1, 10000), "calls in the window before a breaker may open")
    breaker_failure_ratio: float = setting(
        0.5, _ratio, "share of transient failures in the window that opens a channel's breaker"
    )
    breaker_cooldown: float = setting(30.0, _duration, "how long an open breaker waits before a probe call")

    def rate_for(self, channel: str, default: float) -> float:
        """Messages per second for a channel (0 = unlimited)."""
        return dict(self.channel_rates).get(channel, default)

    @staticmethod
    def env_name(name: str) -> str:
        return "GATEWAY_" + name.upper()


def load_settings(
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Read the TOML file and the environment; raise ConfigError naming the first bad variable."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    path_text = env.get("GATEWAY_CONFIG_FILE")
    path = Path(path_text or "config/gateway.toml")
    if path.exists():
        try:
            raw.update(tomllib.loads(path.read_text(encoding="utf-8")))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"GATEWAY_CONFIG_FILE: {path} is not valid TOML: {exc}") from None
    elif path_text:
        raise ConfigError(f"GATEWAY_CONFIG_FILE: {path} does not exist")
    known = {f.name for f in fields(Settings)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r}")
    for name in known:
        value = env.get(Settings.env_name(name))
        if value is not None:
            raw[name] = value
    raw.update(overrides or {})
    parsed: dict[str, Any] = {}
    for f in fields(Settings):
        if f.name not in raw:
            continue
        value = raw[f.name]
        if value is None or (value == "" and f.metadata["parse"] in (_optional_text, _optional_port)):
            parsed[f.name] = None
            continue
        try:
            parsed[f.name] = f.metadata["parse"](value)
        except ValueError as exc:
            raise ConfigError(f"{Settings.env_name(f.name)}: {exc} (got {value!r})") from None
    return Settings(**parsed)


SECTIONS = {
    "database_url": "General",
    "inbound_smtp_port": "Inbound email",
    "twilio_account_sid": "SMS through Twilio (enabled when account SID, auth token and a sender are set)",
    "smtp_host": "Email through SMTP (enabled when host and from are set)",
    "whatsapp_token": "WhatsApp (Cloud API, else via Twilio), Messenger, Instagram (Graph: needs app secret)",
    "telegram_bot_token": "Telegram (enabled when the bot token and the webhook secret token are set)",
    "line_channel_token": "LINE (enabled when the channel access token and channel secret are set)",
    "viber_auth_token": "Viber (enabled when the auth token and sender name are set)",
    "x_bearer_token": "X direct messages (enabled when the bearer token and consumer secret are set)",
    "wechat_app_id": "WeChat Official Account (enabled when AppID, AppSecret and Token are set)",
    "discord_bot_token": "Discord direct messages, send-only (enabled when the bot token is set)",
    "dispatch_concurrency": "Dispatcher",
    "default_after": "Routing defaults (when neither a rule nor the request says otherwise)",
    "log_format": "Operability: logs, /metrics, /readyz, circuit breakers (docs/operations.md)",
}


def config_template() -> str:
    """The text of `config/gateway.toml`: every setting, documented, commented out at its default."""
    lines = [
        "# Channel gateway settings: every setting with its default, commented out. Each can also be set",
        "# as GATEWAY_<NAME IN CAPITALS> in the environment, which wins over this file; GATEWAY_CONFIG_FILE",
        '# names another file. Durations take "90s", "2m", "1h", "7d", "500ms" or a number of seconds.',
        "# Regenerate with `python -m gateway.settings > config/gateway.toml`.",
    ]
    for f in fields(Settings):
        if f.name in SECTIONS:
            lines += ["", f"# --- {SECTIONS[f.name]} ---"]
        lines.append(f"# {f.metadata['doc']}; {Settings.env_name(f.name)}")
        lines.append(f"# {f.name} = {_toml_value(f.default, f.metadata['parse'])}")
    return "\n".join(lines) + "\n"


def _toml_value(default: Any, parse: Parser) -> str:
    if parse is _duration:
        return f'"{format_duration(default)}"'
    if default is None or default == ():
        return '""  # unset'
    if isinstance(default, str):
        return f'"{default}"'
    return repr(default)


if __name__ == "__main__":
    print(config_template(), end="")
