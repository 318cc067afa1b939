"""Meta channels without sockets: error tables, signatures, the handshake, webhook parsing, configuration."""

from __future__ import annotations

import json
from typing import Any

import pytest

from fallbacks.sms import classify_twilio_error
from gateway.channels.base import WebhookRequest
from gateway.channels.instagram import InstagramChannel
from gateway.channels.messenger import MessengerChannel, classify_page_error
from gateway.channels.meta import handshake, sign, signature_valid
from gateway.channels.whatsapp import WhatsAppChannel
from gateway.channels.whatsapp_cloud import classify_whatsapp_error, cloud_template
from gateway.errors import ErrorKind
from gateway.settings import Settings, load_settings

K = ErrorKind
SECRET = "app-secret"
CLOUD = {"whatsapp_token": "t", "whatsapp_phone_number_id": "111", "meta_app_secret": SECRET}
PAGE = {"messenger_page_token": "p", "messenger_page_id": "222", "meta_app_secret": SECRET}


def make_settings(**overrides: str | None) -> Settings:
    return load_settings(environ={}, overrides=overrides)


def request(
    payload: Any, secret: str | None = SECRET, url: str = "http://gw.test/webhooks/whatsapp"
) -> WebhookRequest:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    headers = {"X-Hub-Signature-256": sign(secret, body)} if secret else {}
    return WebhookRequest(url=url, method="POST", headers=headers, body=body)


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (131026, K.UNREACHABLE),
        (131047, K.WINDOW_CLOSED),
        (131051, K.REJECTED),
        (130429, K.RATE_LIMITED),
        (131056, K.RATE_LIMITED),
        (131048, K.RATE_LIMITED),
        (131049, K.BLOCKED),
        (131050, K.BLOCKED),
        (131030, K.REJECTED),
        (131000, K.TRANSIENT),
        (131016, K.TRANSIENT),
        (2, K.TRANSIENT),
    ],
)
def test_whatsapp_codes_are_classified_by_code_whatever_the_http_status(code: int, kind: ErrorKind) -> None:
    for status in (None, 400, 500):
        error = classify_whatsapp_error(code, "detail", status)
        assert (error.kind, error.code) == (kind, str(code))
        assert error.detail.endswith(": detail")


def test_unknown_whatsapp_codes_fall_back_on_the_http_status() -> None:
    assert classify_whatsapp_error(999999, "x", 400).kind == K.REJECTED
    assert classify_whatsapp_error(999999, "x", 429).kind == K.RATE_LIMITED
    assert classify_whatsapp_error(999999, "x", 503).kind == K.TRANSIENT
    assert classify_whatsapp_error(None, "x", None).kind == K.TRANSIENT  # a failed status without a code


@pytest.mark.parametrize(
    ("code", "subcode", "kind"),
    [
        (551, 1545041, K.BLOCKED),
        (551, None, K.BLOCKED),
        (10, 2018278, K.WINDOW_CLOSED),
        (100, 2018001, K.INVALID_ADDRESS),
        (613, None, K.RATE_LIMITED),
        (4, None, K.RATE_LIMITED),
        (1200, None, K.TRANSIENT),
        (2, None, K.TRANSIENT),
        (190, None, K.REJECTED),
        (200, None, K.REJECTED),
        (230, None, K.REJECTED),
        (10, None, K.REJECTED),  # a permission error, not the window
        (100, 33, K.REJECTED),  # a bad parameter, not an unknown user
    ],
)
def test_page_codes_and_subcodes(code: int, subcode: int | None, kind: ErrorKind) -> None:
    assert classify_page_error(code, subcode, "d", 400).kind == kind


def test_config_errors_alert_the_operator(caplog: pytest.LogCaptureFixture) -> None:
    classify_page_error(190, None, "Invalid OAuth access token.", 401, "instagram")
    classify_whatsapp_error(131030, "not allowed", 400)
    assert [r.levelname for r in caplog.records] == ["ERROR", "ERROR"]
    assert "instagram needs an operator" in caplog.records[0].getMessage()


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (63003, K.UNREACHABLE),
        (63024, K.UNREACHABLE),
        (63016, K.WINDOW_CLOSED),
        (63014, K.BLOCKED),
        (63018, K.RATE_LIMITED),
    ],
)
def test_twilio_whatsapp_codes(code: int, kind: ErrorKind) -> None:
    assert classify_twilio_error(code, 400, "x").kind == kind


def test_signatures_are_checked_over_the_raw_body() -> None:
    good = request({"object": "page"})
    assert signature_valid(SECRET, good)
    assert not signature_valid("other", good)
    assert not signature_valid(None, good)
    assert not signature_valid(SECRET, request({"object": "page"}, secret=None))
    tampered = WebhookRequest(good.url, "POST", good.headers, good.body + b" ")
    assert not signature_valid(SECRET, tampered)
    odd = WebhookRequest(good.url, "POST", {"x-hub-signature-256": "sha256=ü"}, good.body)
    assert not signature_valid(SECRET, odd)
    upper = WebhookRequest(
        good.url, "POST", {"x-hub-signature-256": good.headers["X-Hub-Signature-256"]}, good.body
    )
    assert signature_valid(SECRET, upper)


