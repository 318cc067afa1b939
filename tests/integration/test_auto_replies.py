"""Auto-replies over real sockets: signed inbound SMS in, replies out through the Twilio simulator."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from sqlmodel import Session, col, create_engine, select

from gateway import store
from gateway.local import LocalGateway
from gateway.models import AutoReplyRule, AutoReplySent
from gateway.simulators.twilio import TwilioSimulator, twilio_signature
from tests.conftest import eventually

ROOT = Path(__file__).resolve().parents[2]
HOURS_REPLY = "We are open Monday to Friday, 9:00 to 18:00."
CLOSED_REPLY = "We are closed now; we will answer in the morning."
ALL_DAYS = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


def inbound_sms(local: LocalGateway, twilio: TwilioSimulator, sender: str, text: str, sid: str) -> None:
    """POST a Twilio inbound SMS webhook signed as Twilio signs it; the hook has run when this returns."""
    form = {"MessageSid": sid, "From": sender, "To": "+14155550000", "Body": text}
    signature = twilio_signature(twilio.auth_token, local.url + "/webhooks/twilio/inbound", form)
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
    answer = local.call(
        "POST", "/webhooks/twilio/inbound", key="", headers=headers, raw=urlencode(form).encode()
    )
    assert answer.status == 200, answer.body


def answered_back(local: LocalGateway, rule_id: str, by: timedelta) -> None:
    """Move the times `rule_id` last answered each contact `by` into the past."""
    with store.transaction(local.gw.engine) as session:
        for row in session.exec(select(AutoReplySent).where(col(AutoReplySent.rule_id) == rule_id)):
            row.sent_at -= by


def contact_id(local: LocalGateway, phone: str) -> str:
    found = local.call("GET", f"/v1/contacts?phone={quote(phone)}").body["data"]
    assert len(found) == 1, found
    return str(found[0]["id"])


def auto_replies_to(local: LocalGateway, phone: str) -> list[dict[str, Any]]:
    """The auto-reply messages recorded for a contact, oldest first."""
    messages = local.call("GET", f"/v1/messages?contact_id={contact_id(local, phone)}").body["data"]
    return [m for m in reversed(messages) if (m["metadata"] or {}).get("auto_reply")]


def texts_to(twilio: TwilioSimulator, phone: str) -> list[str]:
    return [m["body"] for m in twilio.snapshot() if m["to"] == phone]


def create(local: LocalGateway, rule: dict[str, Any]) -> dict[str, Any]:
    answer = local.call("POST", "/v1/auto-replies", rule)
    assert answer.status == 201, answer.body
    return dict(answer.body)


def hours_around_now(start_in: timedelta, end_in: timedelta) -> dict[str, Any]:
    """Business hours in UTC, every day, from now + start_in to now + end_in."""
    now = datetime.now(UTC)
    return {
        "timezone": "UTC",
        "days": ALL_DAYS,
        "start": (now + start_in).strftime("%H:%M"),
        "end": (now + end_in).strftime("%H:%M"),
    }


def test_a_keyword_gets_one_reply_per_period_on_the_inbound_channel_and_on_the_timeline(
    gateway: LocalGateway, twilio: TwilioSimulator
) -> None:
    rule = create(gateway, {"name": "hours", "keywords": ["horario", "opening hours"], "reply": HOURS_REPLY})
    assert rule["once_per"] == "1d" and rule["id"].startswith("ar_")
    phone = "+14155550141"

    inbound_sms(gateway, twilio, phone, "¿Horário?", "SMar1")
    eventually(lambda: texts_to(twilio, phone))
    assert texts_to(twilio, phone) == [HOURS_REPLY]
    (reply,) = auto_replies_to(gateway, phone)
    assert reply["metadata"] == {"auto_reply": "hours"}
    assert reply["category"] == "transactional"
    assert [s["channel"] for s in reply["plan"]] == ["sms"]

    entries = gateway.call("GET", f"/v1/contacts/{contact_id(gateway, phone)}/timeline").body["data"]
    inbound = [e for e in entries if e["direction"] == "inbound"]
    outbound = [e for e in entries if e["direction"] == "outbound"]
    assert [e["text"] for e in inbound] == ["¿Horário?"]
    assert [(e["text"], e["channel"], e["in_reply_to"]) for e in outbound] == [
        (HOURS_REPLY, "sms", inbound[0]["id"])
    ]

    inbound_sms(gateway, twilio, phone, "What are your OPENING HOURS?", "SMar2")  # within the period
    inbound_sms(gateway, twilio, phone, "¿Horário?", "SMar1")  # a redelivery is never answered
    assert len(auto_replies_to(gateway, phone)) == 1
    time.sleep(0.5)
    assert texts_to(twilio, phone) == [HOURS_REPLY]

    inbound_sms(gateway, twilio, "+14155550142", "hello there", "SMar3")  # no keyword: no reply
    assert auto_replies_to(gateway, "+14155550142") == []


def test_the_period_ends_and_a_rule_limited_to_other_channels_stays_silent(
    gateway: LocalGateway, twilio: TwilioSimulator
) -> None:
    create(
        gateway,
        {"name": "email-only", "order": 1, "keywords": ["price"], "channels": ["email"], "reply": "no"},
    )
    # A period of an hour, ended by moving the recorded answer back in time: on a slow, loaded machine a
    # period of seconds could run out between the two messages below.
    price = create(
        gateway, {"name": "price", "order": 2, "keywords": ["price"], "reply": "10 EUR", "once_per": "1h"}
    )
    phone = "+14155550143"
    inbound_sms(gateway, twilio, phone, "price?", "SMar10")
    inbound_sms(gateway, twilio, phone, "price?", "SMar11")
    assert [m["metadata"]["auto_reply"] for m in auto_replies_to(gateway, phone)] == ["price"]
    answered_back(gateway, price["id"], timedelta(minutes=59))
    inbound_sms(gateway, twilio, phone, "price??", "SMar12")  # still within the hour
    assert len(auto_replies_to(gateway, phone)) == 1
    answered_back(gateway, price["id"], timedelta(minutes=2))
    inbound_sms(gateway, twilio, phone, "price??", "SMar13")
    assert len(auto_replies_to(gateway, phone)) == 2
    eventually(lambda: texts_to(twilio, phone) == ["10 EUR", "10 EUR"])


def test_an_out_of_hours_rule_answers_outside_business_hours_only(
    gateway: LocalGateway, twilio: TwilioSimulator
) -> None:
    open_now = hours_around_now(timedelta(hours=-1), timedelta(hours=1))
    rule = create(gateway, {"name": "closed", "business_hours": open_now, "reply": CLOSED_REPLY})
    phone = "+14155550144"
    inbound_sms(gateway, twilio, phone, "hello", "SMar20")
    assert auto_replies_to(gateway, phone) == []  # within business hours

    closed_now = hours_around_now(timedelta(hours=2), timedelta(hours=3))
    updated = {"name": "closed", "business_hours": closed_now, "reply": CLOSED_REPLY}
    answer = gateway.call("PUT", f"/v1/auto-replies/{rule['id']}", updated)
    assert answer.status == 200, answer.body
    assert answer.body["business_hours"] == closed_now
    inbound_sms(gateway, twilio, phone, "hello again", "SMar21")
    (reply,) = auto_replies_to(gateway, phone)
    assert reply["metadata"] == {"auto_reply": "closed"}
    eventually(lambda: texts_to(twilio, phone) == [CLOSED_REPLY])
    inbound_sms(gateway, twilio, phone, "anyone?", "SMar22")
    assert len(auto_replies_to(gateway, phone)) == 1


def test_opt_out_and_opt_in_keywords_never_get_an_auto_reply(
    gateway: LocalGateway, twilio: TwilioSimulator
) -> None:
    closed_now = hours_around_now(timedelta(hours=2), timedelta(hours=3))
    create(gateway, {"name": "stop-word", "order": 1, "keywords": ["stop", "start"], "reply": "never"})
    create(gateway, {"name": "closed", "order": 2, "business_hours": closed_now, "reply": CLOSED_REPLY})
    phone = "+14155550145"
    inbound_sms(gateway, twilio, phone, "STOP", "SMar30")
    assert auto_replies_to(gateway, phone) == []
    inbound_sms(gateway, twilio, phone, "hello?", "SMar31")  # opted out of SMS: no reply on SMS
    assert auto_replies_to(gateway, phone) == []
    inbound_sms(gateway, twilio, phone, "Start", "SMar32")
    assert auto_replies_to(gateway, phone) == []
    inbound_sms(gateway, twilio, phone, "hello?", "SMar33")  # opted back in; nothing used the period up
    assert [m["metadata"]["auto_reply"] for m in auto_replies_to(gateway, phone)] == ["closed"]
    eventually(lambda: texts_to(twilio, phone) == [CLOSED_REPLY])


def test_concurrent_messages_from_one_contact_get_one_reply(
    gateway: LocalGateway, twilio: TwilioSimulator
) -> None:
    create(gateway, {"name": "hours", "keywords": ["hours"], "reply": HOURS_REPLY})
    phone = "+14155550146"
    inbound_sms(gateway, twilio, phone, "hi", "SMar40")  # the contact exists before the race
    threads = [
        threading.Thread(target=inbound_sms, args=(gateway, twilio, phone, f"hours {i}?", f"SMar4{i + 1}"))
        for i in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(auto_replies_to(gateway, phone)) == 1
    eventually(lambda: texts_to(twilio, phone))
    time.sleep(0.3)
    assert texts_to(twilio, phone) == [HOURS_REPLY]


def test_crud_and_validation(gateway: LocalGateway) -> None:
    body = {
        "name": "closed",
        "order": 20,
        "keywords": ["hours"],
        "business_hours": {"timezone": "Europe/Paris", "start": "09:00", "end": "18:00"},
        "channels": ["sms"],
        "reply": "closed",
        "once_per": "12h",
    }
    created = create(gateway, body)
    assert created["business_hours"]["days"] == ["mon", "tue", "wed", "thu", "fri"]
    assert created["once_per"] == "12h" and created["enabled"] is True
    first = create(gateway, {"name": "first", "order": 5, "keywords": ["x"], "reply": "x", "once_per": 90})
    assert first["once_per"] == "90s"
    listed = gateway.call("GET", "/v1/auto-replies").body
    assert [r["name"] for r in listed["data"]] == ["first", "closed"] and listed["next_cursor"] is None
    assert gateway.call("GET", f"/v1/auto-replies/{created['id']}").body == created
    assert gateway.call("POST", "/v1/auto-replies", body).status == 409

    replaced = gateway.call(
        "PUT", f"/v1/auto-replies/{created['id']}", {**body, "enabled": False, "order": 1}
    )
    assert replaced.status == 200 and replaced.body["enabled"] is False and replaced.body["order"] == 1
    renamed = gateway.call("PUT", f"/v1/auto-replies/{created['id']}", {**body, "name": "first"})
    assert renamed.status == 409
    assert gateway.call("PUT", "/v1/auto-replies/ar_missing", body).status == 404

    reader = gateway.new_key("send", "read")
    assert gateway.call("GET", "/v1/auto-replies", key=reader).status == 403
    assert gateway.call("POST", "/v1/auto-replies", body, key=reader).status == 403
    assert gateway.call("GET", "/v1/auto-replies", key="").status == 401

    assert gateway.call("DELETE", f"/v1/auto-replies/{first['id']}").status == 204
    assert gateway.call("GET", f"/v1/auto-replies/{first['id']}").status == 404
    assert gateway.call("DELETE", f"/v1/auto-replies/{first['id']}").status == 404
    assert [r["name"] for r in gateway.call("GET", "/v1/auto-replies").body["data"]] == ["closed"]


def hours(**change: Any) -> dict[str, Any]:
    return {"business_hours": {"timezone": "UTC", "start": "09:00", "end": "18:00"} | change}


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"keywords": None, "business_hours": None}, "business_hours"),
        ({"keywords": []}, "keywords"),
        ({"keywords": ["?!"]}, "keywords.0"),
        ({"keywords": ["ok", 7]}, "keywords.1"),
        (hours(timezone="Mars/Olympus"), "business_hours.timezone"),
        (hours(timezone=""), "business_hours.timezone"),
        (hours(start="9:00"), "business_hours.start"),
        (hours(end="24:00"), "business_hours.end"),
        (hours(days=["monday"]), "business_hours.days.0"),
        (hours(days=[]), "business_hours.days"),
        (hours(days=["mon", "mon"]), "business_hours.days"),
        ({"business_hours": {"start": "09:00", "end": "18:00"}}, "business_hours.timezone"),
        ({"channels": ["fax"]}, "channels.0"),
        ({"once_per": "soon"}, "once_per"),
        ({"once_per": 0}, "once_per"),
        ({"reply": ""}, "reply"),
        ({"name": "bad name"}, "name"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_invalid_rules_are_422_naming_the_field_and_change_nothing(
    gateway: LocalGateway, change: dict[str, Any], field: str
) -> None:
    body = {"name": "hours", "keywords": ["hours"], "reply": "9 to 6"} | change
    answer = gateway.call("POST", "/v1/auto-replies", body)
    assert answer.status == 422, answer.body
    assert answer.headers["Content-Type"] == "application/problem+json"
    assert answer.body["type"] == "validation-error"
    assert field in [e["field"] for e in answer.body["errors"]], answer.body
    assert gateway.call("GET", "/v1/auto-replies").body["data"] == []


def test_malformed_json_is_400(gateway: LocalGateway) -> None:
    answer = gateway.call("POST", "/v1/auto-replies", raw=b'{"name": ')
    assert answer.status == 400 and answer.body["type"] == "malformed-request"


TWO_RULES = """
[[auto_replies]]
name = "hours"
order = 10
keywords = ["horario", "営業時間"]
reply = "9 to 6"

