"""Twilio error classification and status-callback parsing of the SMS channel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from fallbacks.sms import SmsChannel, classify_twilio_error, validity_period
from gateway.channels.base import WebhookRequest
from gateway.errors import ErrorKind
from gateway.settings import Settings, load_settings

TWILIO = {
    "twilio_account_sid": "AC" + "0" * 32,
    "twilio_auth_token": "token",
    "twilio_from": "+15005550006",
}


def make_settings(**overrides: str | None) -> Settings:
    """Settings from nothing but the given overrides."""
    return load_settings(environ={}, overrides=overrides)


@pytest.mark.parametrize(
    ("code", "http_status", "kind"),
    [
        (21211, 400, ErrorKind.INVALID_ADDRESS),
        (21614, 400, ErrorKind.UNREACHABLE),
        (21408, 400, ErrorKind.REJECTED),
        (21610, 400, ErrorKind.OPTED_OUT),
        (30003, None, ErrorKind.TRANSIENT),
        (30004, None, ErrorKind.BLOCKED),
        (30005, None, ErrorKind.UNREACHABLE),
        (30006, None, ErrorKind.UNREACHABLE),
        (30007, None, ErrorKind.BLOCKED),
        (30008, None, ErrorKind.TRANSIENT),
        (63003, None, ErrorKind.UNREACHABLE),
        (63016, None, ErrorKind.WINDOW_CLOSED),
        (63024, None, ErrorKind.UNREACHABLE),
        (63014, None, ErrorKind.BLOCKED),
        (20429, 429, ErrorKind.RATE_LIMITED),
        (63018, 429, ErrorKind.RATE_LIMITED),
        # A known code decides, whatever the HTTP status says.
        (21211, 500, ErrorKind.INVALID_ADDRESS),
    ],
)
def test_known_codes_follow_the_providers_table(code: int, http_status: int | None, kind: ErrorKind) -> None:
    error = classify_twilio_error(code, http_status, "detail from Twilio")
    assert error.kind == kind
    assert error.code == str(code)
    assert "detail from Twilio" in error.detail


@pytest.mark.parametrize(
    ("code", "http_status", "kind"),
    [
        (12345, 503, ErrorKind.TRANSIENT),
        (12345, 500, ErrorKind.TRANSIENT),
        (12345, None, ErrorKind.TRANSIENT),
        (12345, 400, ErrorKind.REJECTED),
        (20003, 401, ErrorKind.REJECTED),
        (None, 429, ErrorKind.RATE_LIMITED),
        (None, 502, ErrorKind.TRANSIENT),
        (None, 404, ErrorKind.REJECTED),
        (None, None, ErrorKind.TRANSIENT),
    ],
)
def test_unknown_codes_fall_back_on_the_http_status(
    code: int | None, http_status: int | None, kind: ErrorKind
) -> None:
    error = classify_twilio_error(code, http_status, "")
    assert error.kind == kind
    assert error.code == (str(code) if code is not None else None)
    assert error.detail


def test_stop_opt_out_is_named_in_the_detail() -> None:
    assert "STOP" in classify_twilio_error(21610, 400, "").detail


def test_validity_period_is_clamped_to_twilios_range() -> None:
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert validity_period(None, now) is None
    assert validity_period(now + timedelta(minutes=5), now) == 300
    # Stored times are naive UTC.
    assert validity_period((now + timedelta(seconds=90)).replace(tzinfo=None), now) == 90
    assert validity_period(now + timedelta(days=2), now) == 36000
    assert validity_period(now - timedelta(minutes=1), now) == 1


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        (TWILIO, None),
        ({**TWILIO, "twilio_from": None, "twilio_messaging_service_sid": "MG1"}, None),
        ({**TWILIO, "twilio_account_sid": None}, "GATEWAY_TWILIO_ACCOUNT_SID is not set"),
        ({**TWILIO, "twilio_auth_token": None}, "GATEWAY_TWILIO_AUTH_TOKEN is not set"),
        (
            {**TWILIO, "twilio_from": None},
            "GATEWAY_TWILIO_FROM (or GATEWAY_TWILIO_MESSAGING_SERVICE_SID) is not set",
        ),
    ],
)
def test_disabled_reason_names_missing_variables(
    overrides: dict[str, str | None], reason: str | None
) -> None:
    assert SmsChannel.disabled_reason(make_settings(**overrides)) == reason


def test_disabled_reason_lists_every_missing_variable() -> None:
    reason = SmsChannel.disabled_reason(make_settings())
    assert reason is not None
    assert "GATEWAY_TWILIO_ACCOUNT_SID" in reason and "GATEWAY_TWILIO_AUTH_TOKEN" in reason
    assert reason.endswith("are not set")


def status_request(form: dict[str, str], attempt: str | None = "att_1") -> WebhookRequest:
    """A status callback as the webhook layer hands it over."""
    query = {"attempt": attempt} if attempt else {}
    url = "https://gw.example/webhooks/twilio/status" + (f"?attempt={attempt}" if attempt else "")
    return WebhookRequest(url=url, method="POST", headers={}, body=b"", form=form, query=query)


@pytest.mark.parametrize(
    ("twilio_status", "status"),
    [
        ("queued", "accepted"),
        ("accepted", "accepted"),
        ("sending", "accepted"),
        ("scheduled", "accepted"),
        ("sent", "sent"),
        ("delivered", "delivered"),
        ("read", "read"),
    ],
)
def test_progress_statuses_map_to_receipts(twilio_status: str, status: str) -> None:
    channel = SmsChannel(make_settings(**TWILIO))
    request = status_request({"MessageSid": "SM1", "MessageStatus": twilio_status})
    [update] = channel.parse_status_webhook(request)
    assert (update.provider_message_id, update.status, update.error) == ("SM1", status, None)
    assert update.attempt_id == "att_1"


@pytest.mark.parametrize(
    ("twilio_status", "error_code", "kind", "code"),
    [
        ("undelivered", "30005", ErrorKind.UNREACHABLE, "30005"),
        ("undelivered", "30006", ErrorKind.UNREACHABLE, "30006"),
        ("failed", "30007", ErrorKind.BLOCKED, "30007"),
        ("failed", "30008", ErrorKind.TRANSIENT, "30008"),
        ("failed", "63016", ErrorKind.WINDOW_CLOSED, "63016"),
        ("failed", "", ErrorKind.TRANSIENT, None),
        ("undelivered", "not-a-number", ErrorKind.TRANSIENT, None),
        ("canceled", "", ErrorKind.REJECTED, None),
    ],
)
def test_failures_carry_a_classified_error(
    twilio_status: str, error_code: str, kind: ErrorKind, code: str | None
) -> None:
    channel = SmsChannel(make_settings(**TWILIO))
    form = {"MessageSid": "SM2", "MessageStatus": twilio_status, "ErrorCode": error_code}
    [update] = channel.parse_status_webhook(status_request(form, attempt=None))
    assert update.status == "failed"
    assert update.error is not None
    assert (update.error.kind, update.error.code) == (kind, code)
    assert update.attempt_id is None


@pytest.mark.parametrize(
    "form",
    [
        {"MessageSid": "SM3", "MessageStatus": "receiving"},
        {"MessageSid": "SM3", "MessageStatus": ""},
    ],
)
def test_unknown_statuses_give_no_update(form: dict[str, str]) -> None:
    channel = SmsChannel(make_settings(**TWILIO))
    assert channel.parse_status_webhook(status_request(form)) == []


def test_webhooks_without_a_signature_are_refused() -> None:
    channel = SmsChannel(make_settings(**TWILIO))
    assert not channel.verify_webhook(status_request({"MessageSid": "SM4"}))


def test_a_status_callback_without_its_sid_is_malformed() -> None:
    """Answered 400 by the webhook view, so a signed but wrongly shaped call stores nothing."""
    channel = SmsChannel(make_settings(**TWILIO))
    with pytest.raises(ValueError):
        channel.parse_status_webhook(status_request({"MessageStatus": "delivered"}))
