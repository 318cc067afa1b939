"""Telegram, LINE, Viber, X, WeChat and Discord over real sockets: sends, receipts, blocks and fallback,
rate limits, LINE's retry key, a country rule, and WeChat's window with templates."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from gateway.channels.line import retry_key
from gateway.local import LocalGateway
from gateway.simulators.discord import DiscordSimulator
from gateway.simulators.line import LineSimulator
from gateway.simulators.smtp import SmtpSimulator
from gateway.simulators.social import Behaviour
from gateway.simulators.telegram import TelegramSimulator
from gateway.simulators.twilio import TwilioSimulator
from gateway.simulators.viber import ViberSimulator
from gateway.simulators.wechat import WeChatSimulator
from gateway.simulators.x import XSimulator

SOCIAL = ("telegram", "line", "viber", "x", "wechat", "discord")
UNPACED = ",".join(f"{name}=0" for name in ("sms", "email", *SOCIAL))
FINAL = ("sent", "delivered", "read", "failed")


@dataclass
class Sims:
    telegram: TelegramSimulator
    line: LineSimulator
    viber: ViberSimulator
    x: XSimulator
    wechat: WeChatSimulator
    discord: DiscordSimulator

    def settings(self) -> dict[str, Any]:
        merged: dict[str, Any] = {"channel_rates": UNPACED}
        for name in SOCIAL:
            merged |= getattr(self, name).gateway_settings()
        return merged


@pytest.fixture
def sims() -> Iterator[Sims]:
    with (
        TelegramSimulator(retry_after=1) as telegram,
        LineSimulator() as line,
        # Receipts 0.2 s after the send: on PostgreSQL a receipt that races the send's own commit can stay
        # unapplied (EarlyStatus in gateway/services/provider_webhooks.py); these tests are about Viber.
        ViberSimulator(callback_delay=0.2) as viber,
        XSimulator(rate_limit_delay=1.0) as x,
        WeChatSimulator(callback_delay=0.05) as wechat,
        DiscordSimulator(retry_after=0.6) as discord,
    ):
        yield Sims(telegram, line, viber, x, wechat, discord)


@pytest.fixture
def social(make_gateway: Callable[..., LocalGateway], sims: Sims) -> LocalGateway:
    local = make_gateway(**sims.settings())
    for name in SOCIAL:
        getattr(sims, name).connect(local.url)
    return local


def send(local: LocalGateway, body: dict[str, Any]) -> dict[str, Any]:
    answer = local.call("POST", "/v1/messages", body)
    assert answer.status == 202, answer.body
    return answer.body


def settle(local: LocalGateway, message_id: str, done: Callable[[dict[str, Any]], bool] | None = None) -> Any:
    """Poll a message until `done` (default: a final status with nothing pending)."""
    deadline = time.monotonic() + 15
    while True:
        message = local.call("GET", f"/v1/messages/{message_id}").body
        pending = any(a["status"] in ("pending", "sending") for a in message["attempts"])
        if done(message) if done else message["status"] in FINAL and not pending:
            return message
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def channel_row(local: LocalGateway, contact_id: str, channel: str) -> dict[str, Any]:
    rows = local.call("GET", f"/v1/contacts/{contact_id}/channels").body["data"]
    return next(r for r in rows if r["channel"] == channel)


def test_each_channel_delivers_or_is_accepted(social: LocalGateway, sims: Sims) -> None:
    assert sims.wechat.user_message("o-wx-ok", "hello") == 200  # opens WeChat's 48-hour window
    ids = {"telegram": "5550001", "line": "U-ok-1", "viber": "vb-ok-1", "x": "2001", "wechat": "o-wx-ok"}
    ids["discord"] = "310000000000000001"
    sent = {
        name: send(social, {"to": {"identities": {name: ids[name]}}, "content": {"text": f"hi on {name}"}})
        for name in SOCIAL
    }
    for name, answer in sent.items():
        assert [step["channel"] for step in answer["plan"]] == [name]
        because = "last wrote from this channel" if name == "wechat" else "known identity"
        assert answer["plan"][0]["because"] == because
        viber_receipt: Callable[[dict[str, Any]], bool] = lambda m: m["status"] == "delivered"  # noqa: E731
        message = settle(social, answer["id"], viber_receipt if name == "viber" else None)
        attempt = message["attempts"][0]
        if name == "viber":  # the only one of the six with delivery receipts
            assert (message["status"], attempt["status"]) == ("delivered", "delivered")
        else:
            assert (message["status"], attempt["status"]) == ("sent", "accepted"), message
        assert message["channel"] == name and attempt["provider_message_id"]
    assert [m["text"] for m in sims.telegram.messages] == ["hi on telegram"]
    assert [(m["to"], m["retry_key"]) for m in sims.line.messages] == [
        ("U-ok-1", retry_key(sent["line"]["id"]))
    ]
    assert sims.viber.messages[0]["sender"] == "Simulator"
    assert sims.x.messages[0]["participant_id"] == "2001"
    assert [(m["kind"], m["text"]) for m in sims.wechat.messages] == [("custom", "hi on wechat")]
    assert sims.discord.messages[0]["content"] == "hi on discord"


def test_no_receipts_means_accepted_and_asking_for_delivered_is_a_422(social: LocalGateway) -> None:
    explained = social.call("POST", "/v1/routing/explain", {"to": {"identities": {"line": "U-e"}}}).body
    assert [(s["channel"], s["until"]) for s in explained["plan"]] == [("line", "accepted")]
    for name in ("telegram", "line", "x", "wechat", "discord"):
        rule = {"name": f"r-{name}", "route": [{"channel": name, "until": "delivered"}]}
        answer = social.call("POST", "/v1/routing-rules", rule)
        assert answer.status == 422, answer.body
        assert answer.body["errors"][0]["field"] == "route.0.until"
    viber = {"name": "viber-read", "route": [{"channel": "viber", "until": "read"}]}
    assert social.call("POST", "/v1/routing-rules", viber).status == 201


def test_blocking_errors_mark_blocked_and_the_next_message_falls_back(
    social: LocalGateway, sims: Sims, smtp: SmtpSimulator
) -> None:
    blocked = {
        "telegram": ("blocked-1", sims.telegram),
        "viber": ("not_subscribed-1", sims.viber),
        "x": ("blocked-1", sims.x),
        "wechat": ("not_following-1", sims.wechat),
        "discord": ("blocked-1", sims.discord),
    }
    template = {"wechat": {"template_id": "tpl-order", "data": {"order": "42"}}}

    def body(name: str, address: str, text: str) -> dict[str, Any]:
        to = {"identities": {name: address}, "email": f"{name}-blocked@demo.test"}
        return {"to": to, "content": {"text": text, "templates": template}, "channels": [name, "email"]}

    first = {name: send(social, body(name, addr, "first")) for name, (addr, _) in blocked.items()}
    for name, answer in first.items():
        message = settle(social, answer["id"])
        assert message["attempts"][0]["error"]["kind"] == "blocked", message
        assert (message["channel"], message["status"]) == ("email", "sent")
        assert channel_row(social, answer["contact_id"], name)["reachability"] == "blocked"
    for name, (address, sim) in blocked.items():
        again = send(social, body(name, address, "second"))
        assert [s["channel"] for s in again["plan"]] == ["email"]
        assert again["skipped"][0]["channel"] == name
        assert again["skipped"][0]["reason"].startswith("blocked")
        settle(social, again["id"])
        assert sim.sends_to(address) == 1  # never tried again
    assert len(smtp.messages) == 2 * len(blocked)


def test_rate_limits_wait_the_providers_delay_and_do_not_count_as_tries(
    social: LocalGateway, sims: Sims
) -> None:
    cases = {
        "telegram": ("5550042", sims.telegram, 1.0),  # parameters.retry_after = 1
        "x": ("2042", sims.x, 1.0),  # x-rate-limit-reset one second (rounded up) ahead
        "discord": ("310000000000000042", sims.discord, 0.6),  # retry_after = 0.6
    }
    for address, sim, _ in cases.values():
        sim.set_behaviour(address, Behaviour("error", "rate_limited", fail_times=1))
    sent = {
        name: send(social, {"to": {"identities": {name: address}}, "content": {"text": "later"}})
        for name, (address, _, _) in cases.items()
    }
    for name, (address, sim, delay) in cases.items():
        message = settle(social, sent[name]["id"])
        first, second = message["attempts"]
        assert first["error"]["kind"] == "rate_limited" and second["status"] == "accepted", message
        assert first["try_number"] == second["try_number"] == 1  # not counted as a failed try
        tries = sim.send_times(address)
        assert len(tries) == 2
        assert tries[1] - tries[0] >= delay - 0.05, (name, tries)  # the backoff alone would be 0.2 s


def test_line_retry_after_a_500_reuses_the_retry_key_and_sends_once(social: LocalGateway, sims: Sims) -> None:
    # The first push is accepted by LINE but answered with a 500; the retry gets 409 = already sent.
    sims.line.set_behaviour("U-lost", Behaviour("error", "lost_answer", fail_times=1))
    sims.line.set_behaviour("U-down", Behaviour("error", "server_error", fail_times=1))
    lost = send(social, {"to": {"identities": {"line": "U-lost"}}, "content": {"text": "once"}})
    down = send(social, {"to": {"identities": {"line": "U-down"}}, "content": {"text": "once too"}})
    for answer in (lost, down):
        message = settle(social, answer["id"])
        first, second = message["attempts"]
        assert first["error"]["kind"] == "transient" and second["status"] == "accepted", message
    key = retry_key(lost["id"])
    assert [k for to, k in sims.line.pushes if to == "U-lost"] == [key, key]
    assert [m["text"] for m in sims.line.messages if m["to"] == "U-lost"] == ["once"]
    assert [m["text"] for m in sims.line.messages if m["to"] == "U-down"] == ["once too"]


def test_japan_rule_sends_line_to_friends_and_sms_to_the_others(
    social: LocalGateway, sims: Sims, twilio: TwilioSimulator
) -> None:
    rule = {
        "name": "japan-line-first",
        "order": 10,
        "when": {"country": ["JP"]},
        "route": [{"channel": "line"}, {"channel": "sms"}, {"channel": "email"}],
    }
    assert social.call("POST", "/v1/routing-rules", rule).status == 201
    friend = {"phone": "+819012345678", "identities": {"line": "U-hana"}}
    stranger = {"phone": "+819087654321", "email": "ken@demo.test"}
    why_friend = social.call("POST", "/v1/routing/explain", {"to": friend}).body
    why_stranger = social.call("POST", "/v1/routing/explain", {"to": stranger}).body
    assert why_friend["rule"]["name"] == why_stranger["rule"]["name"] == "japan-line-first"
    assert [(s["channel"], s["because"]) for s in why_friend["plan"]] == [
        ("line", "rule japan-line-first"),
        ("sms", "rule japan-line-first"),
    ]
    assert {"channel": "email", "reason": "no email address"} in why_friend["skipped"]
    assert [s["channel"] for s in why_stranger["plan"]] == ["sms", "email"]
    assert why_stranger["skipped"] == [{"channel": "line", "reason": "no line identity"}]

    to_friend = send(social, {"to": friend, "content": {"text": "ご注文42を発送しました"}})
    to_stranger = send(social, {"to": stranger, "content": {"text": "Order 43 shipped"}})
    friend_message = settle(social, to_friend["id"])
    assert (friend_message["channel"], friend_message["status"]) == ("line", "sent")
    stranger_message = settle(social, to_stranger["id"], lambda m: m["status"] == "delivered")
    assert stranger_message["channel"] == "sms"
    assert [m["to"] for m in sims.line.messages] == ["U-hana"]
    assert twilio.sends_to("+819087654321") == 1 and twilio.sends_to("+819012345678") == 0


def test_wechat_uses_templates_outside_the_window_and_skips_without_one(
    social: LocalGateway, sims: Sims
) -> None:
    wechat = sims.wechat
    template = {"wechat": {"template_id": "tpl-order", "data": {"order": "42"}}}
    assert wechat.user_message("o-old", "hi", at=time.time() - 49 * 3600) == 200  # wrote 49 hours ago
    outside = send(
        social, {"to": {"identities": {"wechat": "o-old"}}, "content": {"text": "t", "templates": template}}
    )
    message = settle(social, outside["id"])
    assert message["channel"] == "wechat" and message["status"] in ("sent", "delivered")
    assert [(m["kind"], m["data"]) for m in wechat.messages] == [("template", {"order": {"value": "42"}})]

    skipped = send(
        social,
        {"to": {"identities": {"wechat": "o-old"}, "email": "old@demo.test"}, "content": {"text": "t"}},
    )
    assert {"channel": "wechat", "reason": "window closed and no wechat template"} in skipped["skipped"]
    assert [s["channel"] for s in skipped["plan"]] == ["email"]

    # Inside the window: five customer-service messages, then the limit closes it and the template goes.
    assert wechat.user_message("o-new", "hello") == 200
    for i in range(6):
        body = {
            "to": {"identities": {"wechat": "o-new"}},
            "content": {"text": f"m{i}", "templates": template},
        }
        settle(social, send(social, body)["id"])
    kinds = [m["kind"] for m in wechat.messages if m["to"] == "o-new"]
    assert kinds == ["custom"] * 5 + ["template"]
    assert wechat.token_requests == 1  # one access token, cached for every send

    wechat.expire_tokens()  # the next send gets 42001, refreshes once and goes through
    settle(
        social,
        send(social, {"to": {"identities": {"wechat": "o-old"}}, "content": {"templates": template}})["id"],
    )
    assert wechat.token_requests == 2
    assert len([m for m in wechat.messages if m["to"] == "o-old"]) == 2
