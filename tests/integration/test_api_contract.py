"""The public HTTP contract of docs/api.md, end to end against a served gateway and its dispatcher.

Every request goes over a real socket to a LocalGateway (waitress + dispatcher) whose SMS and email
channels point at the local Twilio and SMTP simulators.
"""

from __future__ import annotations

import json
import re
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from sqlalchemy import func, select
from sqlmodel import Session, SQLModel

from gateway import models
from gateway.local import Answer, LocalGateway
from gateway.simulators.twilio import TwilioSimulator, twilio_signature
from tests.conftest import status_is, wait_for

DELIVERS = "+14155550100"
DELIVERS_TOO = "+14155550101"
SILENT = "+14155599999"
PROBLEM_JSON = "application/problem+json"
RFC3339 = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
MAX_BODY = 256 * 1024


# -- helpers -----------------------------------------------------------------------------------------


def row_counts(local: LocalGateway) -> dict[str, int]:
    """The number of rows of every table the gateway defines."""
    with local.gw.engine.connect() as conn:
        return {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in SQLModel.metadata.sorted_tables
        }


def assert_problem(answer: Answer, status: int, slug: str, field: str | None = None) -> dict[str, Any]:
    """An RFC 9457 problem with this status and slug, naming `field` among its errors when given."""
    assert answer.status == status, answer
    assert answer.headers.get("Content-Type", "").startswith(PROBLEM_JSON), answer.headers
    body = answer.body
    assert isinstance(body, dict), body
    assert body["type"] == slug, body
    assert body["status"] == status, body
    assert isinstance(body.get("title"), str) and body["title"], body
    assert isinstance(body.get("detail"), str) and body["detail"], body
    if field is not None:
        fields = [e["field"] for e in body.get("errors") or []]
        assert field in fields, body
    return body


def send_body(to: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"to": to or {"phone": DELIVERS}, "content": {"text": "Your order 42 has shipped."}, **extra}