@pytest.mark.parametrize(
    ("query", "configured", "status", "body"),
    [
        ({"hub.mode": "subscribe", "hub.verify_token": "v", "hub.challenge": "123"}, "v", 200, "123"),
        ({"hub.mode": "subscribe", "hub.verify_token": "w", "hub.challenge": "123"}, "v", 403, None),
        ({"hub.mode": "unsubscribe", "hub.verify_token": "v", "hub.challenge": "123"}, "v", 403, None),
        ({"hub.mode": "subscribe", "hub.verify_token": "v"}, "v", 403, None),
        ({"hub.mode": "subscribe", "hub.verify_token": "", "hub.challenge": "1"}, None, 403, None),
    ],
)
def test_handshake(query: dict[str, str], configured: str | None, status: int, body: str | None) -> None:
    answer = handshake(configured, WebhookRequest("http://gw.test/webhooks/x", "GET", {}, b"", query=query))
    assert answer.status == status
    if body is not None:
        assert answer.body == body


def cloud_payload(**value: Any) -> dict[str, Any]:
    value = {"messaging_product": "whatsapp", "metadata": {"phone_number_id": "111"}} | value
    return {
        "object": "whatsapp_business_account",
        "entry": [{"id": "1", "changes": [{"field": "messages", "value": value}]}],
    }


def test_cloud_statuses_and_messages_are_parsed() -> None:
    channel = WhatsAppChannel(make_settings(**CLOUD))
    statuses = [
        {"id": "w1", "status": "sent", "timestamp": "1700000000", "recipient_id": "1"},
        {"id": "w1", "status": "delivered", "timestamp": "1700000001", "recipient_id": "1"},
        {"id": "w1", "status": "read", "timestamp": "1700000002", "recipient_id": "1"},
        {"id": "w2", "status": "failed", "errors": [{"code": 131026, "title": "Message undeliverable"}]},
        {"id": "w3", "status": "failed"},
        {"id": "w4", "status": "deleted"},
    ]
    messages = [
        {"from": "14155550100", "id": "in1", "timestamp": "1700000003", "type": "text",
         "text": {"body": "hi"}},
        {"from": "14155550100", "id": "in2", "type": "interactive",
         "interactive": {"type": "button_reply", "button_reply": {"id": "track", "title": "Track"}}},
        {"from": "14155550100", "id": "in3", "type": "button", "button": {"text": "Stop", "payload": "stop"}},
        {"from": "14155550100", "id": "in4", "type": "image", "image": {"caption": "receipt", "id": "m1"}},
        {"from": "14155550100", "id": "in5", "type": "system", "system": {"body": "changed number"}},
    ]  # fmt: skip
    contacts = [{"wa_id": "14155550100", "profile": {"name": "Ada"}}]
    batch = channel.parse_webhook("whatsapp", request(cloud_payload(statuses=statuses)))
    assert [(u.provider_message_id, u.status) for u in batch.statuses] == [
        ("w1", "sent"), ("w1", "delivered"), ("w1", "read"), ("w2", "failed"), ("w3", "failed"),
    ]  # fmt: skip
    assert batch.statuses[0].at is not None and batch.statuses[0].at.timestamp() == 1700000000
    failed = batch.statuses[3].error
    assert failed is not None and (failed.kind, failed.code) == (K.UNREACHABLE, "131026")
    assert batch.statuses[4].error is not None and batch.statuses[4].error.kind == K.TRANSIENT

    inbound = channel.parse_webhook(
        "whatsapp", request(cloud_payload(contacts=contacts, messages=messages))
    ).inbound
    assert [(i.sender, i.text, i.button_id) for i in inbound] == [
        ("+14155550100", "hi", None), ("+14155550100", "Track", "track"),
        ("+14155550100", "Stop", "stop"), ("+14155550100", "receipt", None),
    ]  # fmt: skip
    assert inbound[0].channel == "whatsapp" and inbound[0].raw["profile"] == {"name": "Ada"}

    other = cloud_payload(statuses=statuses) | {}
    other["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"] = "999"
    assert channel.parse_webhook("whatsapp", request(other)).statuses == []


def page_payload(obj: str, account: str, *events: dict[str, Any]) -> dict[str, Any]:
    messaging = [
        {"sender": {"id": "psid"}, "recipient": {"id": account}, "timestamp": 1700000000000} | e
        for e in events
    ]
    return {"object": obj, "entry": [{"id": account, "time": 1, "messaging": messaging}]}


