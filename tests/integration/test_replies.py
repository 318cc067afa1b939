"""Replies on the customer's channel (`in_reply_to`), LINE reply tokens, and a late `window_closed`
answered with the template, over real sockets with the provider simulators."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlmodel import select

from gateway import store
from gateway.local import LocalGateway
from gateway.models import InboundMessage
from gateway.simulators.line import LineSimulator
from gateway.simulators.meta import Behaviour, MetaSimulator
from gateway.simulators.telegram import TelegramSimulator
from gateway.simulators.twilio import TwilioSimulator
from tests.conftest import eventually

TEMPLATE = {"name": "order_update", "language": "en_US", "params": ["42"]}
REPLY = "reply on the customer's channel"


def send(local: LocalGateway, body: dict[str, Any]) -> dict[str, Any]:
    answer = local.call("POST", "/v1/messages", body)
    assert answer.status == 202, answer.body
    return dict(answer.body)


def settle(local: LocalGateway, message_id: str, *statuses: str, timeout: float = 15) -> dict[str, Any]:
    """Poll a message until it has one of `statuses` and nothing pending."""
    deadline = time.monotonic() + timeout
    while True:
        message = local.call("GET", f"/v1/messages/{message_id}").body
        pending = any(a["status"] in ("pending", "sending") for a in message["attempts"])
        if message["status"] in statuses and not pending:
            return dict(message)
        assert time.monotonic() < deadline, message
        time.sleep(0.05)


def contact_by(local: LocalGateway, query: str) -> str:
    found = local.call("GET", f"/v1/contacts?{query}").body["data"]
    assert len(found) == 1, found
    return str(found[0]["id"])


def timeline(local: LocalGateway, contact_id: str) -> list[dict[str, Any]]:
    return list(local.call("GET", f"/v1/contacts/{contact_id}/timeline").body["data"])


def last_inbound(local: LocalGateway, contact_id: str) -> str:
    """The id of the contact's latest inbound message (waits for it)."""
    entries = eventually(lambda: [e for e in timeline(local, contact_id) if e["direction"] == "inbound"])
    return str(entries[-1]["id"])


def journey(message: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(a["channel"], a["status"], (a["error"] or {}).get("kind")) for a in message["attempts"]]


# -- Telegram: the reply goes where they wrote, threaded ---------------------------------------------------


def test_a_reply_goes_to_the_channel_they_wrote_from_and_is_threaded(
    make_gateway: Callable[..., LocalGateway], telegram: TelegramSimulator
) -> None:
    local = make_gateway(**telegram.gateway_settings(), channel_rates="telegram=0")
    telegram.connect(local.url)
    created = local.call(
        "POST",
        "/v1/contacts",
        {"email": "ada@example.test", "identities": {"telegram": "7301"}, "preferred_channel": "email"},
    )
    assert created.status == 201, created.body
    contact = created.body["id"]
    assert telegram.user_message("7301", "Where is my parcel?") == 200
    inbound = last_inbound(local, contact)

    plain = local.call("POST", "/v1/routing/explain", {"to": {"contact_id": contact}}).body
    assert [s["channel"] for s in plain["plan"]][0] == "email"  # their preferred channel, without a reply
    why = local.call("POST", "/v1/routing/explain", {"to": {"contact_id": contact}, "in_reply_to": inbound})
    assert why.status == 200, why.body
    assert [(s["channel"], s["because"]) for s in why.body["plan"]][0] == ("telegram", REPLY)

    sent = send(
        local, {"to": {"contact_id": contact}, "content": {"text": "Tomorrow"}, "in_reply_to": inbound}
    )
    assert [(s["channel"], s["address"], s["because"]) for s in sent["plan"]][0] == (
        "telegram",
        "7301",
        REPLY,
    )
    message = settle(local, sent["id"], "sent")
    assert message["channel"] == "telegram"
    assert [(m["chat_id"], m["text"]) for m in telegram.snapshot()] == [("7301", "Tomorrow")]
    entries = timeline(local, contact)
    assert [(e["direction"], e["id"], e["in_reply_to"]) for e in entries][-1] == (
        "outbound",
        sent["id"],
        inbound,
    )

    # Another contact's inbound cannot be answered, in a send or in explain: 422 naming the field.
    other = local.call("POST", "/v1/contacts", {"email": "bob@example.test"}).body["id"]
    for path in ("/v1/messages", "/v1/routing/explain"):
        body = {"to": {"contact_id": other}, "content": {"text": "x"}, "in_reply_to": inbound}
        refused = local.call("POST", path, body)
        assert refused.status == 422 and refused.body["errors"][0]["field"] == "in_reply_to", refused.body
    assert local.call("GET", f"/v1/messages?contact_id={other}").body["data"] == []


