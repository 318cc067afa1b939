"""Customers write back: the inbound pipeline, learned reachability, opt-outs, merges and events."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlencode

from gateway.channels.base import Inbound
from gateway.inbound.pipeline import receive_inbound
from gateway.local import LocalGateway
from gateway.simulators.twilio import TwilioSimulator, twilio_signature
from tests.conftest import eventually

FAST_EVENTS = {"event_backoff": "0.2s", "event_max_backoff": "0.5s"}


def send(local: LocalGateway, body: dict[str, Any]) -> dict[str, Any]:
    answer = local.call("POST", "/v1/messages", body)
    assert answer.status == 202, answer.body
    return answer.body


def inbound_sms(
    local: LocalGateway,
    twilio: TwilioSimulator,
    sender: str,
    text: str,
    sid: str,
    signature: str | None = None,
) -> int:
    """POST a Twilio inbound SMS webhook, signed as Twilio signs it unless a signature is given."""
    form = {"MessageSid": sid, "From": sender, "To": "+14155550000", "Body": text, "NumMedia": "0"}
    url = local.url + "/webhooks/twilio/inbound"
    sig = signature if signature is not None else twilio_signature(twilio.auth_token, url, form)
    headers = {"X-Twilio-Signature": sig, "Content-Type": "application/x-www-form-urlencoded"}
    return local.call(
        "POST", "/webhooks/twilio/inbound", key="", headers=headers, raw=urlencode(form).encode()
    ).status


def timeline(local: LocalGateway, contact_id: str) -> list[dict[str, Any]]:
    return local.call("GET", f"/v1/contacts/{contact_id}/timeline").body["data"]


def verify_signature(secret: str, headers: dict[str, str], body: bytes) -> bool:
    header = {k.lower(): v for k, v in headers.items()}["gateway-signature"]
    parts = dict(p.split("=", 1) for p in header.split(","))
    expected = hmac.new(secret.encode(), f"{parts['t']}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"]) and abs(time.time() - int(parts["t"])) < 300


def test_signed_inbound_sms_lands_threaded_and_is_forwarded_signed(
    make_gateway: Callable[..., LocalGateway], twilio: TwilioSimulator, receiver: Any
) -> None:
    local = make_gateway(**FAST_EVENTS)
    hook = local.call("POST", "/v1/webhooks", {"url": receiver.url, "events": ["message.inbound"]})
    assert hook.status == 201
    secret = hook.body["secret"]
    sent = send(local, {"to": {"phone": "+14155550130"}, "content": {"text": "Your order shipped"}})
    eventually(lambda: local.call("GET", f"/v1/messages/{sent['id']}").body["status"] == "delivered")

    assert inbound_sms(local, twilio, "+14155550130", "Thanks! When will it arrive?", "SMin1") == 200
    assert (
        inbound_sms(local, twilio, "+14155550130", "Thanks! When will it arrive?", "SMin1") == 200
    )  # redelivery
    entries = timeline(local, sent["contact_id"])
    assert [(e["direction"], e["channel"]) for e in entries] == [("outbound", "sms"), ("inbound", "sms")]
    assert entries[1]["in_reply_to"] == sent["id"]
    assert entries[1]["text"] == "Thanks! When will it arrive?"

    event = eventually(lambda: receiver.events("message.inbound"))[0]
    assert event["data"]["contact_id"] == sent["contact_id"]
    assert event["data"]["in_reply_to"] == sent["id"]
    assert event["data"]["id"] == entries[1]["id"]
    headers, body = receiver.calls[0]
    assert verify_signature(secret, headers, body)
    assert not verify_signature("whsec_wrong", headers, body)
    time.sleep(0.3)
    assert len(receiver.events("message.inbound")) == 1  # stored once, forwarded once

    channels = local.call("GET", f"/v1/contacts/{sent['contact_id']}/channels").body["data"]
    sms = next(c for c in channels if c["channel"] == "sms")
    assert sms["reachability"] == "reachable"
    assert sms["reason"] == "inbound message"


def test_unsigned_or_forged_inbound_is_refused_and_stores_nothing(
    gateway: LocalGateway, twilio: TwilioSimulator
) -> None:
    assert inbound_sms(gateway, twilio, "+14155550131", "hi", "SMx1", signature="") == 403
    assert inbound_sms(gateway, twilio, "+14155550131", "hi", "SMx2", signature="bm90IGEgc2lnbmF0dXJl") == 403
    found = gateway.call("GET", "/v1/contacts?phone=%2B14155550131").body["data"]
    assert found == []


def test_malformed_and_enormous_webhooks_get_clean_errors(
    gateway: LocalGateway, twilio: TwilioSimulator
) -> None:
    big = b"Body=" + b"x" * (300 * 1024)
    answer = gateway.call("POST", "/webhooks/twilio/inbound", key="", raw=big,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert answer.status == 413
    assert answer.body["type"] == "payload-too-large"
    assert gateway.call("POST", "/webhooks/nope", key="", raw=b"x").status == 404


def test_stop_opts_out_of_sms_and_start_opts_back_in(
    make_gateway: Callable[..., LocalGateway], twilio: TwilioSimulator, receiver: Any
) -> None:
    local = make_gateway(**FAST_EVENTS)
    local.call("POST", "/v1/webhooks", {"url": receiver.url, "events": ["contact.opted_out"]})
    assert inbound_sms(local, twilio, "+14155550132", "Stop", "SMs1") == 200
    contact = local.call("GET", "/v1/contacts?phone=%2B14155550132").body["data"][0]
    blocked = send(local, {"to": {"phone": "+14155550132"}, "content": {"text": "Sale"}})
    assert blocked["status"] == "failed"
    assert blocked["reason"] == "opted-out"
    assert {"channel": "sms", "reason": "opted out"} in blocked["skipped"]
    assert blocked["plan"] == []
    opted = eventually(lambda: receiver.events("contact.opted_out"))
    assert opted[0]["data"] == {"contact_id": contact["id"], "channel": "sms", "opted_out": True}

    assert inbound_sms(local, twilio, "+14155550132", "START", "SMs2") == 200
    again = send(local, {"to": {"phone": "+14155550132"}, "content": {"text": "Welcome back"}})
    assert again["status"] == "queued"
    eventually(lambda: local.call("GET", f"/v1/messages/{again['id']}").body["status"] == "delivered")
    assert twilio.sends_to("+14155550132") == 1
    assert [
        e["data"]["opted_out"]
        for e in eventually(
            lambda: receiver.events("contact.opted_out")[1:] and receiver.events("contact.opted_out")
        )
    ] == [True, False]


def test_21610_from_twilio_records_the_opt_out(gateway: LocalGateway) -> None:
    sent = send(gateway, {"to": {"phone": "+14155521610", "email": "a@b.test"}, "content": {"text": "x"}})
    message = eventually(
        lambda: (m := gateway.call("GET", f"/v1/messages/{sent['id']}").body)["status"] == "sent" and m
    )
    assert [a["error"] and a["error"]["kind"] for a in message["attempts"]] == ["opted_out", None]
    rows = gateway.call("GET", f"/v1/contacts/{sent['contact_id']}/channels").body["data"]
    assert next(r for r in rows if r["channel"] == "sms")["opted_out"] is True


def test_a_marketing_message_does_not_fall_back_past_an_opt_out(
    gateway: LocalGateway, twilio: TwilioSimulator
) -> None:
    assert inbound_sms(gateway, twilio, "+14155550133", "STOP", "SMm1") == 200
    body = {"to": {"phone": "+14155550133", "email": "m@b.test"}, "content": {"text": "Sale"}}
    marketing = send(gateway, body | {"category": "marketing"})
    assert marketing["status"] == "failed"
    assert marketing["reason"] == "opted-out"
    transactional = send(gateway, body)
    assert [s["channel"] for s in transactional["plan"]] == ["email"]


def test_inbound_makes_that_channel_first_and_explain_says_so(gateway: LocalGateway) -> None:
    to = {"phone": "+14155550134", "email": "w@b.test"}
    first = gateway.call("POST", "/v1/routing/explain", {"to": to}).body
    assert [s["channel"] for s in first["plan"]] == ["sms", "email"]
    contact = gateway.call("POST", "/v1/contacts", to).body
    # An email reply reaches the pipeline like any channel's inbound (the SMTP listener feeds it).
    receive_inbound(gateway.gw, Inbound("email", "W@b.test", "Reply by mail", "mail-1"))
    explained = gateway.call("POST", "/v1/routing/explain", {"to": {"contact_id": contact["id"]}}).body
    assert [(s["channel"], s["because"]) for s in explained["plan"]] == [
        ("email", "last wrote from this channel"),
        ("sms", "phone number"),
    ]


def test_receipts_and_errors_teach_reachability(gateway: LocalGateway) -> None:
    ok = send(gateway, {"to": {"phone": "+14155550135"}, "content": {"text": "x"}})
    eventually(lambda: gateway.call("GET", f"/v1/messages/{ok['id']}").body["status"] == "delivered")
    rows = gateway.call("GET", f"/v1/contacts/{ok['contact_id']}/channels").body["data"]
    assert next(r for r in rows if r["channel"] == "sms")["reachability"] == "reachable"

    landline = send(gateway, {"to": {"phone": "+14155521614", "email": "l@b.test"}, "content": {"text": "x"}})
    eventually(lambda: gateway.call("GET", f"/v1/messages/{landline['id']}").body["status"] == "sent")
    rows = gateway.call("GET", f"/v1/contacts/{landline['contact_id']}/channels").body["data"]
    sms = next(r for r in rows if r["channel"] == "sms")
    assert sms["reachability"] == "unreachable"
    assert sms["reason"].startswith("unreachable") and "mobile" in sms["reason"]
    again = send(gateway, {"to": {"phone": "+14155521614"}, "content": {"text": "y"}})
    assert [s["channel"] for s in again["plan"]] == ["email"]
    skipped = {s["channel"]: s["reason"] for s in again["skipped"]}
    assert skipped["sms"].startswith("unreachable")


def test_merge_by_external_id_keeps_every_message_on_one_timeline(gateway: LocalGateway) -> None:
    by_phone = send(gateway, {"to": {"phone": "+14155550136"}, "content": {"text": "one"}})
    by_crm = send(gateway, {"to": {"external_id": "crm-7", "email": "z@b.test"}, "content": {"text": "two"}})
    assert by_phone["contact_id"] != by_crm["contact_id"]
    both = send(
        gateway, {"to": {"external_id": "crm-7", "phone": "+14155550136"}, "content": {"text": "three"}}
    )
    assert both["contact_id"] == by_crm["contact_id"]
    texts = [e["text"] for e in timeline(gateway, by_crm["contact_id"])]
    assert texts == ["one", "two", "three"]
    merged = gateway.call("GET", f"/v1/contacts/{by_phone['contact_id']}")
    assert merged.status == 200
    assert merged.body["id"] == by_crm["contact_id"]
    assert merged.body["phone"] == "+14155550136"
    assert merged.body["email"] == "z@b.test"


def test_events_wait_for_a_receiver_that_is_down_and_keep_their_order(
    make_gateway: Callable[..., LocalGateway], receiver: Any
) -> None:
    local = make_gateway(**FAST_EVENTS)
    receiver.status = 503
    callback = send(
        local,
        {"to": {"phone": "+14155550137"}, "content": {"text": "x"}, "status_callback": receiver.url},
    )
    eventually(lambda: local.call("GET", f"/v1/messages/{callback['id']}").body["status"] == "delivered")
    time.sleep(0.5)
    assert receiver.events() == []
    receiver.status = 200
    statuses = eventually(
        lambda: (
            [e["data"]["status"] for e in receiver.events("message.status")][-1:] == ["delivered"]
            and [e["data"]["status"] for e in receiver.events("message.status")]
        )
    )
    assert statuses == ["sending", "sent", "delivered"]
    ids = [e["id"] for e in receiver.events()]
    assert len(ids) == len(set(ids))
    secret = local.gw.callback_secret()
    assert all(verify_signature(secret, h, b) for h, b in receiver.calls)
    assert json.loads(receiver.calls[-1][1])["data"]["id"] == callback["id"]


def test_deleting_a_contact_erases_what_they_wrote(
    make_gateway: Callable[..., LocalGateway], twilio: TwilioSimulator
) -> None:
    from sqlmodel import Session, select

    from gateway.models import InboundMessage

    local = make_gateway()
    assert inbound_sms(local, twilio, "+14155550123", "my card number is 4242", "SMdel0001") == 200
    contact_id = local.call("GET", "/v1/contacts?phone=%2B14155550123").body["data"][0]["id"]
    assert [e["text"] for e in timeline(local, contact_id)] == ["my card number is 4242"]
    assert local.call("DELETE", f"/v1/contacts/{contact_id}").status == 204
    with Session(local.gw.engine) as session:
        stored = session.exec(select(InboundMessage).where(InboundMessage.contact_id == contact_id)).one()
        assert (stored.text, stored.raw, stored.address) == (None, None, "erased")
