"""SMTP replies and aiosmtplib exceptions map onto the gateway's error kinds."""

from __future__ import annotations

import aiosmtplib
import pytest

from fallbacks.email import EmailChannel, classify_exception, classify_smtp_error
from gateway.errors import ErrorKind
from gateway.settings import load_settings

REPLIES = [
    (550, "5.1.1 <bob@example.test>: User unknown", ErrorKind.UNREACHABLE),
    (550, "Mailbox unavailable", ErrorKind.UNREACHABLE),
    (551, "User not local", ErrorKind.UNREACHABLE),
    (554, "5.1.1 no such user", ErrorKind.UNREACHABLE),
    (550, "5.1.10 Recipient address rejected: null MX", ErrorKind.UNREACHABLE),
    (553, "5.1.3 Bad recipient address syntax", ErrorKind.INVALID_ADDRESS),
    (553, "Requested action not taken", ErrorKind.INVALID_ADDRESS),
    (501, "Syntax error in parameters", ErrorKind.INVALID_ADDRESS),
    (550, "5.1.3 Bad destination mailbox address syntax", ErrorKind.INVALID_ADDRESS),
    (554, "5.7.1 Message refused", ErrorKind.REJECTED),
    (550, "5.7.1 Relaying denied", ErrorKind.REJECTED),
    (550, "5.7.26 Unauthenticated email is not accepted", ErrorKind.REJECTED),
    (554, "Transaction failed", ErrorKind.REJECTED),
    (552, "5.3.4 Message too big", ErrorKind.REJECTED),
    (535, "5.7.8 Authentication credentials invalid", ErrorKind.REJECTED),
    (421, "4.3.2 Service shutting down", ErrorKind.TRANSIENT),
    (450, "4.2.1 Mailbox busy", ErrorKind.TRANSIENT),
    (451, "4.3.0 Try again later", ErrorKind.TRANSIENT),
    (452, "4.5.3 Too many recipients", ErrorKind.TRANSIENT),
    (-1, "Malformed SMTP response line", ErrorKind.TRANSIENT),
]


@pytest.mark.parametrize(("code", "message", "kind"), REPLIES)
def test_classify_smtp_error(code: int, message: str, kind: ErrorKind) -> None:
    error = classify_smtp_error(code, message)
    assert error.kind is kind
    assert error.code == str(code)
    assert message in error.detail


ADDRESS = "bob@example.test"

EXCEPTIONS: list[tuple[BaseException, ErrorKind, str | None]] = [
    (
        aiosmtplib.SMTPRecipientsRefused(
            [aiosmtplib.SMTPRecipientRefused(550, "5.1.1 User unknown", ADDRESS)]
        ),
        ErrorKind.UNREACHABLE,
        "550",
    ),
    (
        aiosmtplib.SMTPRecipientRefused(553, "5.1.3 Bad address", ADDRESS),
        ErrorKind.INVALID_ADDRESS,
        "553",
    ),
    (aiosmtplib.SMTPDataError(554, "5.7.1 Spam"), ErrorKind.REJECTED, "554"),
    (aiosmtplib.SMTPDataError(451, "4.3.0 Later"), ErrorKind.TRANSIENT, "451"),
    (aiosmtplib.SMTPResponseException(421, "4.3.2 Bye"), ErrorKind.TRANSIENT, "421"),
    # A refused sender is our configuration, never the recipient's fault.
    (aiosmtplib.SMTPSenderRefused(550, "Not allowed", "gw@x"), ErrorKind.REJECTED, "550"),
    (aiosmtplib.SMTPSenderRefused(451, "Greylisted", "gw@x"), ErrorKind.TRANSIENT, "451"),
    (aiosmtplib.SMTPAuthenticationError(535, "5.7.8 Bad creds"), ErrorKind.REJECTED, "535"),
    (aiosmtplib.SMTPHeloError(550, "Go away"), ErrorKind.REJECTED, "550"),
    (aiosmtplib.SMTPConnectError("refused"), ErrorKind.TRANSIENT, None),
    (aiosmtplib.SMTPConnectResponseError(554, "No service"), ErrorKind.TRANSIENT, None),
    (aiosmtplib.SMTPConnectTimeoutError("connect timed out"), ErrorKind.TRANSIENT, None),
    (aiosmtplib.SMTPReadTimeoutError("read timed out"), ErrorKind.TRANSIENT, None),
    (aiosmtplib.SMTPServerDisconnected("EOF"), ErrorKind.TRANSIENT, None),
    (TimeoutError(), ErrorKind.TRANSIENT, None),
    (ConnectionRefusedError(111, "Connection refused"), ErrorKind.TRANSIENT, None),
    (aiosmtplib.SMTPNotSupported("SMTPUTF8 is not supported"), ErrorKind.REJECTED, None),
    (UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates"), ErrorKind.REJECTED, None),
    (ValueError("Address contains a line break"), ErrorKind.INVALID_ADDRESS, None),
    (aiosmtplib.SMTPException("something odd"), ErrorKind.TRANSIENT, None),
]


@pytest.mark.parametrize(("exc", "kind", "code"), EXCEPTIONS)
def test_classify_exception(exc: BaseException, kind: ErrorKind, code: str | None) -> None:
    error = classify_exception(exc, ADDRESS)
    assert error.kind is kind
    assert error.code == code


def test_recipients_refused_uses_our_recipient() -> None:
    exc = aiosmtplib.SMTPRecipientsRefused(
        [
            aiosmtplib.SMTPRecipientRefused(451, "4.3.0 Later", "other@example.test"),
            aiosmtplib.SMTPRecipientRefused(553, "5.1.3 Bad", ADDRESS),
        ]
    )
    assert classify_exception(exc, ADDRESS).kind is ErrorKind.INVALID_ADDRESS


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({}, "GATEWAY_SMTP_HOST is not set"),
        ({"smtp_host": "mail.example.test"}, "GATEWAY_SMTP_FROM is not set"),
        ({"smtp_from": "gw@example.test"}, "GATEWAY_SMTP_HOST is not set"),
        ({"smtp_host": "mail.example.test", "smtp_from": "gw@example.test"}, None),
    ],
)
def test_disabled_reason(overrides: dict[str, str], reason: str | None) -> None:
    settings = load_settings(environ={}, overrides=overrides)
    assert EmailChannel.disabled_reason(settings) == reason