[[auto_replies]]
name = "closed"
business_hours = { timezone = "Europe/Paris", days = ["mon", "fri"], start = "09:00", end = "18:00" }
channels = ["sms"]
reply = "closed"
once_per = "12h"
"""


def run_cli(tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp / "gateway.toml").write_text("", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env |= {
        "GATEWAY_DATABASE_URL": f"sqlite:///{tmp}/g.db",
        "GATEWAY_CONFIG_FILE": str(tmp / "gateway.toml"),
        "PYTHONPATH": str(ROOT),
    }
    command = [sys.executable, "-m", "gateway.cli", *args]
    return subprocess.run(command, cwd=tmp, env=env, capture_output=True, text=True, timeout=60)


def stored(tmp: Path) -> list[AutoReplyRule]:
    engine = create_engine(f"sqlite:///{tmp}/g.db")
    try:
        with Session(engine) as session:
            return list(session.exec(select(AutoReplyRule).order_by(col(AutoReplyRule.order))))
    finally:
        engine.dispose()


def test_cli_loads_auto_replies_from_toml(tmp_path: Path) -> None:
    (tmp_path / "replies.toml").write_text(TWO_RULES, encoding="utf-8")
    done = run_cli(tmp_path, "auto-replies", "load", "replies.toml")
    assert done.returncode == 0, done
    assert done.stdout.strip() == "loaded 2 auto-replies: hours, closed"
    rows = stored(tmp_path)
    assert [(r.name, r.order, r.once_per) for r in rows] == [("hours", 10, 86400.0), ("closed", 100, 43200.0)]
    assert rows[0].keywords == ["horario", "営業時間"]
    assert rows[1].business_hours == {
        "timezone": "Europe/Paris",
        "days": ["mon", "fri"],
        "start": "09:00",
        "end": "18:00",
    }

    again = run_cli(tmp_path, "auto-replies", "load", "replies.toml")  # replaced by name, not duplicated
    assert again.returncode == 0, again
    assert [r.id for r in stored(tmp_path)] == [r.id for r in rows]

    example = run_cli(tmp_path, "auto-replies", "load", str(ROOT / "config/auto_replies.toml"))
    assert example.returncode == 0, example
    assert len(stored(tmp_path)) == 4


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        (TWO_RULES + '\n[[auto_replies]]\nname = "bad"\nreply = "x"\n', "auto_replies[2].business_hours"),
        (TWO_RULES.replace('"Europe/Paris"', '"Nowhere/Special"'), "auto_replies[1].business_hours.timezone"),
        (TWO_RULES.replace('"horario"', '"???"'), "auto_replies[0]: keywords.0"),
        ("[[auto_replies]\n", "replies.toml"),
    ],
)
def test_cli_load_is_all_or_nothing(tmp_path: Path, text: str, detail: str) -> None:
    (tmp_path / "replies.toml").write_text(text, encoding="utf-8")
    done = run_cli(tmp_path, "auto-replies", "load", "replies.toml")
    assert done.returncode == 1, done
    assert detail in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert stored(tmp_path) == []


def test_cli_load_of_a_missing_file_fails(tmp_path: Path) -> None:
    done = run_cli(tmp_path, "auto-replies", "load", "nope.toml")
    assert done.returncode == 1 and "does not exist" in done.stderr
