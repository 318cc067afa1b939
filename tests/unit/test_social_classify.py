"""Provider errors of the six social adapters map onto the gateway's error kinds (PROVIDERS.md tables)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.channels.discord import classify_discord_error
from gateway.channels.line import classify_line_error, retry_key
from gateway.channels.telegram import classify_telegram_error
from gateway.channels.viber import classify_viber_status
from gateway.channels.wechat import classify_wechat_error
from gateway.channels.x import classify_x_error, seconds_until_reset
from gateway.errors import ErrorKind

K = ErrorKind


@pytest.mark.parametrize(
    ("status", "description", "kind"),
    [
        (403, "Forbidden: bot was blocked by the user", K.BLOCKED),
        (403, "Forbidden: user is deactivated", K.UNREACHABLE),
        (403, "Forbidden: bot can't initiate conversation with a user", K.UNREACHABLE),
        (403, "Forbidden: bot was kicked from the group chat", K.BLOCKED),
        (400, "Bad Request: chat not found", K.INVALID_ADDRESS),
        (400, "Bad Request: message text is empty", K.REJECTED),
        (401, "Unauthorized", K.REJECTED),
        (429, "Too Many Requests: retry after 7", K.RATE_LIMITED),
        (500, "Internal Server Error", K.TRANSIENT),
        (502, "", K.TRANSIENT),
    ],
)
def test_telegram(status: int, description: str, kind: ErrorKind) -> None:
    error = classify_telegram_error(status, description, 7.0 if status == 429 else None)
    assert error.kind == kind
    assert error.retry_after == (7.0 if status == 429 else None)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (
            400,
            {"message": "The request body has 1 error(s)", "details": [{"property": "to"}]},
            K.INVALID_ADDRESS,
        ),
        (
            400,
            {"message": "The request body has 1 error(s)", "details": [{"property": "messages"}]},
            K.REJECTED,
        ),
        (401, {"message": "Authentication failed."}, K.REJECTED),
        (403, {"message": "Not allowed"}, K.REJECTED),
        (429, {"message": "You have reached your monthly limit."}, K.RATE_LIMITED),
        (429, {"message": "The API rate limit has been exceeded. Try again later."}, K.RATE_LIMITED),
        (500, {"message": "An error occurred in the server"}, K.TRANSIENT),
        (503, None, K.TRANSIENT),
    ],
)
def test_line(status: int, body: dict[str, Any] | None, kind: ErrorKind) -> None:
    assert classify_line_error(status, body).kind == kind


def test_line_retry_key_is_a_uuid_shared_by_every_try_of_a_message() -> None:
    key = retry_key("msg_0001")
    assert key == retry_key("msg_0001") != retry_key("msg_0002")
    assert len(key) == 36 and key.count("-") == 4


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (2, K.REJECTED),
        (3, K.REJECTED),
        (4, K.REJECTED),
        (5, K.UNREACHABLE),
        (6, K.BLOCKED),
        (7, K.REJECTED),
        (8, K.REJECTED),
        (9, K.REJECTED),
        (10, K.REJECTED),
        (11, K.UNREACHABLE),
        (12, K.RATE_LIMITED),
        (99, K.REJECTED),
    ],
)
def test_viber(status: int, kind: ErrorKind) -> None:
    error = classify_viber_status(status, "whatever")
    assert error.kind == kind
    assert error.code == str(status)


@pytest.mark.parametrize(
    ("status", "problem", "kind"),
    [
        (403, {"title": "Forbidden", "detail": "You are not permitted to send Direct Messages"}, K.BLOCKED),
        (429, {"title": "Too Many Requests"}, K.RATE_LIMITED),
        (503, {"title": "Service Unavailable"}, K.TRANSIENT),
        (500, None, K.TRANSIENT),
        (
            400,
            {"errors": [{"parameters": {"participant_id": ["x"]}}], "title": "Invalid Request"},
            K.INVALID_ADDRESS,
        ),
        (404, {"title": "Not Found Error"}, K.INVALID_ADDRESS),
        (400, {"title": "Invalid Request", "detail": "text too long"}, K.REJECTED),
        (401, {"title": "Unauthorized"}, K.REJECTED),
    ],
)
def test_x(status: int, problem: dict[str, Any] | None, kind: ErrorKind) -> None:
    assert classify_x_error(status, problem).kind == kind


def test_x_rate_limit_reset_becomes_a_delay() -> None:
    assert seconds_until_reset({"x-rate-limit-reset": "1000"}, now=997.5) == 2.5
    assert seconds_until_reset({"X-Rate-Limit-Reset": "1000"}, now=1005) == 0.0
    assert seconds_until_reset({}, now=1000) is None
    error = classify_x_error(429, {"title": "Too Many Requests"}, 2.5)
    assert error.retry_after == 2.5


@pytest.mark.parametrize(
    ("errcode", "kind"),
    [
        (45015, K.WINDOW_CLOSED),
        (45047, K.WINDOW_CLOSED),
        (43004, K.BLOCKED),
        (40003, K.INVALID_ADDRESS),
        (45009, K.RATE_LIMITED),
        (45011, K.RATE_LIMITED),
        (-1, K.TRANSIENT),
        (40001, K.REJECTED),  # only after the one refresh: a config problem
        (42001, K.REJECTED),
        (40013, K.REJECTED),
        (40037, K.REJECTED),
        (12345, K.REJECTED),
    ],
)
def test_wechat(errcode: int, kind: ErrorKind) -> None:
    assert classify_wechat_error(errcode, "msg").kind == kind


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (403, {"message": "Cannot send messages to this user", "code": 50007}, K.BLOCKED),
        (404, {"message": "Unknown User", "code": 10013}, K.INVALID_ADDRESS),
        (400, {"message": "Invalid Recipient(s)", "code": 50033}, K.INVALID_ADDRESS),
        (400, {"message": "Invalid Form Body", "code": 50035}, K.REJECTED),
        (403, {"message": "Missing Access", "code": 50001}, K.REJECTED),
        (401, {"message": "401: Unauthorized", "code": 0}, K.REJECTED),
        (
            429,
            {"message": "You are being rate limited.", "retry_after": 0.25, "global": False},
            K.RATE_LIMITED,
        ),
        (502, {"message": "502: Bad Gateway", "code": 0}, K.TRANSIENT),
        (500, None, K.TRANSIENT),
    ],
)
def test_discord(status: int, body: dict[str, Any] | None, kind: ErrorKind) -> None:
    error = classify_discord_error(status, body, retry_after=1.0)
    assert error.kind == kind
    if status == 429:
        assert error.retry_after == 0.25  # the body's precise value wins over the Retry-After header