# -- WhatsApp: after the window closed, the template or a fallback, and the reason -------------------------


@pytest.fixture
def whatsapp(make_gateway: Callable[..., LocalGateway], meta: MetaSimulator) -> LocalGateway:
    local = make_gateway(**meta.settings(), meta_verify_token="verify-me")
    meta.point_at(local.url)
    return local


def test_a_whatsapp_reply_after_the_window_closed_uses_the_template_or_falls_back_and_says_why(
    whatsapp: LocalGateway, meta: MetaSimulator, twilio: TwilioSimulator
) -> None:
    local = whatsapp
    assert meta.inbound("whatsapp", "+14155550311", "hello?", at=time.time() - 25 * 3600)[0] == 200
    contact = contact_by(local, "phone=%2B14155550311")
    inbound = last_inbound(local, contact)

    reason = f"{REPLY}: window closed and no whatsapp template"
    why = local.call(
        "POST", "/v1/routing/explain", {"to": {"contact_id": contact}, "in_reply_to": inbound}
    ).body
    assert why["skipped"][0] == {"channel": "whatsapp", "reason": reason}
    assert [s["channel"] for s in why["plan"]] == ["sms"]
    falls_back = send(
        local, {"to": {"contact_id": contact}, "content": {"text": "Sorry"}, "in_reply_to": inbound}
    )
    assert falls_back["skipped"][0] == {"channel": "whatsapp", "reason": reason}
    message = settle(local, falls_back["id"], "delivered")
    assert message["channel"] == "sms" and message["skipped"][0]["reason"] == reason
    assert twilio.sends_to("+14155550311") == 1

    with_template = {"text": "Sorry", "templates": {"whatsapp": TEMPLATE}}
    body = {"to": {"contact_id": contact}, "content": with_template, "in_reply_to": inbound}
    explained = local.call("POST", "/v1/routing/explain", body).body
    because = f"{REPLY}: window closed, whatsapp template"
    assert [(s["channel"], s["because"]) for s in explained["plan"]][0] == ("whatsapp", because)
    templated = send(local, body)
    assert [(s["channel"], s["because"]) for s in templated["plan"]][0] == ("whatsapp", because)
    message = settle(local, templated["id"], "delivered")
    assert journey(message) == [("whatsapp", "delivered", None)]
    assert [(m["type"], (m["template"] or {}).get("name")) for m in meta.snapshot()] == [
        ("template", "order_update")
    ]
    assert timeline(local, contact)[-1]["in_reply_to"] == inbound


def test_a_window_closed_status_webhook_after_text_was_accepted_retries_once_with_the_template(
    whatsapp: LocalGateway, meta: MetaSimulator, twilio: TwilioSimulator
) -> None:
    local = whatsapp
    # Accepted, then a `failed` status with 131047 (the gateway thought the window open); the next send works.
    meta.set_behaviour("+14155550321", Behaviour("error", 131047, asynchronous=True, fail_times=1))
    assert meta.inbound("whatsapp", "+14155550321", "hi")[0] == 200
    body = {
        "to": {"phone": "+14155550321"},
        "content": {"text": "Free text", "templates": {"whatsapp": TEMPLATE}},
    }
    message = settle(local, send(local, body)["id"], "delivered")
    assert journey(message) == [("whatsapp", "failed", "window_closed"), ("whatsapp", "delivered", None)]
    assert [m["type"] for m in meta.snapshot() if m["to"] == "14155550321"] == ["text", "template"]
    assert twilio.sends_to("+14155550321") == 0

    # Without a template the same late answer falls back at once, as before.
    meta.set_behaviour("+14155550322", Behaviour("error", 131047, asynchronous=True, fail_times=1))
    assert meta.inbound("whatsapp", "+14155550322", "hi")[0] == 200
    plain = send(local, {"to": {"phone": "+14155550322"}, "content": {"text": "Free text"}})
    message = settle(local, plain["id"], "delivered")
    assert journey(message) == [("whatsapp", "failed", "window_closed"), ("sms", "delivered", None)]
    assert [m["type"] for m in meta.snapshot() if m["to"] == "14155550322"] == ["text"]

    # The template is tried once: a template that is refused the same way falls back.
    meta.set_behaviour("+14155550323", Behaviour("error", 131047, asynchronous=True))
    assert meta.inbound("whatsapp", "+14155550323", "hi")[0] == 200
    body["to"] = {"phone": "+14155550323"}
    message = settle(local, send(local, body)["id"], "delivered")
    assert journey(message) == [
        ("whatsapp", "failed", "window_closed"),
        ("whatsapp", "failed", "window_closed"),
        ("sms", "delivered", None),
    ]
    assert [m["type"] for m in meta.snapshot() if m["to"] == "14155550323"] == ["text", "template"]


