"""Social channels' webhooks over real sockets: signatures and handshakes, the events that create an
identity or block one, and Viber's receipts."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import pytest

from gateway.local import LocalGateway
from gateway.simulators.line import LineSimulator
from gateway.simulators.smtp import SmtpSimulator
from gateway.simulators.telegram import TelegramSimulator
from gateway.simulators.viber import ViberSimulator
from gateway.simulators.wechat import WeChatSimulator
from gateway.simulators.x import XSimulator

HOOKS = ("telegram", "line", "viber", "x", "wechat")


@dataclass
class Sims:
    telegram: TelegramSimulator
    line: LineSimulator
    viber: ViberSimulator
    x: XSimulator
    wechat: WeChatSimulator


@pytest.fixture
def sims() -> Iterator[Sims]:
    with (
        TelegramSimulator() as telegram,
        LineSimulator() as line,
        # Receipts 0.2 s after the send: on PostgreSQL a receipt that races the send's own commit can stay
        # unapplied (EarlyStatus in gateway/services/provider_webhooks.py); these tests are about Viber.
        ViberSimulator(callback_delay=0.2) as viber,
        XSimulator() as x,
        WeChatSimulator() as wechat,
    ):
        yield Sims(telegram, line, viber, x, wechat)


@pytest.fixture
def hooked(make_gateway: Callable[..., LocalGateway], sims: Sims) -> LocalGateway:
    settings: dict[str, Any] = {"channel_rates": "sms=0,email=0,telegram=0,line=0,viber=0,x=0,wechat=0"}
    for name in HOOKS:
        settings |= getattr(sims, name).gateway_settings()
    local = make_gateway(**settings)
    for name in HOOKS:
        getattr(sims, name).connect(local.url)
    return local


def contacts_with(local: LocalGateway, channel: str, address: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = local.call(
        "GET", f"/v1/contacts?identity={quote(f'{channel}:{address}')}"
    ).body["data"]
    return found


def reachability(local: LocalGateway, channel: str, address: str) -> tuple[str, str | None]:
    contact = contacts_with(local, channel, address)[0]
    rows = local.call("GET", f"/v1/contacts/{contact['id']}/channels").body["data"]
    row = next(r for r in rows if r["channel"] == channel)
    return row["reachability"], row["reason"]


def wait(local: LocalGateway, message_id: str, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while True:
        message: dict[str, Any] = local.call("GET", f"/v1/messages/{message_id}").body
        if done(message):
            return message
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def test_forged_or_unsigned_webhooks_get_403_and_store_nothing(hooked: LocalGateway, sims: Sims) -> None:
    forged = {
        "telegram": ("7100", "X-Telegram-Bot-Api-Secret-Token"),
        "line": ("U-forged", "X-Line-Signature"),
        "viber": ("vb-forged", "X-Viber-Content-Signature"),
        "x": ("7101", "x-twitter-webhooks-signature"),
    }
    for channel, (address, header) in forged.items():
        sim = getattr(sims, channel)
        assert sim.user_message(address, "hi", headers={header: "bm90IHRoZSBzaWduYXR1cmU="}) == 403, channel
        assert sim.user_message(address, "hi", headers={header: ""}) == 403, channel
        assert contacts_with(hooked, channel, address) == []
    assert sims.wechat.user_message("o-forged", "hi", query={"signature": "0" * 40}) == 403
    assert sims.wechat.user_message("o-forged", "hi", query={"signature": ""}) == 403
    assert contacts_with(hooked, "wechat", "o-forged") == []

    # Signed, the same calls land.
    assert sims.telegram.user_message("7100", "hi") == 200
    assert sims.line.user_message("U-forged", "hi") == 200
    assert sims.viber.user_message("vb-forged", "hi") == 200
    assert sims.x.user_message("7101", "hi") == 200
    assert sims.wechat.user_message("o-forged", "hi") == 200
    for channel, address in (
        ("telegram", "7100"),
        ("line", "U-forged"),
        ("viber", "vb-forged"),
        ("x", "7101"),
    ):
        assert len(contacts_with(hooked, channel, address)) == 1, channel
    assert len(contacts_with(hooked, "wechat", "o-forged")) == 1


def test_handshakes_x_crc_and_wechat_echostr(hooked: LocalGateway, sims: Sims) -> None:
    assert sims.x.crc_check("abc-123")
    no_token = hooked.call("GET", "/webhooks/x", key="")
    assert no_token.status == 400
    assert sims.wechat.verify_url("echo-42") == (200, "echo-42")
    assert sims.wechat.verify_url("echo-42", signature="0" * 40)[0] == 403
    assert hooked.call("GET", "/webhooks/telegram", key="").status == 405
    # Discord is send-only: it has no webhook at all.
    assert hooked.call("POST", "/webhooks/discord", key="", raw=b"{}").status == 404


def test_follow_events_create_identities_and_block_events_end_them(
    hooked: LocalGateway, sims: Sims, smtp: SmtpSimulator
) -> None:
    assert sims.telegram.press_start("7200") == 200
    assert sims.line.follow("U-friend") == 200
    assert sims.viber.subscribed("vb-sub") == 200
    assert sims.viber.conversation_started("vb-open") == 200
    assert sims.wechat.subscribe("o-follower") == 200
    assert reachability(hooked, "telegram", "7200") == ("reachable", "started the bot")
    assert reachability(hooked, "line", "U-friend") == ("reachable", "followed")
    assert reachability(hooked, "viber", "vb-sub") == ("reachable", "subscribed")
    assert reachability(hooked, "viber", "vb-open") == ("reachable", "opened a conversation")
    assert reachability(hooked, "wechat", "o-follower") == ("reachable", "subscribed")

    # Messages create the identity too, and land on the contact's timeline (a redelivery once).
    line_event = sims.line.event(
        "message", "U-writer", message={"type": "text", "id": "m-1", "text": "こんにちは"}
    )
    assert sims.line.post_events([line_event]) == sims.line.post_events([line_event]) == 200
    assert sims.telegram.user_message("7201", "hello") == 200
    assert sims.viber.user_message("vb-writer", "hello") == 200
    assert sims.x.user_message("7202", "hello") == 200
    assert sims.wechat.user_message("o-writer", "你好") == 200
    for channel, address, text in [
        ("line", "U-writer", "こんにちは"),
        ("telegram", "7201", "hello"),
        ("viber", "vb-writer", "hello"),
        ("x", "7202", "hello"),
        ("wechat", "o-writer", "你好"),
    ]:
        contact = contacts_with(hooked, channel, address)[0]
        entries = hooked.call("GET", f"/v1/contacts/{contact['id']}/timeline").body["data"]
        assert [(e["direction"], e["channel"], e["text"]) for e in entries] == [("inbound", channel, text)]

    assert sims.telegram.block("7200") == 200
    assert sims.line.unfollow("U-friend") == 200
    assert sims.viber.unsubscribed("vb-sub") == 200
    assert sims.wechat.unsubscribe("o-follower") == 200
    blocked = [
        ("telegram", "7200", "blocked the bot"),
        ("line", "U-friend", "unfollowed"),
        ("viber", "vb-sub", "unsubscribed"),
        ("wechat", "o-follower", "unsubscribed"),
    ]
    for channel, address, reason in blocked:
        assert reachability(hooked, channel, address) == ("blocked", reason)
        to = {"identities": {channel: address}, "email": f"{channel}@demo.test"}
        template = {"wechat": {"template_id": "tpl", "data": {}}}
        answer = hooked.call(
            "POST", "/v1/messages", {"to": to, "content": {"text": "hi", "templates": template}}
        )
        assert answer.status == 202
        assert {"channel": channel, "reason": f"blocked: {reason}"} in answer.body["skipped"]
        assert [s["channel"] for s in answer.body["plan"]] == ["email"]
        wait(hooked, answer.body["id"], lambda m: m["status"] == "sent")
    assert sims.telegram.messages == sims.line.messages == sims.viber.messages == sims.wechat.messages == []
    assert len(smtp.messages) == len(blocked)


def test_viber_seen_receipts_and_failed_callbacks(hooked: LocalGateway, sims: Sims) -> None:
    read = hooked.call(
        "POST", "/v1/messages", {"to": {"identities": {"viber": "reader-1"}}, "content": {"text": "a"}}
    )
    message = wait(hooked, read.body["id"], lambda m: m["status"] == "read")
    assert message["attempts"][0]["status"] == "read"

    body = {
        "to": {"identities": {"viber": "undelivered-1"}, "email": "vb@demo.test"},
        "content": {"text": "b"},
        "channels": ["viber", "email"],
    }
    failed = hooked.call("POST", "/v1/messages", body).body
    message = wait(hooked, failed["id"], lambda m: m["channel"] == "email" and m["status"] == "sent")
    assert message["attempts"][0]["error"]["kind"] == "unreachable"
    assert reachability(hooked, "viber", "undelivered-1")[0] == "unreachable"
