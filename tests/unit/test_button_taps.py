"""Native button taps in providers' webhook payloads become `button_id`s; anything else does not."""

from __future__ import annotations

import json
from typing import Any

from gateway.adapt import ButtonItem
from gateway.channels.base import WebhookRequest
from gateway.channels.line import LineChannel
from gateway.channels.telegram import TelegramChannel
from gateway.channels.viber import tapped_button, tracking_data
from gateway.settings import load_settings

SETTINGS = load_settings(environ={}, overrides={})


def request(payload: dict[str, Any]) -> WebhookRequest:
    return WebhookRequest(
        url="http://gw/webhooks/x", method="POST", headers={}, body=json.dumps(payload).encode()
    )


def test_telegram_callback_query_is_a_button_tap_with_the_buttons_text() -> None:
    keyboard = {"inline_keyboard": [[{"text": "Track parcel", "callback_data": "track"}]]}
    query = {
        "id": "4382",
        "from": {"id": 77, "is_bot": False, "first_name": "Ada"},
        "message": {"message_id": 9, "chat": {"id": 77, "type": "private"}, "reply_markup": keyboard},
        "data": "track",
    }
    batch = TelegramChannel(SETTINGS).parse_webhook(
        "telegram", request({"update_id": 1, "callback_query": query})
    )
    [tap] = batch.inbound
    assert (tap.sender, tap.text, tap.button_id, tap.provider_message_id) == (
        "77",
        "Track parcel",
        "track",
        "callback:4382",
    )
    group = {**query, "message": {**query["message"], "chat": {"id": -5, "type": "group"}}}
    assert (
        TelegramChannel(SETTINGS)
        .parse_webhook("telegram", request({"update_id": 2, "callback_query": group}))
        .inbound
        == []
    )


def test_line_postback_is_a_button_tap() -> None:
    event = {
        "type": "postback",
        "timestamp": 1_700_000_000_000,
        "source": {"type": "user", "userId": "U1"},
        "webhookEventId": "01ABC",
        "postback": {"data": "agent"},
    }
    [tap] = LineChannel(SETTINGS).parse_webhook("line", request({"events": [event]})).inbound
    assert (tap.sender, tap.button_id, tap.provider_message_id) == ("U1", "agent", "postback:01ABC")


def test_viber_reply_maps_a_title_through_tracking_data_only() -> None:
    tracked = tracking_data((ButtonItem("track", "Track parcel"), ButtonItem("agent", "Talk to a person")))
    assert tapped_button({"text": "Talk to a person", "tracking_data": tracked}) == "agent"
    assert tapped_button({"text": "something else", "tracking_data": tracked}) is None
    assert tapped_button({"text": "Talk to a person"}) is None
    assert tapped_button({"text": "Talk to a person", "tracking_data": "not json"}) is None
    assert tapped_button({"text": "x", "tracking_data": json.dumps(["a list"])}) is None
