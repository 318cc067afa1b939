"""The send endpoints' common case, accepted without ORM objects (`gateway/services/recipients.py`): the
same contacts, plans and answers as the general path, which takes over when a request would change a
contact."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from gateway import store
from gateway.errors import ProblemError
from gateway.local import LocalGateway, simulator_settings
from gateway.schemas import SendRequest, To
from gateway.services import messages
from gateway.services.recipients import Recipient, resolve_simple
from gateway.simulators.smtp import SmtpSimulator
from gateway.simulators.telegram import TelegramSimulator
from gateway.simulators.twilio import TwilioSimulator

PHONE = "+14155550101"


def batch(local: LocalGateway, *tos: dict[str, Any]) -> list[dict[str, Any]]:
    bodies = [{"to": to, "content": {"text": f"message {i}"}} for i, to in enumerate(tos)]
    answer = local.call("POST", "/v1/messages/batch", {"messages": bodies})
    assert answer.status == 202, answer
    return list(answer.body["results"])


def contact(local: LocalGateway, contact_id: str) -> dict[str, Any]:
    answer = local.call("GET", f"/v1/contacts/{contact_id}")
    assert answer.status == 200, answer
    return dict(answer.body)


def contact_count(local: LocalGateway) -> int:
    with local.gw.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM contact")).scalar_one())


def resolve(local: LocalGateway, *tos: dict[str, Any]) -> list[Any] | None:
    """`resolve_simple` on its own, rolled back."""
    with store.transaction(local.gw.engine) as session:
        found = resolve_simple(session, local.gw, [To.model_validate(t) for t in tos])
        session.rollback()
        return None if found is None else found.recipients


def test_a_recipient_named_twice_in_one_batch_is_one_new_contact(gateway: LocalGateway) -> None:
    results = batch(gateway, {"email": "Ann@Example.test"}, {"email": "ann@example.test"}, {"phone": PHONE})
    first, second, third = (r["contact_id"] for r in results)
    assert first == second != third
    assert contact_count(gateway) == 2
    assert contact(gateway, first)["email"] == "ann@example.test"
    assert contact(gateway, third)["phone"] == PHONE


def test_a_batch_that_changes_a_contact_takes_the_general_path(gateway: LocalGateway) -> None:
    tos = ({"email": "cy@example.test"}, {"email": "cy@example.test", "tags": ["vip"], "name": "Cy"})
    assert resolve(gateway, *tos) is None  # the second would change the contact the first creates
    results = batch(gateway, *tos)
    assert results[0]["contact_id"] == results[1]["contact_id"]
    found = contact(gateway, results[0]["contact_id"])
    assert (found["tags"], found["name"]) == (["vip"], "Cy")
    assert contact_count(gateway) == 1


def test_phone_is_matched_before_email_and_a_known_contact_is_not_rewritten(gateway: LocalGateway) -> None:
    [by_phone] = batch(gateway, {"phone": PHONE, "email": "dee@example.test", "name": "Dee"})
    [by_email] = batch(gateway, {"email": "eve@example.test"})
    before = contact(gateway, by_phone["contact_id"])
    found = resolve(gateway, {"phone": PHONE, "email": "eve@example.test", "name": "Dee"})
    assert found is not None and isinstance(found[0], Recipient)
    assert found[0].contact_id == by_phone["contact_id"]
    [again] = batch(gateway, {"phone": PHONE, "email": "eve@example.test", "name": "Dee"})
    assert again["contact_id"] == by_phone["contact_id"] != by_email["contact_id"]
    assert contact(gateway, by_phone["contact_id"])["updated_at"] == before["updated_at"]
    assert contact_count(gateway) == 2


def test_a_bad_address_refuses_its_message_alone(gateway: LocalGateway) -> None:
    results = batch(gateway, {"email": "fay@example.test"}, {"phone": "12"}, {"email": "not an address"})
    assert results[0]["status"] == "queued"
    assert [e["field"] for e in results[1]["error"]["errors"]] == ["messages.1.to.phone"]
    assert [e["field"] for e in results[2]["error"]["errors"]] == ["messages.2.to.email"]
    assert contact_count(gateway) == 1


def test_known_identities_and_states_shape_the_plan_as_explain_says(
    make_gateway: Callable[..., LocalGateway], telegram: TelegramSimulator
) -> None:
    local = make_gateway(**telegram.gateway_settings())
    known = local.call(
        "POST", "/v1/contacts", {"phone": PHONE, "identities": {"telegram": "4242"}, "tags": ["vip"]}
    )
    assert known.status == 201, known
    tos = [
        {"phone": PHONE},
        {"email": "gus@example.test"},
        {"phone": "+14155550102", "email": "hal@example.test"},
    ]
    found = resolve(local, *tos)
    assert found is not None and all(isinstance(r, Recipient) for r in found)
    assert found[0].facts.identities == {"telegram": "4242"}
    assert found[0].facts.tags == ("vip",)
    results = batch(local, *tos)
    assert results[0]["contact_id"] == known.body["id"]
    assert results[0]["plan"][0]["channel"] == "telegram"
    for to, result in zip(tos, results, strict=True):
        explained = local.call("POST", "/v1/routing/explain", {"to": to})
        assert explained.status == 200, explained
        assert result["plan"] == explained.body["plan"], to


def send_at_once(local: LocalGateway, bodies: list[dict[str, Any]]) -> list[Any]:
    """POST /v1/messages with every body at the same moment, one thread each (single requests that arrive
    together are written in one transaction: `gw.accepts`)."""
    answers: list[Any] = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def post(i: int) -> None:
        start.wait()
        answers[i] = local.call("POST", "/v1/messages", bodies[i])

    threads = [threading.Thread(target=post, args=(i,)) for i in range(len(bodies))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return answers


def test_single_sends_arriving_together_to_one_new_person_make_one_contact(gateway: LocalGateway) -> None:
    body = {"to": {"email": "ivy@example.test"}, "content": {"text": "hello"}}
    answers = send_at_once(gateway, [body] * 8)
    assert all(a.status == 202 for a in answers), answers
    assert len({a.body["contact_id"] for a in answers}) == 1
    assert len({a.body["id"] for a in answers}) == 8
    assert contact_count(gateway) == 1


def test_a_bad_send_arriving_with_good_ones_is_refused_alone(gateway: LocalGateway) -> None:
    bodies = [{"to": {"phone": f"+1415555040{i}"}, "content": {"text": "hello"}} for i in range(6)]
    bodies[3] = {"to": {"phone": "12"}, "content": {"text": "hello"}}
    bodies[5] = {"to": {"email": "jo@example.test", "tags": ["vip"]}, "content": {"text": "hello"}}
    answers = send_at_once(gateway, bodies)
    assert [a.status for a in answers] == [202, 202, 202, 422, 202, 202], answers
    assert [e["field"] for e in answers[3].body["errors"]] == ["to.phone"]
    assert contact_count(gateway) == 5
    assert contact(gateway, answers[5].body["contact_id"])["tags"] == ["vip"]


def test_when_a_shared_transaction_fails_each_request_is_written_alone(
    gateway: LocalGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = messages._write_requests

    def fails_together(session: Any, gw: Any, items: Any, *rest: Any) -> Any:
        if len(items) > 1:
            raise RuntimeError("the shared transaction failed")
        return real(session, gw, items, *rest)

    monkeypatch.setattr(messages, "_write_requests", fails_together)
    bodies = [{"to": {"email": "kim@example.test"}}, {"to": {"phone": "12"}}]
    items = [(None, SendRequest.model_validate({**b, "content": {"text": "hi"}})) for b in bodies]
    first, second = messages._write_together(gateway.gw, items)
    assert not isinstance(first, Exception) and first[1]["status"] == "queued"
    assert isinstance(second, ProblemError)
    assert contact(gateway, first[1]["contact_id"])["email"] == "kim@example.test"


def test_phone_numbers_are_parsed_before_the_transaction_takes_the_writer_lock(
    tmp_path: Path, twilio: TwilioSimulator, smtp: SmtpSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite, whose one writer lock is the gateway's own (PostgreSQL has none to hold)."""
    from gateway.services import contacts

    held: list[bool] = []
    real = contacts.normalize_phone
    settings = simulator_settings(twilio, smtp) | {"database_url": f"sqlite:///{tmp_path / 'gateway.db'}"}
    with LocalGateway(settings, with_dispatcher=False) as gateway:
        lock = store._writer_lock(gateway.gw.engine)
        assert lock is not None

        def watched(*args: Any) -> Any:
            held.append(lock._lock._is_owned())  # type: ignore[attr-defined]
            return real(*args)

        monkeypatch.setattr(contacts, "normalize_phone", watched)
        results = batch(gateway, {"phone": PHONE}, {"phone": "+14155550102"}, {"phone": "12"})
        assert [r.get("status") for r in results[:2]] == ["queued", "queued"]
        assert results[2]["error"]["errors"][0]["field"] == "messages.2.to.phone", results[2]
        body = {"to": {"phone": "+14155550103"}, "content": {"text": "hi"}}
        one = gateway.call("POST", "/v1/messages", body)
        assert one.status == 202, one
    assert held == [False] * 4  # every number parsed once, none of them under the lock
