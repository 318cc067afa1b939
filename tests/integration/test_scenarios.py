"""The foundation's journeys, end to end: HTTP in, simulators out, on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.local import LocalGateway
from gateway.simulators.smtp import SmtpSimulator
from gateway.simulators.twilio import Behaviour, TwilioSimulator

FINAL = ("delivered", "read", "sent", "failed", "expired", "cancelled")


def wait_for(
    local: LocalGateway, message_id: str, done: Callable[[dict[str, Any]], bool], timeout: float = 15
):
    deadline = time.monotonic() + timeout
    while True:
        message = local.call("GET", f"/v1/messages/{message_id}").body
        if done(message):
            return message
        assert time.monotonic() < deadline, f"message did not get there in {timeout}s: {message}"
        time.sleep(0.05)


def send(local: LocalGateway, body: dict[str, Any]) -> dict[str, Any]:
    answer = local.call("POST", "/v1/messages", body)
    assert answer.status == 202, answer.body
    return answer.body


def journey(message: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(a["channel"], a["status"], (a["error"] or {}).get("kind")) for a in message["attempts"]]


def test_delivered_sms(gateway: LocalGateway, twilio: TwilioSimulator) -> None:
    accepted = send(gateway, {"to": {"phone": "+1 415 555 0100"}, "content": {"text": "Order 42 shipped"}})
    assert accepted["status"] == "queued"
    assert [s["channel"] for s in accepted["plan"]] == ["sms"]
    message = wait_for(gateway, accepted["id"], lambda m: m["status"] == "delivered")
    assert message["channel"] == "sms"
    assert journey(message) == [("sms", "delivered", None)]
    assert message["attempts"][0]["provider_message_id"].startswith("SM")
    assert [m["body"] for m in twilio.messages] == ["Order 42 shipped"]
    assert twilio.messages[0]["to"] == "+14155550100"


def test_permanent_sms_error_falls_back_to_email(
    gateway: LocalGateway, twilio: TwilioSimulator, smtp: SmtpSimulator
) -> None:
    accepted = send(
        gateway,
        {
            "to": {"phone": "+14155521211", "email": "Ada@Example.test"},
            "content": {"text": "hi", "subject": "S"},
        },
    )
    message = wait_for(gateway, accepted["id"], lambda m: m["status"] == "sent" and m["channel"] == "email")
    assert journey(message) == [("sms", "failed", "invalid_address"), ("email", "sent", None)]
    assert message["attempts"][0]["error"]["code"] == "21211"
    assert [m["rcpt_tos"] for m in smtp.messages] == [["ada@example.test"]]
    assert smtp.messages[0]["subject"] == "S"


def test_transient_sms_error_is_retried_then_delivered(
    gateway: LocalGateway, twilio: TwilioSimulator
) -> None:
    twilio.set_behaviour("+14155550101", Behaviour(kind="error", code=30008, fail_times=1))
    accepted = send(
        gateway, {"to": {"phone": "+14155550101", "email": "a@b.test"}, "content": {"text": "hi"}}
    )
    message = wait_for(gateway, accepted["id"], lambda m: m["status"] == "delivered")
    assert journey(message) == [("sms", "failed", "transient"), ("sms", "delivered", None)]
    assert [a["try_number"] for a in message["attempts"]] == [1, 2]
    assert twilio.sends_to("+14155550101") == 2


def test_transient_errors_exhaust_retries_then_fall_back(
    gateway: LocalGateway, twilio: TwilioSimulator, smtp: SmtpSimulator
) -> None:
    accepted = send(
        gateway, {"to": {"phone": "+14155530008", "email": "a@b.test"}, "content": {"text": "hi"}}
    )
    message = wait_for(gateway, accepted["id"], lambda m: m["channel"] == "email" and m["status"] == "sent")
    # retry_attempts defaults to 3 tries per step
    assert journey(message) == [("sms", "failed", "transient")] * 3 + [("email", "sent", None)]
    created = [datetime.fromisoformat(a["created_at"].replace("Z", "+00:00")) for a in message["attempts"]]
    gaps = [(b - a).total_seconds() for a, b in zip(created, created[1:], strict=False)]
    assert gaps[1] >= 0.15  # backoff (0.2 s, no jitter in tests) separates the tries


def test_silent_sms_times_out_into_email(gateway: LocalGateway, smtp: SmtpSimulator) -> None:
    accepted = send(
        gateway,
        {
            "to": {"phone": "+14155599999", "email": "a@b.test"},
            "content": {"text": "hi"},
            "fallback": {"after": "1s"},
        },
    )
    assert [(s["channel"], s["after"], s["until"]) for s in accepted["plan"]] == [
        ("sms", "1s", "delivered"),
        ("email", "1s", "accepted"),
    ]
    started = time.monotonic()
    message = wait_for(gateway, accepted["id"], lambda m: m["channel"] == "email" and m["status"] == "sent")
    assert time.monotonic() - started >= 0.8
    assert journey(message) == [("sms", "accepted", "timeout"), ("email", "sent", None)]
    assert len(smtp.messages) == 1


def test_email_550_with_nothing_left_fails_with_a_reason(gateway: LocalGateway, smtp: SmtpSimulator) -> None:
    accepted = send(gateway, {"to": {"email": "unknown-1@b.test"}, "content": {"text": "hi"}})
    message = wait_for(gateway, accepted["id"], lambda m: m["status"] == "failed")
    assert message["reason"] == "all-channels-failed"
    assert journey(message) == [("email", "failed", "unreachable")]
    assert message["attempts"][0]["error"]["code"] == "550"
    assert smtp.messages == []


def test_explicit_channels_order_is_honoured_without_fallback_outside_it(
    gateway: LocalGateway, twilio: TwilioSimulator, smtp: SmtpSimulator
) -> None:
    first = send(
        gateway,
        {
            "to": {"phone": "+14155550102", "email": "a@b.test"},
            "content": {"text": "x"},
            "channels": ["email", "sms"],
        },
    )
    assert [s["channel"] for s in first["plan"]] == ["email", "sms"]
    assert all(s["because"] == "requested channels" for s in first["plan"])
    message = wait_for(gateway, first["id"], lambda m: m["status"] == "sent")
    assert journey(message) == [("email", "sent", None)]
    only_sms = send(
        gateway,
        {"to": {"phone": "+14155521211", "email": "c@b.test"}, "content": {"text": "y"}, "channels": ["sms"]},
    )
    message = wait_for(gateway, only_sms["id"], lambda m: m["status"] == "failed")
    assert journey(message) == [("sms", "failed", "invalid_address")]
    assert [m["rcpt_tos"] for m in smtp.messages] == [["a@b.test"]]  # never c@b.test
    assert twilio.sends_to("+14155550102") == 0


def _quiet_now_rule(zone: str) -> dict[str, Any]:
    local = datetime.now(UTC).astimezone(ZoneInfo(zone))
    start = (local - timedelta(hours=1)).strftime("%H:%M")
    end = (local + timedelta(hours=1)).strftime("%H:%M")
    return {
        "name": "quiet-marketing",
        "order": 1,
        "when": {"category": ["marketing", "otp"]},
        "route": [{"channel": "sms"}],
        "quiet_hours": {"start": start, "end": end},
    }


def test_quiet_hours_defer_marketing_but_not_otp(gateway: LocalGateway, twilio: TwilioSimulator) -> None:
    rule = gateway.call("POST", "/v1/routing-rules", _quiet_now_rule("America/Los_Angeles"))
    assert rule.status == 201, rule.body
    marketing = send(
        gateway, {"to": {"phone": "+14155550103"}, "content": {"text": "Sale!"}, "category": "marketing"}
    )
    assert marketing["status"] == "scheduled"
    otp = send(gateway, {"to": {"phone": "+14155550104"}, "content": {"text": "123456"}, "category": "otp"})
    assert otp["status"] == "queued"
    wait_for(gateway, otp["id"], lambda m: m["status"] == "delivered")
    message = gateway.call("GET", f"/v1/messages/{marketing['id']}").body
    assert message["status"] == "scheduled"
    assert journey(message) == [("sms", "pending", None)]
    assert twilio.sends_to("+14155550103") == 0


def test_ttl_expiry(gateway: LocalGateway, twilio: TwilioSimulator) -> None:
    # 20429: Twilio keeps rate-limiting; retries do not count as tries, so only the ttl ends them.
    accepted = send(gateway, {"to": {"phone": "+14155520429"}, "content": {"text": "x"}, "ttl": "2s"})
    message = wait_for(gateway, accepted["id"], lambda m: m["status"] == "expired")
    assert message["reason"] == "expired"
    assert {k for _, _, k in journey(message)} <= {"rate_limited", None}
    assert twilio.sends_to("+14155520429") >= 1  # tried, throttled, and never counted as a failed try


def test_send_at_waits_until_then_sends(gateway: LocalGateway, twilio: TwilioSimulator) -> None:
    at = datetime.now(UTC) + timedelta(seconds=1.5)
    accepted = send(
        gateway,
        {"to": {"phone": "+14155550105"}, "content": {"text": "later"}, "send_at": at.isoformat()},
    )
    assert accepted["status"] == "scheduled"
    time.sleep(0.5)
    assert twilio.sends_to("+14155550105") == 0
    message = wait_for(gateway, accepted["id"], lambda m: m["status"] == "delivered")
    received = datetime.fromisoformat(twilio.messages[0]["received_at"])
    assert received >= at - timedelta(milliseconds=50)
    assert twilio.sends_to("+14155550105") == 1
    assert message["send_at"] is not None


def test_cancel(gateway: LocalGateway, twilio: TwilioSimulator) -> None:
    at = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    accepted = send(gateway, {"to": {"phone": "+14155550106"}, "content": {"text": "x"}, "send_at": at})
    cancelled = gateway.call("POST", f"/v1/messages/{accepted['id']}/cancel")
    assert cancelled.status == 200
    assert cancelled.body["status"] == "cancelled"
    assert journey(cancelled.body) == [("sms", "superseded", None)]
    again = gateway.call("POST", f"/v1/messages/{accepted['id']}/cancel")
    assert again.status == 409
    assert again.body["type"] == "conflict"
    delivered = send(gateway, {"to": {"phone": "+14155550107"}, "content": {"text": "y"}})
    wait_for(gateway, delivered["id"], lambda m: m["status"] == "delivered")
    late = gateway.call("POST", f"/v1/messages/{delivered['id']}/cancel")
    assert late.status == 409
    assert twilio.sends_to("+14155550106") == 0


def test_late_receipt_on_an_earlier_step_does_not_move_the_message_backwards(
    gateway: LocalGateway, twilio: TwilioSimulator
) -> None:
    twilio.set_behaviour("+14155550108", Behaviour(kind="deliver", latency=0))
    accepted = send(
        gateway,
        {
            "to": {"phone": "+14155550108", "email": "a@b.test"},
            "content": {"text": "x"},
            "channels": ["sms", "email"],
            "fallback": {"until": "read", "after": "0.3s"},
        },
    )
    # SMS cannot report "read", so the step completes on acceptance instead of waiting.
    assert accepted["plan"][0]["until"] == "accepted"
    message = wait_for(gateway, accepted["id"], lambda m: m["status"] == "delivered")
    assert journey(message) == [("sms", "delivered", None)]
