"""Two transactions that would each make a contact for the same new address at the same moment (two API
processes, or an API process and an inbound webhook, on PostgreSQL) make one: the second waits for the
first's commit and finds its contact. SQLite serialises every writer, so the race is PostgreSQL's."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest
from sqlmodel import Session, col, func, select

from gateway import store
from gateway.core import Gateway
from gateway.local import LocalGateway
from gateway.models import Contact
from gateway.schemas import To
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


@pytest.mark.parametrize("first", [by_accept, by_general_path])
@pytest.mark.parametrize("second", [by_accept, by_general_path])
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
