"""Log lines: JSON and text formats, and the redaction of bodies, addresses and secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from gateway.logs import REDACTED, Redactor, configure, event, request_id_var, secrets_of
from gateway.settings import load_settings

SECRETS = {
    "twilio_auth_token": "0123456789abcdef0123456789abcdef",
    "smtp_password": "hunter2-smtp",
    "callback_secret": "cb-secret-value",
    "metrics_token": "scrape-me-please",
}


@pytest.fixture
def out() -> Iterator[io.StringIO]:
    """The gateway's handler on the root logger, writing JSON to a buffer; removed afterwards."""
    settings = load_settings(
        environ={},
        overrides={
            "log_format": "json",
            "database_url": "postgresql+psycopg://gw:db-password-9@db.internal/gw",
            **SECRETS,
        },
    )
    stream = io.StringIO()
    root = logging.getLogger()
    level = root.level
    handler = configure("debug", settings, stream)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


@pytest.mark.parametrize(
    "text",
    [
        "+14155550100",
        "+1 415 555 0100",
        "+1 (415) 555-0100",
        "+44 20 7946 0958",
        "+81-90-1234-5678",
        "(415) 555-0100",
        "415-555-0100",
        "415.555.0100",
        "14155550100",
        "ada.lovelace+news@example.co.uk",
        "Ada@Example.test",
        "Bearer gw_abcdefghijklmnopqrstuvwxyz012345",
        "gw_abcdefghijklmnopqrstuvwxyz012345",
        "Basic QUMwMTIzOnNlY3JldA==",
    ],
)
def test_patterns_remove_phone_numbers_emails_and_credentials(text: str) -> None:
    redacted = Redactor().text(f"could not reach {text} today")
    assert text not in redacted
    assert redacted.startswith("could not reach ") and redacted.endswith(" today")


@pytest.mark.parametrize(
    "text",
    [
        "msg_01m8hbjj4hy8x9rvf9p12g7b95",
        "att_01m8hbjj6bb9za8z9q2taaenj0",
        "SM13f335fb4c971f3647bd77ac7d234868",
        "2026-11-28T15:14:57.814Z",
        "took 1234.5 ms",
        "http://127.0.0.1:44689/2010-04-01/Accounts/AC0123456789abcdef0123456789abcdef/Messages.json",
        "error 21211 after 3 tries",
        "port 5432",
    ],
)
def test_ids_times_and_codes_stay_readable(text: str) -> None:
    assert Redactor().text(text) == text


def test_passwords_in_urls_and_configured_secrets_are_removed() -> None:
    settings = load_settings(
        environ={}, overrides={"database_url": "postgresql://u:pw-in-url@h/db", **SECRETS}
    )
    found = secrets_of(settings)
    assert set(SECRETS.values()) | {"pw-in-url"} <= set(found)
    redactor = Redactor(found)
    text = redactor.text("auth 0123456789abcdef0123456789abcdef failed; postgresql://u:pw-in-url@h/db")
    assert "0123456789abcdef0123456789abcdef" not in text
    assert "pw-in-url" not in text


def test_fields_named_like_content_addresses_or_credentials_are_dropped(out: io.StringIO) -> None:
    log = logging.getLogger("gateway.test")
    event(
        log,
        "test.fields",
        "sent",
        message_id="msg_1",
        to="Ada Lovelace",
        address="somewhere",
        text="Your code is 1234",
        body="b",
        html="<p>h</p>",
        subject="Order 42",
        content={"text": "x"},
        auth_token="t",
        api_key="k",
        Authorization="Bearer x",
        from_number="+1",
        channel="sms",
        next_channel="email",
        provider_message_id="<att_1.123@gateway.example>",
    )
    (line,) = lines(out)
    for name in ("to", "address", "text", "body", "html", "subject", "content", "auth_token", "api_key",
                 "Authorization", "from_number"):  # fmt: skip
        assert line[name] == REDACTED, name
    assert (line["message_id"], line["channel"], line["next_channel"]) == ("msg_1", "sms", "email")
    assert line["provider_message_id"] == "<att_1.123@gateway.example>"  # an id, not an address


