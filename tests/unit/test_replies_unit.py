"""Pure parts of replies: how `plan_route` starts a reply and says why; how a bot hook answer is read."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from gateway.bot_hooks import MAX_ANSWER, reply_in
from gateway.routing import (
    REPLY_BECAUSE,
    ChannelInfo,
    ContactFacts,
    Defaults,
    RetrySpec,
    RouteRequest,
    StateFacts,
    plan_route,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
WHATSAPP = ChannelInfo("whatsapp", True, None, "phone", 86400, delivery_receipts=True, read_receipts=True)
TELEGRAM = ChannelInfo("telegram", True, None, "identity", None, delivery_receipts=False, read_receipts=False)
SMS = ChannelInfo("sms", True, None, "phone", None, delivery_receipts=True, read_receipts=False)
EMAIL = ChannelInfo("email", True, None, "email", None, delivery_receipts=False, read_receipts=False)
CHANNELS = {"whatsapp": WHATSAPP, "telegram": TELEGRAM, "sms": SMS, "email": EMAIL}
DEFAULTS = Defaults(900.0, RetrySpec(3, 30.0, 2.0, 1800.0), "UTC")
ADA = ContactFacts(phone="+14155550100", email="ada@example.test", preferred_channel="email")
CLOSED = StateFacts(last_inbound_at=NOW - timedelta(hours=25), window_open_until=NOW - timedelta(hours=1))
OPEN = StateFacts(last_inbound_at=NOW - timedelta(hours=1), window_open_until=NOW + timedelta(hours=23))


def plan(
    states: dict[str, StateFacts], contact: ContactFacts = ADA, **request: object
) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    found = plan_route(contact, states, (), RouteRequest(**request), CHANNELS, DEFAULTS, NOW)  # type: ignore[arg-type]
    return [(s.channel, s.address, s.because) for s in found.steps], [
        (s.channel, s.reason) for s in found.skipped
    ]


def test_a_reply_starts_on_the_channel_and_address_they_wrote_from() -> None:
    steps, _ = plan(
        {"telegram": StateFacts(last_inbound_at=NOW)}, reply_channel="telegram", reply_address="7301"
    )
    assert steps[0] == ("telegram", "7301", REPLY_BECAUSE)  # before the preferred channel
    assert steps[1][0] == "email"
    steps, _ = plan({"whatsapp": OPEN}, reply_channel="whatsapp", reply_address="+14155550199")
    assert steps[0] == ("whatsapp", "+14155550199", REPLY_BECAUSE)


def test_a_reply_after_the_window_closed_says_why_it_uses_a_template_or_skips() -> None:
    steps, skipped = plan({"whatsapp": CLOSED}, reply_channel="whatsapp", reply_address=ADA.phone)
    assert skipped == [("whatsapp", f"{REPLY_BECAUSE}: window closed and no whatsapp template")]
    assert [s[0] for s in steps] == ["email", "sms"]
    steps, skipped = plan(
        {"whatsapp": CLOSED},
        reply_channel="whatsapp",
        reply_address=ADA.phone,
        templates=frozenset({"whatsapp"}),
    )
    assert steps[0] == ("whatsapp", ADA.phone, f"{REPLY_BECAUSE}: window closed, whatsapp template")
    assert skipped == []


def test_an_opted_out_reply_channel_keeps_the_opt_out_reason() -> None:
    found = plan_route(
        ADA,
        {"sms": StateFacts(opted_out=True)},
        (),
        RouteRequest(category="marketing", reply_channel="sms", reply_address=ADA.phone),
        CHANNELS,
        DEFAULTS,
        NOW,
    )
    assert found.steps == () and found.failure_reason == "opted-out"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (b"", (None, None)),
        (b"OK", (None, "answer is not JSON")),
        (b'{"ok": true}', (None, None)),
        (b'{"reply": null}', (None, None)),
        (b'["reply"]', (None, None)),
        (b'{"reply": "hi"}', (None, "reply: must be an object with the fields of a message's content")),
        (b'{"reply": {"text": 5}}', (None, "reply.text: Input should be a valid string")),
        (b'{"reply": {}}', (None, "reply: Value error, text is required unless templates are given")),
        (
            b'{"reply": {"text": "hi", "buttons": [{"id": "a"}]}}',
            (None, "reply.buttons[0].title: Field required"),
        ),
        (b'{"reply": {"text": "hi"}}', ({"text": "hi"}, None)),
        (
            b'{"reply": {"text": "hi", "templates": {"whatsapp": ' + b"[" * 30000 + b"]" * 30000 + b"}}}",
            (None, "answer nests deeper than 32 levels"),
        ),
    ],
)
def test_a_bot_hook_answer_is_a_reply_nothing_or_a_named_problem(
    answer: bytes, expected: tuple[object, str | None]
) -> None:
    assert reply_in(answer) == expected


def test_an_oversized_bot_hook_answer_is_refused() -> None:
    big = json.dumps({"reply": {"text": "x" * MAX_ANSWER}}).encode()
    assert reply_in(big) == (None, "answer larger than 64 KiB")