def send(local: LocalGateway, body: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
    answer = local.call("POST", "/v1/messages", body, **kwargs)
    assert answer.status == 202, answer
    result: dict[str, Any] = answer.body
    return result


def contact_rows(local: LocalGateway) -> int:
    return row_counts(local)["contact"]


# -- bad input: right problem, nothing changed -----------------------------------------------------

OVERSIZED = send_body(content={"text": "x" * (MAX_BODY + 1)})
VALID_RULE = {"name": "sms-only", "route": [{"channel": "sms"}]}

# (id, method, path, body or raw bytes, which key, extra headers, status, slug, field)
BAD_INPUT: list[tuple[str, str, str, Any, str, dict[str, str], int, str, str | None]] = [
    ("phone-short", "POST", "/v1/messages", send_body({"phone": "+1 555"}), "admin", {}, 422,
     "validation-error", "to.phone"),
    ("phone-12", "POST", "/v1/messages", send_body({"phone": "12"}), "admin", {}, 422,
     "validation-error", "to.phone"),
    ("unknown-field", "POST", "/v1/messages", send_body(foo=1), "admin", {}, 422,
     "validation-error", "foo"),
    ("unknown-nested-field", "POST", "/v1/messages", send_body({"phone": DELIVERS, "foo": 1}), "admin",
     {}, 422, "validation-error", "to.foo"),
    ("to-string", "POST", "/v1/messages", {"to": "abc", "content": {"text": "hi"}}, "admin", {}, 422,
     "validation-error", "to"),
    ("channels-string", "POST", "/v1/messages", send_body(channels="sms"), "admin", {}, 422,
     "validation-error", "channels"),
    ("text-number", "POST", "/v1/messages", {"to": {"phone": DELIVERS}, "content": {"text": 5}}, "admin",
     {}, 422, "validation-error", "content.text"),
    ("missing-to", "POST", "/v1/messages", {"content": {"text": "hi"}}, "admin", {}, 422,
     "validation-error", "to"),
    ("empty-to", "POST", "/v1/messages", {"to": {}, "content": {"text": "hi"}}, "admin", {}, 422,
     "validation-error", "to"),
    ("unknown-category", "POST", "/v1/messages", send_body(category="spam"), "admin", {}, 422,
     "validation-error", "category"),
    ("send-at-no-offset", "POST", "/v1/messages", send_body(send_at="2026-12-01T00:00:00"), "admin", {},
     422, "validation-error", "send_at"),
    ("ttl-soon", "POST", "/v1/messages", send_body(ttl="soon"), "admin", {}, 422,
     "validation-error", "ttl"),
    ("idempotency-key-too-long", "POST", "/v1/messages", send_body(), "admin",
     {"Idempotency-Key": "k" * 256}, 422, "validation-error", None),
    ("oversized", "POST", "/v1/messages", OVERSIZED, "admin", {}, 413, "payload-too-large", None),
    ("malformed-json", "POST", "/v1/messages", b'{"to": {"phone": ', "admin", {}, 400,
     "malformed-request", None),
    ("missing-key", "POST", "/v1/messages", send_body(), "none", {}, 401, "unauthorized", None),
    ("wrong-key", "POST", "/v1/messages", send_body(), "wrong", {}, 401, "unauthorized", None),
    ("read-key-sends", "POST", "/v1/messages", send_body(), "read", {}, 403, "forbidden", None),
    ("send-key-creates-rule", "POST", "/v1/routing-rules", VALID_RULE, "send", {}, 403, "forbidden", None),
    ("send-key-lists-rules", "GET", "/v1/routing-rules", None, "send", {}, 403, "forbidden", None),
    ("contact-bad-phone", "POST", "/v1/contacts", {"phone": "12"}, "admin", {}, 422,
     "validation-error", None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "key_kind", "headers", "status", "slug", "field"),
    [pytest.param(*case[1:], id=case[0]) for case in BAD_INPUT],
)
def test_bad_input_is_a_problem_and_changes_nothing(
    gateway: LocalGateway,
    method: str,
    path: str,
    body: Any,
    key_kind: str,
    headers: dict[str, str],
    status: int,
    slug: str,
    field: str | None,
) -> None:
    keys = {
        "admin": gateway.key,
        "none": "",
        "wrong": "gw_not-a-key-anybody-was-given",
        "read": gateway.new_key("read"),
        "send": gateway.new_key("send"),
    }
    before = row_counts(gateway)
    raw = body if isinstance(body, bytes) else None
    answer = gateway.call(
        method, path, None if raw is not None else body, key=keys[key_kind], headers=headers, raw=raw
    )
    problem = assert_problem(answer, status, slug, field)
    if key_kind == "admin" and slug == "validation-error" and field is None:
        assert problem.get("errors"), problem
    assert row_counts(gateway) == before


def test_read_key_reads_and_send_key_sends(gateway: LocalGateway) -> None:
    sent = send(gateway, send_body(), key=gateway.new_key("send"))
    read = gateway.new_key("read")
    assert gateway.call("GET", f"/v1/messages/{sent['id']}", key=read).status == 200
    assert gateway.call("GET", "/v1/messages", key=read).status == 200
    assert gateway.call("GET", f"/v1/contacts/{sent['contact_id']}", key=read).status == 200
    assert_problem(gateway.call("POST", f"/v1/messages/{sent['id']}/cancel", key=read), 403, "forbidden")


def test_long_idempotency_key_names_the_header(gateway: LocalGateway) -> None:
    answer = gateway.call("POST", "/v1/messages", send_body(), headers={"Idempotency-Key": "k" * 256})
    problem = assert_problem(answer, 422, "validation-error")
    assert [e["field"].lower() for e in problem["errors"]] == ["idempotency-key"]


def test_idempotency_key_of_255_characters_is_accepted(gateway: LocalGateway) -> None:
    answer = gateway.call("POST", "/v1/messages", send_body(), headers={"Idempotency-Key": "k" * 255})
    assert answer.status == 202, answer


# -- idempotency -------------------------------------------------------------------------------------


def test_same_idempotency_key_and_body_sends_once(gateway: LocalGateway, twilio: TwilioSimulator) -> None:
    body = send_body(metadata={"order": "42"})
    headers = {"Idempotency-Key": "order-42-shipped"}
    first = gateway.call("POST", "/v1/messages", body, headers=headers)
    second = gateway.call("POST", "/v1/messages", body, headers=headers)
    assert first.status == 202, first
    assert (second.status, second.body) == (first.status, first.body)
    wait_for(gateway, first.body["id"], status_is("delivered"))
    third = gateway.call("POST", "/v1/messages", body, headers=headers)
    assert (third.status, third.body) == (first.status, first.body)
    assert twilio.sends_to(DELIVERS) == 1
    assert row_counts(gateway)["message"] == 1


def test_same_idempotency_key_with_another_body_conflicts(gateway: LocalGateway) -> None:
    headers = {"Idempotency-Key": "order-42-shipped"}
    first = gateway.call("POST", "/v1/messages", send_body(), headers=headers)
    assert first.status == 202, first
    before = row_counts(gateway)
    other = send_body(metadata={"order": "43"})
    assert_problem(gateway.call("POST", "/v1/messages", other, headers=headers), 422, "idempotency-conflict")
    assert row_counts(gateway) == before


def test_idempotency_keys_are_scoped_per_api_key(gateway: LocalGateway, twilio: TwilioSimulator) -> None:
    headers = {"Idempotency-Key": "order-42-shipped"}
    first = send(gateway, send_body(), headers=headers)
    second = send(gateway, send_body(), headers=headers, key=gateway.new_key("send"))
    assert second["id"] != first["id"]
    assert second["status"] == "queued"
    for message_id in (first["id"], second["id"]):
        wait_for(gateway, message_id, status_is("delivered"))
    assert twilio.sends_to(DELIVERS) == 2


# -- messages ----------------------------------------------------------------------------------------


def test_send_answers_with_plan(gateway: LocalGateway) -> None:
    answer = send(gateway, send_body({"phone": DELIVERS, "email": "hana@example.com"}))
    assert answer["id"].startswith("msg_")
    assert answer["contact_id"].startswith("ct_")
    assert answer["status"] == "queued"
    assert [s["channel"] for s in answer["plan"]] == ["sms", "email"]
    assert answer["plan"][0]["address"] == DELIVERS
    assert answer["plan"][1]["address"] == "hana@example.com"
    assert all(isinstance(s["because"], str) and s["because"] for s in answer["plan"])
    assert all(set(s) >= {"channel", "reason"} for s in answer["skipped"])


def test_message_state_shape(gateway: LocalGateway) -> None:
    sent = send(gateway, send_body(metadata={"order": "42"}))
    message = wait_for(gateway, sent["id"], status_is("delivered"))
    assert set(message) >= {
        "id", "status", "channel", "contact_id", "category", "created_at", "updated_at", "metadata",
        "plan", "skipped", "attempts",
    }  # fmt: skip
    assert message["id"] == sent["id"]
    assert message["contact_id"] == sent["contact_id"]
    assert (message["status"], message["channel"], message["category"]) == (
        "delivered",
        "sms",
        "transactional",
    )
    assert message["metadata"] == {"order": "42"}
    assert RFC3339.match(message["created_at"]) and RFC3339.match(message["updated_at"]), message
    assert message["plan"] == sent["plan"]
    assert message["skipped"] == sent["skipped"]
    [attempt] = message["attempts"]
    assert set(attempt) >= {
        "id", "channel", "provider_message_id", "status", "error", "created_at", "updated_at",
    }  # fmt: skip
    assert attempt["id"].startswith("att_")
    assert attempt["channel"] == "sms"
    assert attempt["provider_message_id"].startswith("SM")
    assert attempt["status"] == "delivered"
    assert attempt["error"] is None
    assert RFC3339.match(attempt["created_at"]) and RFC3339.match(attempt["updated_at"]), attempt


def test_unknown_message_is_not_found(gateway: LocalGateway) -> None:
    assert_problem(gateway.call("GET", "/v1/messages/msg_doesnotexist"), 404, "not-found")


def _list(local: LocalGateway, query: str) -> dict[str, Any]:
    answer = local.call("GET", "/v1/messages?" + query)
    assert answer.status == 200, answer
    assert set(answer.body) == {"data", "next_cursor"}
    body: dict[str, Any] = answer.body
    return body


def test_message_list_newest_first_with_paging_and_filters(gateway: LocalGateway) -> None:
    ids: list[str] = []
    for _ in range(3):
        ids.append(send(gateway, send_body())["id"])
    ids.append(send(gateway, send_body({"phone": DELIVERS_TOO}))["id"])
    failed = send(gateway, send_body(channels=["whatsapp"]))
    assert failed["status"] == "failed"
    ids.append(failed["id"])
    for message_id in ids[:4]:
        wait_for(gateway, message_id, status_is("delivered"))
    newest_first = ids[::-1]

    assert [m["id"] for m in _list(gateway, "")["data"]] == newest_first

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = _list(gateway, "limit=2" + (f"&cursor={quote(cursor)}" if cursor else ""))
        assert len(page["data"]) <= 2
        seen += [m["id"] for m in page["data"]]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            break
        assert pages < 10, "paging does not end"
    assert seen == newest_first
    assert pages == 3

    contact_a = gateway.call("GET", f"/v1/messages/{ids[0]}").body["contact_id"]
    contact_b = gateway.call("GET", f"/v1/messages/{ids[3]}").body["contact_id"]
    assert contact_a != contact_b
    by_a = [m["id"] for m in _list(gateway, f"contact_id={contact_a}")["data"]]
    assert by_a == [ids[4], ids[2], ids[1], ids[0]]
    assert [m["id"] for m in _list(gateway, f"contact_id={contact_b}")["data"]] == [ids[3]]

    assert [m["id"] for m in _list(gateway, "status=failed")["data"]] == [ids[4]]
    assert [m["id"] for m in _list(gateway, "status=delivered")["data"]] == newest_first[1:]
    assert [m["id"] for m in _list(gateway, "status=delivered,failed")["data"]] == newest_first
    assert _list(gateway, "status=cancelled,expired")["data"] == []

    since = gateway.call("GET", f"/v1/messages/{ids[2]}").body["created_at"]
    assert [m["id"] for m in _list(gateway, "since=" + quote(since))["data"]] == newest_first[:3]

    combined = _list(gateway, f"contact_id={contact_a}&status=delivered&limit=1")
    assert [m["id"] for m in combined["data"]] == [ids[2]]
    assert combined["next_cursor"] is not None


@pytest.mark.parametrize("limit", ["0", "500", "201", "abc"])
def test_message_list_limit_out_of_range(gateway: LocalGateway, limit: str) -> None:
    assert_problem(gateway.call("GET", f"/v1/messages?limit={limit}"), 422, "validation-error", "limit")


def test_message_list_limit_200_is_allowed(gateway: LocalGateway) -> None:
    assert gateway.call("GET", "/v1/messages?limit=200").status == 200


@pytest.mark.parametrize(
    ("bad", "field"),
    [
        pytest.param(send_body(category="spam"), "messages.1.category", id="schema"),
        pytest.param(send_body({"phone": "12"}), "messages.1.to.phone", id="phone"),
    ],
)
def test_batch_reports_each_message_in_order(gateway: LocalGateway, bad: dict[str, Any], field: str) -> None:
    good = send_body()
    answer = gateway.call(
        "POST", "/v1/messages/batch", {"messages": [good, bad, send_body({"phone": DELIVERS_TOO})]}
    )
    assert answer.status == 202, answer
    first, middle, last = answer.body["results"]
    assert set(middle) == {"error"}, middle
    problem = middle["error"]
    assert problem["type"] == "validation-error"
    assert problem["status"] == 422
    assert field in [e["field"] for e in problem["errors"]], problem
    for accepted in (first, last):
        assert accepted["id"].startswith("msg_"), accepted
        assert accepted["status"] == "queued"
        wait_for(gateway, accepted["id"], status_is("delivered"))
    assert row_counts(gateway)["message"] == 2


def test_batch_of_more_than_1000_is_rejected(gateway: LocalGateway) -> None:
    before = row_counts(gateway)
    answer = gateway.call("POST", "/v1/messages/batch", {"messages": [send_body()] * 1001})
    assert_problem(answer, 422, "validation-error", "messages")
    assert row_counts(gateway) == before


def test_message_without_a_channel_is_recorded_as_failed(gateway: LocalGateway) -> None:
    answer = send(gateway, send_body(channels=["whatsapp"]))
    assert answer["status"] == "failed"
    assert answer["reason"] == "no-channel"
    assert answer["plan"] == []
    [skip] = answer["skipped"]
    assert skip["channel"] == "whatsapp"
    assert isinstance(skip["reason"], str) and skip["reason"]
    message = gateway.call("GET", f"/v1/messages/{answer['id']}").body
    assert (message["status"], message["reason"]) == ("failed", "no-channel")
    assert message["attempts"] == []
    assert message["skipped"] == answer["skipped"]


# -- contacts ----------------------------------------------------------------------------------------


def create_contact(local: LocalGateway, **fields: Any) -> dict[str, Any]:
    answer = local.call("POST", "/v1/contacts", fields)
    assert answer.status == 201, answer
    result: dict[str, Any] = answer.body
    return result


def test_create_contact_normalises(gateway: LocalGateway) -> None:
    contact = create_contact(
        gateway, external_id="crm-42", phone="(415) 555-0100", email="Hana@Example.COM", name="Hana"
    )
    assert contact["id"].startswith("ct_")
    assert contact["phone"] == DELIVERS
    assert contact["country"] == "US"
    assert contact["timezone"] == "America/Los_Angeles"
    assert contact["email"] == "hana@example.com"
    assert (contact["external_id"], contact["name"]) == ("crm-42", "Hana")
    assert gateway.call("GET", f"/v1/contacts/{contact['id']}").body == contact


def test_create_contact_with_country(gateway: LocalGateway) -> None:
    contact = create_contact(gateway, phone="090-1234-5678", country="JP")
    assert (contact["phone"], contact["country"], contact["timezone"]) == (
        "+819012345678",
        "JP",
        "Asia/Tokyo",
    )


def test_duplicate_external_id_conflicts(gateway: LocalGateway) -> None:
    create_contact(gateway, external_id="crm-42", phone=DELIVERS)
    before = row_counts(gateway)
    answer = gateway.call("POST", "/v1/contacts", {"external_id": "crm-42", "email": "x@example.com"})
    assert_problem(answer, 409, "conflict")
    assert row_counts(gateway) == before


def test_unknown_contact_is_not_found(gateway: LocalGateway) -> None:
    assert_problem(gateway.call("GET", "/v1/contacts/ct_doesnotexist"), 404, "not-found")


def test_patch_and_look_up_contacts(gateway: LocalGateway) -> None:
    contact = create_contact(gateway, external_id="crm-42", phone=DELIVERS, email="hana@example.com")
    create_contact(gateway, external_id="crm-43", phone=DELIVERS_TOO, email="other@example.com")
    patch = {"name": "Hana S", "tags": ["vip", "b2b"], "identities": {"telegram": "123"}}
    answer = gateway.call("PATCH", f"/v1/contacts/{contact['id']}", patch)
    assert answer.status == 200, answer
    patched = answer.body
    assert patched["name"] == "Hana S"
    assert sorted(patched["tags"]) == ["b2b", "vip"]
    assert patched["identities"] == {"telegram": "123"}
    assert patched["phone"] == DELIVERS
    assert gateway.call("GET", f"/v1/contacts/{contact['id']}").body == patched

    for query in (
        "external_id=crm-42",
        "phone=" + quote(DELIVERS),
        "email=hana%40example.com",
        "identity=telegram%3A123",
    ):
        found = gateway.call("GET", "/v1/contacts?" + query)
        assert found.status == 200, (query, found)
        assert [c["id"] for c in found.body["data"]] == [contact["id"]], query
        assert found.body["next_cursor"] is None
    for query in ("external_id=crm-44", "identity=telegram%3A124", "email=nobody%40example.com"):
        assert gateway.call("GET", "/v1/contacts?" + query).body["data"] == [], query


def test_contact_channels(gateway: LocalGateway) -> None:
    contact = create_contact(gateway, phone=DELIVERS, email="hana@example.com")
    answer = gateway.call("GET", f"/v1/contacts/{contact['id']}/channels")
    assert answer.status == 200, answer
    rows = answer.body["data"]
    by_channel = {r["channel"]: r for r in rows}
    assert len(by_channel) == len(rows), rows
    for channel, address in (("sms", DELIVERS), ("email", "hana@example.com")):
        row = by_channel[channel]
        assert set(row) >= {"channel", "address", "reachability", "reason", "since", "window_open_until",
                            "opted_out"}  # fmt: skip
        assert (row["address"], row["reachability"], row["opted_out"]) == (address, "unknown", False)


def test_contact_timeline(gateway: LocalGateway) -> None:
    contact = create_contact(gateway, phone=DELIVERS)
    first = send(gateway, {"to": {"contact_id": contact["id"]}, "content": {"text": "one"}})
    second = send(gateway, {"to": {"contact_id": contact["id"]}, "content": {"text": "two"}})
    for sent in (first, second):
        assert sent["contact_id"] == contact["id"]
        wait_for(gateway, sent["id"], status_is("delivered"))
    answer = gateway.call("GET", f"/v1/contacts/{contact['id']}/timeline")
    assert answer.status == 200, answer
    entries = answer.body["data"]
    assert [e["id"] for e in entries] == [first["id"], second["id"]]
    assert [e["text"] for e in entries] == ["one", "two"]
    for entry in entries:
        assert (entry["direction"], entry["channel"], entry["status"]) == ("outbound", "sms", "delivered")
        assert RFC3339.match(entry["at"]), entry
    assert entries[0]["at"] <= entries[1]["at"]


def test_delete_contact_erases_it_and_keeps_delivery_records(gateway: LocalGateway) -> None:
    contact = create_contact(
        gateway,
        external_id="crm-42",
        phone=DELIVERS,
        email="hana@example.com",
        identities={"telegram": "123"},
    )
    sent = send(gateway, {"to": {"contact_id": contact["id"]}, "content": {"text": "secret"},
                          "metadata": {"order": "42"}})  # fmt: skip
    wait_for(gateway, sent["id"], status_is("delivered"))
    timeline = gateway.call("GET", f"/v1/contacts/{contact['id']}/timeline").body["data"]
    assert [e["text"] for e in timeline] == ["secret"]

    answer = gateway.call("DELETE", f"/v1/contacts/{contact['id']}")
    assert answer.status == 204, answer
    assert answer.body is None
    assert_problem(gateway.call("GET", f"/v1/contacts/{contact['id']}"), 404, "not-found")
    assert gateway.call("GET", "/v1/contacts?phone=" + quote(DELIVERS)).body["data"] == []
    assert gateway.call("GET", "/v1/contacts?external_id=crm-42").body["data"] == []
    assert gateway.call("GET", "/v1/contacts?identity=telegram%3A123").body["data"] == []
    assert_problem(gateway.call("GET", f"/v1/contacts/{contact['id']}/timeline"), 404, "not-found")

    message = gateway.call("GET", f"/v1/messages/{sent['id']}")
    assert message.status == 200, message
    assert message.body["status"] == "delivered"
    assert message.body["metadata"] is None
    assert [a["status"] for a in message.body["attempts"]] == ["delivered"]
    # The delivery record that is kept is anonymous: no address of the erased person is left in it.
    for personal in (DELIVERS, "hana@example.com", "crm-42", "secret"):
        assert personal not in json.dumps(message.body), (personal, message.body)
    with Session(gateway.gw.engine) as session:
        stored = session.get(models.Message, sent["id"])
        assert stored is not None
        assert stored.content is None
        assert stored.metadata_ is None


# -- routing rules -----------------------------------------------------------------------------------


def create_rule(local: LocalGateway, rule: dict[str, Any]) -> dict[str, Any]:
    answer = local.call("POST", "/v1/routing-rules", rule)
    assert answer.status == 201, answer
    result: dict[str, Any] = answer.body
    return result


def rule_names(local: LocalGateway) -> list[str]:
    answer = local.call("GET", "/v1/routing-rules")
    assert answer.status == 200, answer
    return [r["name"] for r in answer.body["data"]]


def test_routing_rule_lifecycle(gateway: LocalGateway) -> None:
    late = create_rule(gateway, {"name": "sms-later", "order": 20, "route": [{"channel": "sms"}]})
    early = create_rule(
        gateway,
        {
            "name": "email-first",
            "order": 10,
            "when": {"country": ["US"], "category": ["transactional"]},
            "route": [{"channel": "email"}, {"channel": "sms", "after": "2m", "until": "delivered"}],
            "retry": {"attempts": 2, "backoff": "30s"},
        },
    )
    assert late["id"].startswith("rule_") and early["id"].startswith("rule_")
    assert early["route"][1] == {"channel": "sms", "after": "2m", "until": "delivered"}
    assert early["when"]["country"] == ["US"]
    assert rule_names(gateway) == ["email-first", "sms-later"]
    assert gateway.call("GET", f"/v1/routing-rules/{early['id']}").body == early

    replaced = gateway.call(
        "PUT",
        f"/v1/routing-rules/{late['id']}",
        {"name": "sms-now", "order": 5, "route": [{"channel": "sms"}]},
    )
    assert replaced.status == 200, replaced
    assert (replaced.body["id"], replaced.body["name"], replaced.body["order"]) == (late["id"], "sms-now", 5)
    assert rule_names(gateway) == ["sms-now", "email-first"]

    assert gateway.call("DELETE", f"/v1/routing-rules/{late['id']}").status == 204
    assert_problem(gateway.call("GET", f"/v1/routing-rules/{late['id']}"), 404, "not-found")
    assert rule_names(gateway) == ["email-first"]


def test_duplicate_rule_name_conflicts(gateway: LocalGateway) -> None:
    create_rule(gateway, {"name": "sms-only", "route": [{"channel": "sms"}]})
    other = create_rule(gateway, {"name": "email-only", "route": [{"channel": "email"}]})
    before = row_counts(gateway)
    answer = gateway.call("POST", "/v1/routing-rules", {"name": "sms-only", "route": [{"channel": "email"}]})
    assert_problem(answer, 409, "conflict")
    renamed = gateway.call(
        "PUT", f"/v1/routing-rules/{other['id']}", {"name": "sms-only", "route": [{"channel": "email"}]}
    )
    assert_problem(renamed, 409, "conflict")
    assert row_counts(gateway) == before
    assert rule_names(gateway) == ["email-only", "sms-only"]


def test_rule_waiting_for_a_receipt_the_channel_cannot_give_is_rejected(gateway: LocalGateway) -> None:
    before = row_counts(gateway)
    rule = {"name": "email-delivered", "route": [{"channel": "email", "until": "delivered"}]}
    assert_problem(gateway.call("POST", "/v1/routing-rules", rule), 422, "validation-error", "route.0.until")
    assert row_counts(gateway) == before


def test_explain_creates_nothing(gateway: LocalGateway) -> None:
    before = row_counts(gateway)
    answer = gateway.call(
        "POST", "/v1/routing/explain", {"to": {"phone": DELIVERS, "email": "hana@example.com"}}
    )
    assert answer.status == 200, answer
    assert set(answer.body) >= {"plan", "skipped", "rule"}
    assert [s["channel"] for s in answer.body["plan"]] == ["sms", "email"]
    assert answer.body["rule"] is None
    assert row_counts(gateway) == before


def test_explain_follows_a_matching_rule(gateway: LocalGateway) -> None:
    rule = create_rule(
        gateway,
        {"name": "us-email-first", "order": 10, "when": {"country": ["US"]},
         "route": [{"channel": "email"}, {"channel": "sms"}]},
    )  # fmt: skip
    create_rule(
        gateway, {"name": "jp-sms", "order": 5, "when": {"country": ["JP"]}, "route": [{"channel": "sms"}]}
    )
    before = row_counts(gateway)
    answer = gateway.call(
        "POST", "/v1/routing/explain", {"to": {"phone": DELIVERS, "email": "hana@example.com"}}
    )
    assert answer.status == 200, answer
    plan = answer.body["plan"]
    assert [s["channel"] for s in plan] == ["email", "sms"]
    assert [s["because"] for s in plan] == ["rule us-email-first"] * 2
    assert answer.body["rule"] == {"id": rule["id"], "name": "us-email-first"}
    assert row_counts(gateway) == before


def test_explain_needs_admin(gateway: LocalGateway) -> None:
    answer = gateway.call(
        "POST", "/v1/routing/explain", {"to": {"phone": DELIVERS}}, key=gateway.new_key("send")
    )
    assert_problem(answer, 403, "forbidden")


# -- meta --------------------------------------------------------------------------------------------


def test_healthz_needs_no_key(gateway: LocalGateway) -> None:
    answer = gateway.call("GET", "/healthz", key="")
    assert (answer.status, answer.body) == (200, {"status": "ok"})


def test_openapi_documents_every_v1_endpoint(gateway: LocalGateway) -> None:
    answer = gateway.call("GET", "/openapi.json", key="")
    assert answer.status == 200, answer
    doc = answer.body
    assert doc["openapi"].startswith("3.1")
    expected = {
        "/v1/messages": {"get", "post"},
        "/v1/messages/batch": {"post"},
        "/v1/messages/{message_id}": {"get"},
        "/v1/messages/{message_id}/cancel": {"post"},
        "/v1/contacts": {"get", "post"},
        "/v1/contacts/{contact_id}": {"get", "patch", "delete"},
        "/v1/contacts/{contact_id}/channels": {"get"},
        "/v1/contacts/{contact_id}/timeline": {"get"},
        "/v1/routing-rules": {"get", "post"},
        "/v1/routing-rules/{rule_id}": {"get", "put", "delete"},
        "/v1/routing/explain": {"post"},
    }
    for path, methods in expected.items():
        assert path in doc["paths"], path
        assert set(doc["paths"][path]) >= methods, (path, doc["paths"][path].keys())
    assert "SendRequest" in doc["components"]["schemas"]
    body_schema = doc["paths"]["/v1/messages"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema == {"$ref": "#/components/schemas/SendRequest"}


# -- provider webhooks -------------------------------------------------------------------------------


def _twilio_callback(local: LocalGateway, attempt: dict[str, Any], signature: str | None) -> Answer:
    path = f"/webhooks/twilio/status?attempt={attempt['id']}"
    headers = {"Content-Type": "application/x-www-form-urlencoded"}
    if signature is not None:
        headers["X-Twilio-Signature"] = signature
    return local.call("POST", path, raw=urlencode(_callback_form(attempt)).encode(), key="", headers=headers)


def _callback_form(attempt: dict[str, Any]) -> dict[str, str]:
    return {
        "MessageSid": attempt["provider_message_id"],
        "MessageStatus": "delivered",
        "AccountSid": "AC" + "0123456789abcdef" * 2,
        "To": SILENT,
        "From": "+14155550000",
    }


def test_forged_twilio_status_callback_is_refused(gateway: LocalGateway, twilio: TwilioSimulator) -> None:
    sent = send(gateway, send_body({"phone": SILENT}))
    # Settled: on PostgreSQL one read of a message can see its attempt's commit but not the message's.
    message = wait_for(
        gateway,
        sent["id"],
        lambda m: m["status"] == "sent" and bool(m["attempts"] and m["attempts"][0]["provider_message_id"]),
    )
    [attempt] = message["attempts"]
    assert attempt["status"] == "accepted", message
    assert twilio.sends_to(SILENT) == 1
    before = row_counts(gateway)

    wrong = twilio_signature("not-the-auth-token", gateway.url + "/webhooks/twilio/status", {})
    for signature in (None, wrong):
        answer = _twilio_callback(gateway, attempt, signature)
        assert_problem(answer, 403, "forbidden")
    after = gateway.call("GET", f"/v1/messages/{sent['id']}").body
    assert after["status"] == message["status"]
    assert after["attempts"] == message["attempts"]
    assert row_counts(gateway) == before

    url = gateway.url + f"/webhooks/twilio/status?attempt={attempt['id']}"
    signed = twilio_signature(twilio.auth_token, url, _callback_form(attempt))
    answer = _twilio_callback(gateway, attempt, signed)
    assert answer.status == 200, answer
    delivered = wait_for(gateway, sent["id"], status_is("delivered"), timeout=5)
    assert delivered["attempts"][0]["status"] == "delivered"