def test_messages_arguments_tracebacks_and_nested_values_are_scrubbed(out: io.StringIO) -> None:
    log = logging.getLogger("gateway.test")
    log.warning("send to %s failed with token %s", "+14155550100", SECRETS["twilio_auth_token"])
    try:
        raise ValueError("mailbox ada@example.test is full; password hunter2-smtp")
    except ValueError:
        log.exception("adapter raised")
    event(log, "test.nested", "nested", detail={"who": ["bob@example.test", "+447946095800"]})
    text = out.getvalue()
    for secret in ("4155550100", SECRETS["twilio_auth_token"], "ada@example.test", "hunter2", "bob@", "7946"):
        assert secret not in text, secret
    first, second, third = lines(out)
    assert first["msg"] == "send to [phone] failed with token [redacted]"
    assert "ValueError: mailbox [email] is full" in str(second["exc"])
    assert third["detail"] == {"who": ["[email]", "[phone]"]}


def test_json_lines_have_time_level_logger_event_and_fields(out: io.StringIO) -> None:
    token = request_id_var.set("req_abc")
    try:
        event(
            logging.getLogger("gateway.flow"),
            "attempt.sent",
            "attempt att_1 accepted",
            message_id="msg_1",
            attempt_id="att_1",
            duration_ms=12.5,
            name="clashes with LogRecord.name",
        )
    finally:
        request_id_var.reset(token)
    (line,) = lines(out)
    assert line["level"] == "info" and line["logger"] == "gateway.flow"
    assert line["event"] == "attempt.sent" and line["msg"] == "attempt att_1 accepted"
    assert line["request_id"] == "req_abc"
    assert (line["message_id"], line["attempt_id"], line["duration_ms"]) == ("msg_1", "att_1", 12.5)
    assert line["name_"] == "clashes with LogRecord.name"
    assert str(line["ts"]).endswith("Z")


def test_text_format_appends_fields_and_is_redacted_too() -> None:
    stream = io.StringIO()
    settings = load_settings(environ={}, overrides={"log_format": "text"})
    root = logging.getLogger()
    level = root.level
    handler = configure("info", settings, stream)
    try:
        event(logging.getLogger("gateway.flow"), "x", "to +14155550100", message_id="msg_1", to="+1415")
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
    text = stream.getvalue()
    assert "INFO gateway.flow to [phone] [message_id=msg_1 to=[redacted]]" in text


def test_configuring_twice_keeps_one_handler() -> None:
    root = logging.getLogger()
    level = root.level
    before = list(root.handlers)
    settings = load_settings(environ={})
    first = configure("info", settings, io.StringIO())
    second = configure("info", settings, io.StringIO())
    try:
        assert first not in root.handlers
        assert [h for h in root.handlers if h not in before] == [second]
    finally:
        root.removeHandler(second)
        root.setLevel(level)


def test_waitress_s_queue_warning_is_written_once_every_ten_seconds_with_a_count(
    out: io.StringIO, monkeypatch: pytest.MonkeyPatch
) -> None:
    from gateway.logs import OncePer

    now = [1000.0]
    queue = logging.getLogger("waitress.queue")
    [once] = [f for f in queue.filters if isinstance(f, OncePer)]
    monkeypatch.setattr(once, "clock", lambda: now[0])
    for depth in range(1, 51):  # a saturated server: a warning a request, 50 in 5 s
        queue.warning("Task queue depth is %d", depth)
        now[0] += 0.1
    now[0] += 5.0
    queue.warning("Task queue depth is %d", 7)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["msg"] for line in lines] == [
        "Task queue depth is 1",
        "Task queue depth is 7 (49 more like it in the 10 s before)",
    ]
    # Configuring again keeps one such filter, not two.
    logging.getLogger().removeHandler(configure("debug", None, io.StringIO()))
    assert len([f for f in queue.filters if isinstance(f, OncePer)]) == 1
