"""The email channel's fast path renders exactly what the `email` package would, or leaves it to it."""

from __future__ import annotations

import re

import pytest
from aiosmtplib.email import flatten_message

from fallbacks.email import EmailChannel
from gateway.channels.base import OutgoingMessage
from gateway.settings import load_settings

ATTEMPT = "att_01JDXYZABCDEFGHJKMNPQRSTVW"


def _channel(sender: str) -> EmailChannel:
    return EmailChannel(load_settings(environ={}, overrides={"smtp_host": "mail.test", "smtp_from": sender}))


def _same_but_date(raw: bytes) -> bytes:
    """The Date may tick between two renderings; the rest must not differ."""
    return re.sub(rb"Date: [^\r]*", b"Date: -", raw)


@pytest.fixture(autouse=True)
def fixed_message_id(monkeypatch: pytest.MonkeyPatch) -> None:
    """make_msgid's random part varies in length, and so does where the email package folds the header."""
    monkeypatch.setattr("fallbacks.email.make_msgid", lambda idstring, domain: f"<1.2.3.{idstring}@{domain}>")


@pytest.mark.parametrize(
    "sender", ["gw@example.test", "Gateway <gw@example.test>", '"Acme, Inc." <gw@x.test>']
)
@pytest.mark.parametrize(
    ("subject", "text"),
    [
        ("Order 1 shipped", "Your order 1 has shipped.\nTrack it at https://biz.example/track/1."),
        (None, "First line becomes the subject\n\nSecond paragraph"),
        ("", ""),
        ("  spaced   subject ", "t\r\nu\rv"),
        ("s", "." + "y" * 77),
    ],
)
@pytest.mark.parametrize(
    ("headers", "reply_to"),
    [
        ({}, None),
        ({"List-Unsubscribe": "<mailto:u@example.test>"}, "reply+tok@in.example.test"),
        ({"Subject": "X"}, None),
    ],
)
def test_plain_rendering_is_byte_for_byte_the_email_packages(
    sender: str, subject: str | None, text: str, headers: dict[str, str], reply_to: str | None
) -> None:
    channel = _channel(sender)
    message = OutgoingMessage(
        ATTEMPT, "msg_1", "to@example.test", text, subject, headers=headers, reply_to=reply_to
    )
    plain = channel._plain(message, "to@example.test")
    assert plain is not None
    data, message_id = plain
    assert f"<{message_id}>".encode() in data
    assert _same_but_date(data) == _same_but_date(flatten_message(channel._build(message, "to@example.test")))


@pytest.mark.parametrize("length", range(20, 120))
def test_a_message_id_folds_where_the_email_package_folds_it(length: int) -> None:
    """Too long for its line: on the next one; too long for any line: left long on the first."""
    attempt = "att_" + "x" * length
    channel = _channel("gw@example.test")
    message = OutgoingMessage(attempt, "msg_1", "to@example.test", "text", "subject")
    plain = channel._plain(message, "to@example.test")
    if len(f"X-Gateway-Attempt: {attempt}") > 78:
        assert plain is None
    else:
        assert plain is not None
        assert _same_but_date(plain[0]) == _same_but_date(
            flatten_message(channel._build(message, "to@example.test"))
        )


@pytest.mark.parametrize(
    ("subject", "text", "extra"),
    [
        ("Café", "text", {}),  # non-ASCII header: RFC 2047
        ("s", "café", {}),  # non-ASCII text: quoted-printable or base64
        ("s", "y" * 79, {}),  # a line longer than 78
        ("x" * 75, "t", {}),  # a header that needs folding
        ("s", "t", {"html": "<p>t</p>"}),  # multipart/alternative
        (
            "s",
            "t",
            {"headers": {"X-Bad": "a\r\nBcc: someone@example.test"}},
        ),  # header injection: refused there
    ],
)
def test_everything_else_is_left_to_the_email_package(
    subject: str, text: str, extra: dict[str, object]
) -> None:
    message = OutgoingMessage(ATTEMPT, "msg_1", "to@example.test", text, subject, **extra)  # type: ignore[arg-type]
    assert _channel("gw@example.test")._plain(message, "to@example.test") is None