# -- LINE: the reply API with the event's reply token, once, while it is valid ------------------------------


@pytest.fixture
def line_gateway(make_gateway: Callable[..., LocalGateway], line: LineSimulator) -> LocalGateway:
    local = make_gateway(
        **line.gateway_settings(), channel_rates="line=0", encryption_key=Fernet.generate_key().decode()
    )
    line.connect(local.url)
    return local


def use_token(line: LineSimulator, token: str) -> tuple[int, dict[str, Any]]:
    """Call the simulator's reply endpoint as another bot would."""
    request = urllib.request.Request(
        line.base_url + "/v2/bot/message/reply",
        data=json.dumps({"replyToken": token, "messages": [{"type": "text", "text": "other"}]}).encode(),
        headers={"Authorization": f"Bearer {line.channel_token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def reply_to(local: LocalGateway, user: str, text_: str) -> dict[str, Any]:
    contact = contact_by(local, f"identity=line:{user}")
    inbound = last_inbound(local, contact)
    sent = send(local, {"to": {"contact_id": contact}, "content": {"text": text_}, "in_reply_to": inbound})
    return settle(local, sent["id"], "sent")


def test_a_line_reply_uses_the_reply_token_once_then_push(
    line_gateway: LocalGateway, line: LineSimulator
) -> None:
    local = line_gateway
    assert line.user_message("U-reply-1", "Is it in stock?") == 200
    token = line.last_reply_token
    assert token is not None
    with store.transaction(local.gw.engine) as session:  # stored with the message, encrypted like bodies
        stored = session.execute(text("SELECT reply_token FROM inboundmessage")).scalar_one()
        [record] = session.exec(select(InboundMessage)).all()
    assert stored.startswith("fernet:") and token not in stored
    assert record.reply_token == token and "replyToken" not in (record.raw or {})

    first = reply_to(local, "U-reply-1", "Yes, 3 left")
    assert line.reply_calls == [(token, 200)] and line.pushes == []
    assert [(m["to"], m["text"], m["via"]) for m in line.snapshot()] == [
        ("U-reply-1", "Yes, 3 left", "reply")
    ]
    assert first["attempts"][0]["provider_message_id"]

    reply_to(local, "U-reply-1", "Anything else?")  # the token is used up: push
    assert line.reply_calls == [(token, 200)]
    assert [(m["text"], m["via"]) for m in line.snapshot()][-1] == ("Anything else?", "push")
    with store.transaction(local.gw.engine) as session:
        assert session.execute(text("SELECT reply_token FROM inboundmessage")).scalar() is None


def test_an_expired_or_already_used_line_token_falls_back_to_push(
    line_gateway: LocalGateway, line: LineSimulator
) -> None:
    local = line_gateway
    # The event is 61 s old: past LINE's one minute, so the gateway pushes without trying the token,
    # and LINE (the simulator) would have refused it.
    assert line.user_message("U-late", "hello", age=61) == 200
    expired = line.last_reply_token
    assert expired is not None
    message = reply_to(local, "U-late", "Hi!")
    assert line.reply_calls == []
    assert [(m["to"], m["via"]) for m in line.snapshot()] == [("U-late", "push")]
    assert len(message["attempts"]) == 1
    assert use_token(line, expired) == (400, {"message": "Invalid reply token"})

    # Someone else used the token first: LINE refuses it and the same send goes as a push.
    assert line.user_message("U-taken", "hello") == 200
    taken = line.last_reply_token
    assert taken is not None
    assert use_token(line, taken)[0] == 200
    assert use_token(line, taken) == (400, {"message": "Invalid reply token"})  # a token works once
    message = reply_to(local, "U-taken", "Hi!")
    assert [status for token, status in line.reply_calls if token == taken] == [200, 400, 400]
    assert [(m["text"], m["via"]) for m in line.snapshot() if m["to"] == "U-taken"] == [
        ("other", "reply"),
        ("Hi!", "push"),
    ]
    assert [(a["channel"], a["status"]) for a in message["attempts"]] == [("line", "accepted")]


def test_a_reply_to_a_tapped_line_button_uses_its_reply_token(
    line_gateway: LocalGateway, line: LineSimulator
) -> None:
    local = line_gateway
    assert line.postback("U-tap", "track") == 200
    message = reply_to(local, "U-tap", "Your parcel is in Osaka")
    assert [(m["to"], m["text"], m["via"]) for m in line.snapshot()] == [
        ("U-tap", "Your parcel is in Osaka", "reply")
    ]
    assert [status for _, status in line.reply_calls] == [200]
    assert message["channel"] == "line"
