"""WhatsApp (Cloud API and through Twilio), Messenger and Instagram end to end, over real sockets.

The Meta simulator stands in for the Graph API and posts signed webhooks to the gateway; the Twilio
simulator carries SMS and WhatsApp-through-Twilio.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest

from gateway.channels.base import OutgoingMessage, SendResult
from gateway.channels.whatsapp import WhatsAppChannel
from gateway.local import LocalGateway
from gateway.settings import load_settings
from gateway.simulators.meta import Behaviour, MetaSimulator
from gateway.simulators.meta_webhooks import hub_signature, whatsapp_change, whatsapp_status
from gateway.simulators.twilio import Behaviour as TwilioBehaviour
from gateway.simulators.twilio import TwilioSimulator, twilio_signature

VERIFY = "verify-me"
WA_SENDER = "+14155238886"
Start = Callable[..., LocalGateway]


@pytest.fixture
def start(make_gateway: Callable[..., LocalGateway], meta: MetaSimulator) -> Start:
    """A gateway whose WhatsApp (Cloud API), Messenger and Instagram go to the Meta simulator."""

    def run(**overrides: Any) -> LocalGateway:
        local = make_gateway(**(meta.settings() | {"meta_verify_token": VERIFY} | overrides))
        meta.point_at(local.url)
        return local

    return run


def send(local: LocalGateway, body: dict[str, Any]) -> dict[str, Any]:
    answer = local.call("POST", "/v1/messages", body)
    assert answer.status == 202, answer.body
    return answer.body


def wait_for(local: LocalGateway, message_id: str, *statuses: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        message = local.call("GET", f"/v1/messages/{message_id}").body
        if message["status"] in statuses:
            return message
        assert time.monotonic() < deadline, f"not {statuses} in {timeout}s: {message}"
        time.sleep(0.03)


def journey(message: dict[str, Any]) -> list[tuple[str, str, str | None, str | None]]:
    return [
        (a["channel"], a["status"], (a["error"] or {}).get("kind"), (a["error"] or {}).get("code"))
        for a in message["attempts"]
    ]


def channel_row(local: LocalGateway, contact_id: str, channel: str) -> dict[str, Any]:
    rows = local.call("GET", f"/v1/contacts/{contact_id}/channels").body["data"]
    return next(r for r in rows if r["channel"] == channel)


def contact_of(local: LocalGateway, query: str) -> dict[str, Any]:
    found = local.call("GET", f"/v1/contacts?{query}").body["data"]
    assert len(found) == 1, found
    return found[0]


TEMPLATE = {"name": "order_update", "language": "en_US", "params": ["42"]}


def test_whatsapp_inbound_opens_the_window_text_is_delivered_and_read_satisfies_until_read(
    start: Start, meta: MetaSimulator
) -> None:
    local = start()
    assert meta.inbound("whatsapp", "+14155550201", "Where is my order?")[0] == 200
    sent = send(
        local,
        {"to": {"phone": "+14155550201"}, "content": {"text": "On its way"}, "fallback": {"until": "read"}},
    )
    assert [(s["channel"], s["because"]) for s in sent["plan"]][0] == (
        "whatsapp",
        "last wrote from this channel",
    )
    message = wait_for(local, sent["id"], "delivered")
    assert journey(message) == [("whatsapp", "delivered", None, None)]
    assert message["attempts"][0]["provider_message_id"].startswith("wamid.")
    [record] = meta.snapshot()
    assert (record["to"], record["type"], record["text"]) == ("14155550201", "text", "On its way")

    assert meta.mark_read("whatsapp", "+14155550201") == 200
    message = wait_for(local, sent["id"], "read")
    assert journey(message) == [("whatsapp", "read", None, None)]
    assert channel_row(local, sent["contact_id"], "whatsapp")["reachability"] == "reachable"


def test_closed_window_sends_the_template_and_without_one_whatsapp_is_skipped_for_sms(
    start: Start, meta: MetaSimulator, twilio: TwilioSimulator
) -> None:
    local = start()
    with_template = send(
        local,
        {
            "to": {"phone": "+14155550202"},
            "content": {"text": "Order 42", "templates": {"whatsapp": TEMPLATE}},
        },
    )
    assert [(s["channel"], s["because"]) for s in with_template["plan"]] == [
        ("whatsapp", "phone number"),
        ("sms", "phone number"),
    ]
    assert journey(wait_for(local, with_template["id"], "delivered")) == [
        ("whatsapp", "delivered", None, None)
    ]
    [record] = meta.snapshot()
    assert record["type"] == "template" and record["text"] is None
    assert record["template"] == {
        "name": "order_update",
        "language": {"code": "en_US"},
        "components": [{"type": "body", "parameters": [{"type": "text", "text": "42"}]}],
    }

    without = send(local, {"to": {"phone": "+14155550203"}, "content": {"text": "Order 43"}})
    assert [s["channel"] for s in without["plan"]] == ["sms"]
    assert {"channel": "whatsapp", "reason": "window closed and no whatsapp template"} in without["skipped"]
    assert journey(wait_for(local, without["id"], "delivered")) == [("sms", "delivered", None, None)]
    assert len(meta.snapshot()) == 1 and twilio.sends_to("+14155550203") == 1


def test_not_on_whatsapp_falls_back_to_sms_at_once_until_they_write_on_whatsapp(
    start: Start, meta: MetaSimulator, twilio: TwilioSimulator
) -> None:
    local = start(default_after="1h")  # a fallback here cannot be a step's timer running out
    body = {"to": {"phone": "+14155131026"}, "content": {"text": "Hi", "templates": {"whatsapp": TEMPLATE}}}
    first = send(local, body)
    message = wait_for(local, first["id"], "delivered")
    assert journey(message) == [
        ("whatsapp", "failed", "unreachable", "131026"),
        ("sms", "delivered", None, None),
    ]
    whatsapp = channel_row(local, first["contact_id"], "whatsapp")
    assert whatsapp["reachability"] == "unreachable" and whatsapp["reason"].startswith("unreachable")
    again = send(local, body)
    assert [s["channel"] for s in again["plan"]] == ["sms"]
    assert again["skipped"][0]["channel"] == "whatsapp"
    assert again["skipped"][0]["reason"].startswith("unreachable")
    wait_for(local, again["id"], "delivered")

    assert meta.inbound("whatsapp", "+14155131026", "Hello, I am on WhatsApp now")[0] == 200
    assert channel_row(local, first["contact_id"], "whatsapp")["reachability"] == "reachable"
    assert contact_of(local, "phone=%2B14155131026")["id"] == first["contact_id"]
    explained = local.call("POST", "/v1/routing/explain", {"to": {"phone": "+14155131026"}}).body
    assert explained["plan"][0]["channel"] == "whatsapp"
    assert twilio.sends_to("+14155131026") == 2


def test_window_closed_at_send_time_falls_back_on_whatsapp_and_messenger(
    start: Start, meta: MetaSimulator
) -> None:
    local = start()
    assert meta.inbound("whatsapp", "+14155131047", "hi")[0] == 200  # the gateway thinks the window is open
    wa = send(local, {"to": {"phone": "+14155131047"}, "content": {"text": "Reply"}})
    psid = "1000000002018278"
    assert meta.inbound("messenger", psid, "hi")[0] == 200
    fb = send(
        local, {"to": {"identities": {"messenger": psid}, "email": "fb@b.test"}, "content": {"text": "Reply"}}
    )
    assert journey(wait_for(local, wa["id"], "delivered")) == [
        ("whatsapp", "failed", "window_closed", "131047"),
        ("sms", "delivered", None, None),
    ]
    assert journey(wait_for(local, fb["id"], "sent")) == [
        ("messenger", "failed", "window_closed", "10/2018278"),
        ("email", "sent", None, None),
    ]


def test_a_window_closed_answer_to_text_sends_the_template_instead(start: Start, meta: MetaSimulator) -> None:
    local = start()
    meta.set_behaviour("+14155550204", Behaviour("error", 131047, asynchronous=False, fail_times=1))
    assert meta.inbound("whatsapp", "+14155550204", "hi")[0] == 200
    sent = send(
        local,
        {
            "to": {"phone": "+14155550204"},
            "content": {"text": "Free text", "templates": {"whatsapp": TEMPLATE}},
        },
    )
    assert journey(wait_for(local, sent["id"], "delivered")) == [("whatsapp", "delivered", None, None)]
    assert meta.sends_to("14155550204") == 2
    assert [m["type"] for m in meta.snapshot()] == ["template"]


@pytest.mark.parametrize("code", [130429, 131056])
def test_whatsapp_rate_limits_are_retried_on_whatsapp_not_a_fallback(
    start: Start, meta: MetaSimulator, twilio: TwilioSimulator, code: int
) -> None:
    local = start()
    number = f"+1415555{code % 10000:04d}"
    meta.set_behaviour(number, Behaviour("error", code, fail_times=1))
    sent = send(
        local, {"to": {"phone": number}, "content": {"text": "x", "templates": {"whatsapp": TEMPLATE}}}
    )
    assert journey(wait_for(local, sent["id"], "delivered")) == [
        ("whatsapp", "failed", "rate_limited", str(code)),
        ("whatsapp", "delivered", None, None),
    ]
    assert meta.sends_to(number) == 2 and twilio.sends_to(number) == 0


@pytest.mark.parametrize("channel", ["messenger", "instagram"])
def test_page_channels_inbound_opens_the_window_then_outside_falls_back_and_551_blocks(
    start: Start, meta: MetaSimulator, channel: str
) -> None:
    local = start()
    psid = "1000000000000301"
    assert meta.inbound(channel, psid, "Hello shop")[0] == 200
    contact = contact_of(local, f"identity={channel}:{psid}")
    row = channel_row(local, contact["id"], channel)
    assert row["reachability"] == "reachable" and row["window_open_until"]
    inside = send(local, {"to": {"contact_id": contact["id"]}, "content": {"text": "Thanks for writing"}})
    assert inside["plan"][0]["channel"] == channel
    # Instagram reports reads, not deliveries: its step completes when Meta accepts the message.
    final, attempt = ("delivered", "delivered") if channel == "messenger" else ("sent", "accepted")
    assert journey(wait_for(local, inside["id"], final)) == [(channel, attempt, None, None)]
    [record] = meta.snapshot()
    assert (record["to"], record["messaging_type"], record["tag"]) == (psid, "RESPONSE", None)

    outside = send(
        local,
        {"to": {"identities": {channel: "1000000000000302"}, "email": "o@b.test"}, "content": {"text": "x"}},
    )
    assert {"channel": channel, "reason": f"window closed and no {channel} template"} in outside["skipped"]
    assert [s["channel"] for s in outside["plan"]] == ["email"]

    blocked_psid = "1000000001545041"
    assert meta.inbound(channel, blocked_psid, "hi")[0] == 200
    blocked = send(
        local, {"to": {"identities": {channel: blocked_psid}, "email": "b@b.test"}, "content": {"text": "x"}}
    )
    assert journey(wait_for(local, blocked["id"], "sent")) == [
        (channel, "failed", "blocked", "551/1545041"),
        ("email", "sent", None, None),
    ]
    assert channel_row(local, blocked["contact_id"], channel)["reachability"] == "blocked"


def test_instagram_read_receipt_names_the_message(start: Start, meta: MetaSimulator) -> None:
    local = start()
    psid = "1000000000088888"  # reads everything it gets
    assert meta.inbound("instagram", psid, "hi")[0] == 200
    sent = send(
        local,
        {"to": {"identities": {"instagram": psid}}, "content": {"text": "x"}, "fallback": {"until": "read"}},
    )
    assert journey(wait_for(local, sent["id"], "read")) == [("instagram", "read", None, None)]


def test_messenger_human_agent_reply_within_7_days_uses_the_human_agent_tag(
    start: Start, meta: MetaSimulator
) -> None:
    local = start()
    psid = "1000000000000303"
    assert meta.inbound("messenger", psid, "Can a person help me?", at=time.time() - 3 * 86400)[0] == 200
    to = {"identities": {"messenger": psid}, "email": "h@b.test"}
    bot = send(local, {"to": to, "content": {"text": "An automatic answer"}})
    assert [s["channel"] for s in bot["plan"]] == ["email"]
    assert {"channel": "messenger", "reason": "window closed and no messenger template"} in bot["skipped"]
    person = send(local, {"to": to, "content": {"text": "Hi, Ada here"}, "human_agent": True})
    assert person["plan"][0]["channel"] == "messenger"
    wait_for(local, person["id"], "delivered")
    [record] = meta.snapshot()
    assert (record["messaging_type"], record["tag"], record["text"]) == (
        "MESSAGE_TAG",
        "HUMAN_AGENT",
        "Hi, Ada here",
    )


def test_messenger_read_watermark_marks_earlier_messages_read(start: Start, meta: MetaSimulator) -> None:
    local = start()
    psid = "1000000000000304"
    assert meta.inbound("messenger", psid, "hi")[0] == 200
    sent = send(
        local,
        {"to": {"identities": {"messenger": psid}}, "content": {"text": "x"}, "fallback": {"until": "read"}},
    )
    wait_for(local, sent["id"], "delivered")
    assert meta.mark_read("messenger", psid) == 200
    wait_for(local, sent["id"], "read")


def test_handshake_signatures_and_unknown_statuses(start: Start, meta: MetaSimulator) -> None:
    local = start()
    for hook in ("whatsapp", "messenger", "instagram"):
        url = f"{local.url}/webhooks/{hook}"
        assert meta.subscribe(hook, url, VERIFY)
        assert not meta.subscribe(hook, url, "wrong token")
        query = urlencode({"hub.mode": "subscribe", "hub.verify_token": "nope", "hub.challenge": "7"})
        assert local.call("GET", f"/webhooks/{hook}?{query}", key="").status == 403

    assert meta.inbound("whatsapp", "+14155550205", "hi", signature="sha256=" + "0" * 64)[0] == 403
    assert meta.inbound("messenger", "1000000000000305", "hi", signature="")[0] == 403
    body = json.dumps(whatsapp_change(meta.ids["whatsapp"], "1", statuses=[])).encode()
    headers = {"Content-Type": "application/json", "X-Hub-Signature-256": hub_signature("other secret", body)}
    assert local.call("POST", "/webhooks/instagram", key="", raw=body, headers=headers).status == 403
    assert local.call("GET", "/v1/contacts?phone=%2B14155550205").body["data"] == []
    assert local.call("GET", "/v1/contacts?identity=messenger:1000000000000305").body["data"] == []

    sent = send(
        local,
        {"to": {"phone": "+14155550206"}, "content": {"text": "x", "templates": {"whatsapp": TEMPLATE}}},
    )
    before = wait_for(local, sent["id"], "delivered")
    unknown = whatsapp_change(
        meta.ids["whatsapp"], "1", statuses=[whatsapp_status("wamid.unknown", "read", "1")]
    )
    raw = json.dumps(unknown).encode()
    headers["X-Hub-Signature-256"] = hub_signature(meta.app_secret, raw)
    assert local.call("POST", "/webhooks/whatsapp", key="", raw=raw, headers=headers).status == 200
    assert local.call("GET", f"/v1/messages/{sent['id']}").body["attempts"] == before["attempts"]
    headers["X-Hub-Signature-256"] = hub_signature(meta.app_secret, b"not json")
    assert local.call("POST", "/webhooks/whatsapp", key="", raw=b"not json", headers=headers).status == 400


def twilio_inbound(local: LocalGateway, twilio: TwilioSimulator, number: str, text: str, sid: str) -> int:
    form = {"MessageSid": sid, "From": f"whatsapp:{number}", "To": f"whatsapp:{WA_SENDER}", "Body": text}
    form |= {"NumMedia": "0", "WaId": number.lstrip("+"), "ProfileName": "Ada"}
    url = local.url + "/webhooks/twilio/inbound"
    headers = {
        "X-Twilio-Signature": twilio_signature(twilio.auth_token, url, form),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return local.call(
        "POST", "/webhooks/twilio/inbound", key="", headers=headers, raw=urlencode(form).encode()
    ).status


def twilio_status(local: LocalGateway, twilio: TwilioSimulator, attempt: dict[str, Any], status: str) -> int:
    path = f"/webhooks/twilio/status?attempt={attempt['id']}"
    form = {
        "MessageSid": attempt["provider_message_id"],
        "MessageStatus": status,
        "AccountSid": twilio.account_sid,
    }
    headers = {
        "X-Twilio-Signature": twilio_signature(twilio.auth_token, local.url + path, form),
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return local.call("POST", path, key="", headers=headers, raw=urlencode(form).encode()).status


def test_whatsapp_through_twilio_delivers_is_read_and_falls_back(
    make_gateway: Callable[..., LocalGateway], twilio: TwilioSimulator
) -> None:
    local = make_gateway(twilio_whatsapp_from=WA_SENDER)
    assert twilio_inbound(local, twilio, "+14155550207", "Hi from WhatsApp", "SMwa1") == 200
    sent = send(
        local, {"to": {"phone": "+14155550207"}, "content": {"text": "Hello"}, "fallback": {"until": "read"}}
    )
    assert sent["plan"][0]["channel"] == "whatsapp"
    message = wait_for(local, sent["id"], "delivered")
    record = next(m for m in twilio.snapshot() if m["to"] == "whatsapp:+14155550207")
    assert (record["from"], record["body"]) == (f"whatsapp:{WA_SENDER}", "Hello")
    assert record["status_callback"].startswith(f"{local.url}/webhooks/twilio/status?attempt=")
    assert twilio_status(local, twilio, message["attempts"][0], "read") == 200
    assert journey(wait_for(local, sent["id"], "read")) == [("whatsapp", "read", None, None)]

    for number, code, kind in (
        ("+14155550208", 63016, "window_closed"),
        ("+14155550209", 63003, "unreachable"),
    ):
        twilio.set_behaviour(f"whatsapp:{number}", TwilioBehaviour("error", code))
        assert twilio_inbound(local, twilio, number, "hi", f"SMwa{code}") == 200
        failed = send(local, {"to": {"phone": number}, "content": {"text": "x"}})
        assert journey(wait_for(local, failed["id"], "delivered")) == [
            ("whatsapp", "failed", kind, str(code)),
            ("sms", "delivered", None, None),
        ]
        assert twilio.sends_to(number) == 1
        if kind == "unreachable":
            assert channel_row(local, failed["contact_id"], "whatsapp")["reachability"] == "unreachable"

    twilio.set_behaviour("whatsapp:+14155550210", TwilioBehaviour("error", 63018, fail_times=1))
    assert twilio_inbound(local, twilio, "+14155550210", "hi", "SMwa63018") == 200
    limited = send(local, {"to": {"phone": "+14155550210"}, "content": {"text": "x"}})
    assert journey(wait_for(local, limited["id"], "delivered")) == [
        ("whatsapp", "failed", "rate_limited", "63018"),
        ("whatsapp", "delivered", None, None),
    ]


class _FakeTwilio:
    """Records Messages.json form posts and accepts them (the Twilio simulator insists on a Body)."""

    def __init__(self) -> None:
        self.forms: list[dict[str, str]] = []
        forms = self.forms

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                forms.append(dict(parse_qsl(self.rfile.read(length).decode())))
                body = json.dumps({"sid": "SM" + "1" * 32, "status": "queued"}).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


def test_whatsapp_through_twilio_sends_a_closed_window_template_as_content_sid() -> None:
    fake = _FakeTwilio()
    settings = load_settings(
        environ={},
        overrides={
            "twilio_account_sid": "AC" + "0" * 32,
            "twilio_auth_token": "token",
            "twilio_whatsapp_from": WA_SENDER,
            "twilio_base_url": fake.url,
        },
    )
    template = {"content_sid": "HX" + "a" * 32, "variables": ["42", "Ada"]}

    async def run() -> list[SendResult]:
        channel = WhatsAppChannel(settings)
        await channel.open()
        try:
            closed = OutgoingMessage("att_1", "msg_1", "+14155550211", "Free text", template=template)
            opened = OutgoingMessage(
                "att_2", "msg_2", "+14155550211", "Free text", template=template, window_open=True
            )
            return [await channel.send(closed), await channel.send(opened)]
        finally:
            await channel.close()

    try:
        results = asyncio.run(run())
    finally:
        fake.server.shutdown()
        fake.server.server_close()
    assert [r.provider_message_id for r in results] == ["SM" + "1" * 32] * 2
    closed, opened = fake.forms
    assert (closed["To"], closed["From"]) == ("whatsapp:+14155550211", f"whatsapp:{WA_SENDER}")
    assert (closed["ContentSid"], json.loads(closed["ContentVariables"])) == (
        template["content_sid"],
        {"1": "42", "2": "Ada"},
    )
    assert "Body" not in closed
    assert opened["Body"] == "Free text" and "ContentSid" not in opened