def test_messenger_events_are_parsed_and_echoes_ignored() -> None:
    channel = MessengerChannel(make_settings(**PAGE))
    payload = page_payload(
        "page", "222",
        {"message": {"mid": "m1", "text": "hello"}},
        {"message": {"mid": "m2", "text": "ours", "is_echo": True}},
        {"message": {"mid": "m3", "text": "Yes", "quick_reply": {"payload": "yes"}}},
        {"postback": {"mid": "m4", "title": "Track", "payload": "track"}},
        {"delivery": {"mids": ["o1", "o2"], "watermark": 1700000000000}},
        {"read": {"watermark": 1700000000000}},
    )  # fmt: skip
    batch = channel.parse_webhook("messenger", request(payload, url="http://gw.test/webhooks/messenger"))
    assert [(i.provider_message_id, i.text, i.button_id) for i in batch.inbound] == [
        ("m1", "hello", None), ("m3", "Yes", "yes"), ("m4", "Track", "track"),
    ]  # fmt: skip
    assert {i.channel for i in batch.inbound} == {"messenger"}
    assert batch.inbound[0].received_at is not None and batch.inbound[0].received_at.timestamp() == 1700000000
    assert [(u.provider_message_id, u.status, u.address) for u in batch.statuses] == [
        ("o1", "delivered", None), ("o2", "delivered", None), ("", "read", "psid"),
    ]  # fmt: skip
    assert batch.statuses[2].up_to is not None and batch.statuses[2].up_to.timestamp() == 1700000000
    assert (
        channel.parse_webhook(
            "messenger", request(page_payload("instagram", "222", *payload["entry"][0]["messaging"]))
        ).inbound
        == []
    )
    assert (
        channel.parse_webhook(
            "messenger", request(page_payload("page", "333", {"message": {"mid": "x"}}))
        ).inbound
        == []
    )


def test_instagram_read_names_the_message() -> None:
    channel = InstagramChannel(
        make_settings(instagram_token="i", instagram_account_id="333", meta_app_secret=SECRET)
    )
    batch = channel.parse_webhook(
        "instagram", request(page_payload("instagram", "333", {"read": {"mid": "o1"}}))
    )
    assert [(u.provider_message_id, u.status) for u in batch.statuses] == [("o1", "read")]


def test_cloud_templates() -> None:
    assert cloud_template({"name": "hello_world"}) == {"name": "hello_world", "language": {"code": "en_US"}}
    assert cloud_template({"name": "order", "language": "ja", "params": [42]})["components"] == [
        {"type": "body", "parameters": [{"type": "text", "text": "42"}]}
    ]
    ready = [{"type": "header", "parameters": []}]
    assert cloud_template({"name": "x", "components": ready})["components"] == ready
    with pytest.raises(Exception, match="needs a name"):
        cloud_template({"content_sid": "HX1"})


def test_configuration_picks_the_transport_and_names_what_is_missing() -> None:
    assert WhatsAppChannel.disabled_reason(make_settings()) == (
        "GATEWAY_WHATSAPP_TOKEN (Cloud API) or GATEWAY_TWILIO_WHATSAPP_FROM (Twilio) is not set"
    )
    assert WhatsAppChannel.disabled_reason(make_settings(whatsapp_token="t")) == (
        "GATEWAY_WHATSAPP_PHONE_NUMBER_ID, GATEWAY_META_APP_SECRET are not set"
    )
    assert WhatsAppChannel.disabled_reason(make_settings(**CLOUD)) is None
    assert WhatsAppChannel(make_settings(**CLOUD, twilio_whatsapp_from="+1")).transport == "cloud"
    twilio = {"twilio_account_sid": "AC1", "twilio_auth_token": "tok", "twilio_whatsapp_from": "+14155238886"}
    assert WhatsAppChannel.disabled_reason(make_settings(**twilio)) is None
    assert MessengerChannel.disabled_reason(make_settings(messenger_page_token="p")) == (
        "GATEWAY_MESSENGER_PAGE_ID, GATEWAY_META_APP_SECRET are not set"
    )
    assert InstagramChannel.disabled_reason(make_settings(**PAGE)) is not None


def test_whatsapp_through_twilio_serves_twilio_hooks_only_without_sms() -> None:
    twilio = {"twilio_account_sid": "AC1", "twilio_auth_token": "tok", "twilio_whatsapp_from": "+14155238886"}
    alone = WhatsAppChannel(make_settings(**twilio))
    assert alone.transport == "twilio"
    assert alone.owns_webhook("twilio/status") and alone.owns_webhook("whatsapp")
    assert alone.status_callback_url("att_1") == "http://127.0.0.1:8000/webhooks/twilio/status?attempt=att_1"
    beside_sms = WhatsAppChannel(make_settings(**twilio, twilio_from="+15005550006"))
    assert not beside_sms.owns_webhook("twilio/status") and beside_sms.owns_webhook("whatsapp")
    assert WhatsAppChannel(make_settings(**CLOUD)).status_callback_url("att_1") is None
    assert MessengerChannel(make_settings(**PAGE)).status_callback_url("att_1") is None
