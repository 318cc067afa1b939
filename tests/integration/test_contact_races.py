"""Two transactions that would each make a contact for the same new address at the same moment (two API
processes, or an API process and an inbound webhook, on PostgreSQL) make one: the second waits for the
first's commit and finds its contact; two batches naming the same new people in opposite orders do not wait
on each other. SQLite serialises every writer, so the races are PostgreSQL's."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlmodel import Session, col, func, select

from gateway import store
from gateway.core import Gateway
from gateway.local import LocalGateway
from gateway.models import Contact
from gateway.schemas import SendRequest, To
from gateway.services import messages
from gateway.services.contacts import resolve_contact
from gateway.services.recipients import resolve_simple

pytestmark = pytest.mark.parametrize("database_url", ["postgres"], indirect=True)
PHONE = "+14155551234"


@pytest.fixture
def local(database_url: str) -> Iterator[LocalGateway]:
    gateway = LocalGateway({"database_url": database_url}, with_dispatcher=False).start()
    yield gateway
    gateway.stop()


def by_accept(session: Session, gw: Gateway) -> str:
    """The accept path for a recipient named by phone (rows written without ORM objects)."""
    resolved = resolve_simple(session, gw, [To(phone=PHONE)])
    assert resolved is not None
    store.insert_rows(session, [(Contact, resolved.new_contacts)])
    return resolved.recipients[0].contact_id  # type: ignore[union-attr]


def by_general_path(session: Session, gw: Gateway) -> str:
    """The general path (`resolve_contact`: requests with ids, identities or fields to set), which updates or
    makes an ORM contact."""
    return resolve_contact(session, gw, To(phone=PHONE, name="Ada")).id


def by_inbound(session: Session, gw: Gateway) -> str:
    """An inbound SMS from the number (the inbound pipeline's contact for its sender)."""
    from gateway.inbound.pipeline import _contact_for

    return _contact_for(session, gw, "sms", "phone", PHONE).id


@pytest.mark.parametrize("first", [by_accept, by_general_path, by_inbound])
@pytest.mark.parametrize("second", [by_accept, by_general_path, by_inbound])
def test_the_second_of_two_transactions_waits_and_finds_the_first_ones_contact(
    local: LocalGateway,
    first: Callable[[Session, Gateway], str],
    second: Callable[[Session, Gateway], str],
) -> None:
    gw = local.gw
    made: dict[str, str] = {}
    first_made, commit_first, second_done = threading.Event(), threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def run(name: str, resolve: Callable[[Session, Gateway], str], before_commit: Callable[[], None]) -> None:
        try:
            with store.transaction(gw.engine) as session:
                made[name] = resolve(session, gw)
                before_commit()
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append(exc)

    def hold() -> None:
        first_made.set()
        commit_first.wait(10)

    one = threading.Thread(target=run, args=("first", first, hold))
    one.start()
    assert first_made.wait(10), errors
    two = threading.Thread(target=run, args=("second", second, second_done.set))
    two.start()
    assert not second_done.wait(0.5), "the second did not wait for the first's commit"
    commit_first.set()
    one.join(10)
    two.join(10)
    assert not errors, errors
    assert made["second"] == made["first"]
    with store.transaction(gw.engine) as session:
        assert session.exec(select(func.count()).where(col(Contact.phone) == PHONE)).one() == 1


def test_two_batches_naming_the_same_new_people_in_opposite_orders_do_not_deadlock(
    local: LocalGateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The general path resolves a batch's recipients one request at a time, each locking its own addresses;
    the batch takes all of them first, so the second batch waits for the first instead of each holding
    what the other needs (PostgreSQL would abort one with a deadlock)."""
    gw = local.gw
    people = {"+14155551301": "ext-1301", "+14155551302": "ext-1302"}  # external ids: the general path

    def batch(order: list[str]) -> list[SendRequest]:
        bodies = [{"to": {"phone": p, "external_id": people[p]}, "content": {"text": "hi"}} for p in order]
        return [SendRequest.model_validate(body) for body in bodies]

    first_resolved, go_on = threading.Event(), threading.Event()
    resolve = messages.resolve_contact

    def pausing(session: Session, gw: Gateway, to: To, prefix: str = "to") -> Contact:
        contact = resolve(session, gw, to, prefix)
        if threading.current_thread().name == "first" and not first_resolved.is_set():
            first_resolved.set()  # holds the first person's lock; the second batch starts now
            go_on.wait(10)
        return contact

    monkeypatch.setattr(messages, "resolve_contact", pausing)
    answers: dict[str, list[Any]] = {}
    errors: list[BaseException] = []

    def run(name: str, order: list[str]) -> None:
        try:
            answers[name] = messages.accept_batch(gw, None, list(batch(order)))
        except BaseException as exc:  # noqa: BLE001 - reported by the test's thread
            errors.append(exc)

    phones = list(people)
    one = threading.Thread(target=run, args=("first", phones), name="first")
    one.start()
    assert first_resolved.wait(10), errors
    two = threading.Thread(target=run, args=("second", phones[::-1]), name="second")
    two.start()
    two.join(0.5)  # the second batch now waits for a lock the first holds
    go_on.set()
    one.join(15)
    two.join(15)
    assert not errors, errors
    assert all("id" in a for a in answers["first"] + answers["second"]), answers
    with store.transaction(gw.engine) as session:
        for phone in phones:
            assert session.exec(select(func.count()).where(col(Contact.phone) == phone)).one() == 1
