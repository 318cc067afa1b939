"""`store.insert_rows` (rows of several tables in order, defaults filled, and on PostgreSQL one statement
that also notifies the workers at the commit) and `store.transaction(snapshot=True)`."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import Session, select

from gateway import store
from gateway.ids import new_id
from gateway.models import Attempt, Contact, Event, EventDelivery, Message
from gateway.notify import DueListener

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def contact_row() -> dict[str, Any]:
    return {"id": new_id("ct"), "email": f"{new_id('x')}@example.test", "created_at": NOW, "updated_at": NOW}


def message_row(contact_id: str) -> dict[str, Any]:
    return {
        "id": new_id("msg"),
        "contact_id": contact_id,
        "content": {"text": "héllo"},
        "plan": [{"channel": "email", "address": "a@example.test"}],
        "due_at": NOW,
        "created_at": NOW,
        "updated_at": NOW,
    }


def attempt_row(message_id: str) -> dict[str, Any]:
    # Leaves out try_number, status, sends and as_template: their defaults fill them.
    return {
        "id": new_id("att"),
        "message_id": message_id,
        "step_index": 0,
        "channel": "email",
        "address": "a@example.test",
        "created_at": NOW,
        "updated_at": NOW,
    }


def test_rows_of_one_table_giving_different_columns_call_after_call_are_each_written_as_given(
    database_url: str,
) -> None:
    """The INSERT of a table is built once (SQLite): calls whose rows name other columns each write theirs."""
    engine = store.make_engine(database_url)
    store.create_schema(engine)
    by_email = contact_row()
    by_phone = {
        "id": new_id("ct"),
        "phone": "+14155550123",
        "name": "Ada",
        "created_at": NOW,
        "updated_at": NOW,
    }
    with store.transaction(engine) as session:
        store.insert_rows(session, [(Contact, [by_email])])
    with store.transaction(engine) as session:
        store.insert_rows(session, [(Contact, [by_phone])])
    with store.transaction(engine) as session:
        first, second = session.get(Contact, by_email["id"]), session.get(Contact, by_phone["id"])
        assert first is not None and second is not None
        assert (first.email, first.phone, first.name) == (by_email["email"], None, None)
        assert (second.email, second.phone, second.name) == (None, "+14155550123", "Ada")
    engine.dispose()


@pytest.mark.parametrize("per_table", [1, 3, 120])
def test_rows_of_several_tables_are_written_in_order_with_their_defaults(
    database_url: str, per_table: int
) -> None:
    engine = store.make_engine(database_url)
    store.create_schema(engine)
    contacts = [contact_row() for _ in range(per_table)]
    messages = [message_row(c["id"]) for c in contacts]
    attempts = [attempt_row(m["id"]) for m in messages]
    with store.transaction(engine) as session:  # the messages need their contacts: order matters
        store.insert_rows(session, [(Contact, contacts), (Message, messages), (Attempt, attempts)])
    with store.transaction(engine) as session:
        for m in messages:
            stored = session.get(Message, m["id"])
            assert stored is not None
            assert (stored.contact_id, stored.content, stored.plan) == (
                m["contact_id"],
                m["content"],
                m["plan"],
            )
            assert stored.category == "transactional" and stored.status == "queued"  # defaults
            assert stored.due_at == NOW
        for a in attempts:
            stored_attempt = session.get(Attempt, a["id"])
            assert stored_attempt is not None
            assert (stored_attempt.try_number, stored_attempt.status, stored_attempt.sends) == (
                1,
                "pending",
                0,
            )
            assert stored_attempt.as_template is False
    engine.dispose()


def test_values_come_back_as_written_sealed_bodies_encrypted(database_url: str) -> None:
    """Each column type through insert_rows (on PostgreSQL, JSON read back by json_populate_recordset)."""
    from cryptography.fernet import Fernet

    from gateway import crypto

    engine = store.make_engine(database_url)
    store.create_schema(engine)
    contact = contact_row() | {"tags": ["vip", "ünï"], "name": 'quote " and \\ backslash'}
    local = datetime(2026, 11, 29, 13, 30, 15, 123456, tzinfo=timezone(timedelta(hours=1)))
    message = message_row(contact["id"]) | {
        "content": {"text": "héllo 😀", "nested": [1, None, True]},
        "expires_at": local,
        "skipped": None,
        "metadata": {"order": "A-17"},  # a column named as SQL's reserved word
        "human_agent": True,
        "step_index": 2,
    }
    crypto.configure(Fernet.generate_key().decode())
    try:
        with store.transaction(engine) as session:
            store.insert_rows(session, [(Contact, [contact]), (Message, [message])])
        with engine.connect() as conn:
            raw = conn.execute(text("SELECT content FROM message")).scalar_one()
        assert raw.startswith(crypto.PREFIX) and "héllo" not in raw
        with store.transaction(engine) as session:
            stored = session.get(Message, message["id"])
            person = session.get(Contact, contact["id"])
            assert stored is not None and person is not None
            assert stored.content == message["content"]
            assert stored.expires_at == local and stored.expires_at.utcoffset() == timedelta(0)
            assert stored.created_at == NOW
            assert (stored.skipped, stored.human_agent, stored.step_index) == (None, True, 2)
            assert stored.metadata_ == {"order": "A-17"}
            assert (person.tags, person.name) == (contact["tags"], contact["name"])
    finally:
        crypto.configure(None)
        engine.dispose()


def test_a_failed_write_leaves_nothing(database_url: str) -> None:
    engine = store.make_engine(database_url)
    store.create_schema(engine)
    orphan = message_row("ct_nobody")  # no such contact: the foreign key refuses it
    contact = contact_row()
    with pytest.raises(store.IntegrityError), store.transaction(engine) as session:
        store.insert_rows(session, [(Contact, [contact]), (Message, [orphan])])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM contact")).scalar_one() == 0
    engine.dispose()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # LISTEN/NOTIFY is PostgreSQL's
def test_on_postgresql_the_write_notifies_listening_workers_at_the_commit(database_url: str) -> None:
    engine = store.make_engine(database_url)
    store.create_schema(engine)
    woken = threading.Event()
    listener = DueListener(engine, woken.set)
    listener.start()
    try:
        for _ in range(50):  # until the listener listens
            with engine.begin() as conn:
                conn.execute(text("NOTIFY gateway_due"))
            if woken.wait(0.1):
                break
        woken.clear()
        contact = contact_row()
        with store.transaction(engine) as session:
            store.insert_rows(session, [(Contact, [contact])], notify=False)
        assert not woken.wait(0.5)
        with store.transaction(engine) as session:
            store.insert_rows(session, [(Message, [message_row(contact["id"])])], notify=True)
            assert not woken.wait(0.3)  # not before the commit
        assert woken.wait(5)
    finally:
        listener.stop()
        engine.dispose()


@pytest.mark.parametrize("database_url", ["postgres"], indirect=True)  # SQLite's transactions are snapshots
def test_a_snapshot_transaction_does_not_see_a_commit_made_after_its_first_read(database_url: str) -> None:
    engine = store.make_engine(database_url)
    store.create_schema(engine)
    contact = contact_row()
    message = message_row(contact["id"])
    attempt = attempt_row(message["id"])
    with store.transaction(engine) as session:
        store.insert_rows(session, [(Contact, [contact]), (Message, [message]), (Attempt, [attempt])])
    for snapshot, seen in ((True, "pending"), (False, "delivered")):
        with engine.begin() as conn:
            conn.execute(text("UPDATE attempt SET status = 'pending'"))
        with store.transaction(engine, snapshot=snapshot) as session:
            assert session.get(Message, message["id"]) is not None  # the first read
            with engine.begin() as conn:  # another transaction commits in between
                conn.execute(text("UPDATE attempt SET status = 'delivered'"))
            status = session.connection().execute(text("SELECT status FROM attempt")).scalar_one()
            assert status == seen
    engine.dispose()


def test_actions_wait_for_the_commit_run_in_order_and_are_dropped_by_a_rollback(database_url: str) -> None:
    ran: list[str] = []

    def failing() -> None:
        ran.append("failing")
        raise RuntimeError("a counter broke")

    engine = store.make_engine(database_url)
    store.create_schema(engine)
    try:
        with store.transaction(engine) as session:
            store.after_commit(session, lambda: ran.append("first"))
            store.after_commit(session, failing)  # logged; neither the commit nor the next action suffers
            store.after_commit(session, lambda: ran.append("second"))
            session.add(Contact(**contact_row()))
            assert ran == []  # nothing before the commit
        assert ran == ["first", "failing", "second"]

        ran.clear()
        with pytest.raises(ValueError), store.transaction(engine) as session:
            store.after_commit(session, lambda: ran.append("rolled back"))
            session.add(Contact(**contact_row()))
            raise ValueError("the work failed")
        assert ran == []

        with store.transaction(engine) as session:  # one session, two transactions: a rollback drops its own
            store.after_commit(session, lambda: ran.append("rolled back"))
            session.add(Contact(**contact_row()))
            session.flush()
            session.rollback()
            store.after_commit(session, lambda: ran.append("committed"))
            session.add(Contact(**contact_row()))
        assert ran == ["committed"]
    finally:
        engine.dispose()


def test_what_waits_for_the_commit_runs_once_the_next_writer_may_go(tmp_path: Path) -> None:
    """On SQLite a transaction holds the file's one writer: the actions after the commit run without it,
    so another thread's transaction goes through while they run instead of waiting for them."""
    engine = store.make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    store.create_schema(engine)
    other_went = threading.Event()

    def other_writer() -> None:
        with store.transaction(engine) as session:
            session.add(Contact(**contact_row()))
        other_went.set()

    def action() -> None:
        thread = threading.Thread(target=other_writer)
        thread.start()
        thread.join(5)

    try:
        with store.transaction(engine) as session:
            store.after_commit(session, action)
            session.add(Contact(**contact_row()))
        assert other_went.is_set()  # while the action ran, not after it gave up waiting
        with store.transaction(engine) as session:
            assert len(session.exec(select(Contact)).all()) == 2
    finally:
        engine.dispose()


def test_what_waits_for_a_commit_runs_even_when_closing_the_session_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit is what the actions wait for (the wake-ups of other processes among them): a session that
    fails to close after it still runs them, and the failure still reaches the caller."""
    engine = store.make_engine(f"sqlite:///{tmp_path / 'gateway.db'}")
    store.create_schema(engine)
    ran: list[str] = []
    close = Session.close

    def failing_close(session: Session) -> None:
        close(session)
        raise RuntimeError("closing failed")

    try:
        monkeypatch.setattr(Session, "close", failing_close)
        with pytest.raises(RuntimeError, match="closing failed"), store.transaction(engine) as session:
            store.after_commit(session, lambda: ran.append("after the commit"))
            session.add(Contact(**contact_row()))
        monkeypatch.undo()
        assert ran == ["after the commit"]
        with store.transaction(engine) as session:
            assert len(session.exec(select(Contact)).all()) == 1
    finally:
        engine.dispose()


def test_a_savepoint_rolled_back_drops_only_what_waited_inside_it(database_url: str) -> None:
    """A batch accept refuses one message by rolling back its savepoint: what the transaction registered
    before it (another message's wake-up, a delivery's count) still runs at the commit; what was registered
    inside it does not, nor anything of a transaction rolled back as a whole."""
    engine = store.make_engine(database_url)
    store.create_schema(engine)
    ran: list[str] = []
    try:
        with store.transaction(engine) as session:
            store.after_commit(session, lambda: ran.append("before"))
            with contextlib.suppress(RuntimeError), session.begin_nested():
                store.after_commit(session, lambda: ran.append("inside the refused one"))
                with session.begin_nested():
                    store.after_commit(session, lambda: ran.append("nested in the refused one"))
                raise RuntimeError("refused")
            with session.begin_nested():
                store.after_commit(session, lambda: ran.append("inside a kept one"))
            store.after_commit(session, lambda: ran.append("after"))
        assert ran == ["before", "inside a kept one", "after"]
        ran.clear()
        with pytest.raises(RuntimeError), store.transaction(engine) as session:
            store.after_commit(session, lambda: ran.append("rolled back"))
            raise RuntimeError("the whole transaction")
        assert ran == []
    finally:
        engine.dispose()


def test_the_queries_built_once_answer_for_each_call_s_own_values(database_url: str) -> None:
    """The claim, the message locks and the attempt loads are statements built at import with bound
    parameters: each call must get its own time, limit and ids, whatever an earlier call passed."""
    engine = store.make_engine(database_url)
    store.create_schema(engine)
    contact = contact_row()
    messages = [message_row(contact["id"]) | {"due_at": NOW + timedelta(minutes=i)} for i in range(4)]
    attempts = [attempt_row(m["id"]) for m in messages]
    with store.transaction(engine) as session:
        store.insert_rows(session, [(Contact, [contact]), (Message, messages), (Attempt, attempts)])
    ids = [m["id"] for m in messages]
    try:
        with store.transaction(engine) as session:  # due by NOW + 2 min: three; a limit of two takes two
            claimed = store.claim_due_messages(session, "w1", NOW + timedelta(minutes=2), 30, 2)
            assert [m.id for m in claimed] == ids[:2]
        with store.transaction(engine) as session:  # w1's claims run until NOW + 2 min + 30 s
            later = store.claim_due_messages(session, "w2", NOW + timedelta(minutes=2), 30, 10)
            assert [m.id for m in later] == ids[2:3]
            assert store.next_due_at(session, NOW + timedelta(minutes=2)) == NOW + timedelta(minutes=3)
        with store.transaction(engine) as session:  # once they have run out, anything due is free again
            expired = store.claim_due_messages(session, "w3", NOW + timedelta(minutes=5), 30, 10)
            assert [m.id for m in expired] == ids
        with store.transaction(engine) as session:
            assert list(store.lock_messages(session, ids[3:] + ids[:1])) == sorted([ids[0], ids[3]])
            assert list(store.lock_messages(session, ids[1:2])) == [ids[1]]
            one = store.load_attempts(session, [attempts[2]["id"]])
            assert [a.message_id for a in one.values()] == [ids[2]]
            both = store.load_attempts(session, [attempts[0]["id"], attempts[3]["id"]])
            assert sorted(a.message_id for a in both.values()) == sorted([ids[0], ids[3]])
    finally:
        engine.dispose()


def test_a_column_set_on_a_table_object_is_written_and_recorded_as_set(database_url: str) -> None:
    """The tables' base sets column attributes through SQLAlchemy alone (models.Table)."""
    engine = store.make_engine(database_url)
    store.create_schema(engine)
    contact = contact_row()
    message = message_row(contact["id"])
    with store.transaction(engine) as session:
        store.insert_rows(session, [(Contact, [contact]), (Message, [message])])
    try:
        with store.transaction(engine) as session:
            stored = session.get(Message, message["id"])
            assert stored is not None
            stored.status, stored.metadata_ = "sending", {"k": "v"}  # metadata_ is the column `metadata`
            assert {"status", "metadata_"} <= stored.model_fields_set
            assert stored in session.dirty
        with store.transaction(engine) as session:
            again = session.get(Message, message["id"])
            assert again is not None and (again.status, again.metadata_) == ("sending", {"k": "v"})
    finally:
        engine.dispose()


def test_release_claims_gives_back_a_worker_s_messages_and_event_deliveries_only(database_url: str) -> None:
    """What a stopping dispatcher holds goes back at once, not after its lease; others' claims stay."""
    engine = store.make_engine(database_url)
    store.create_schema(engine)
    contact = contact_row()
    until = NOW + timedelta(minutes=2)
    mine, theirs = message_row(contact["id"]), message_row(contact["id"])
    mine |= {"claimed_by": "me", "claimed_until": until}
    theirs |= {"claimed_by": "other", "claimed_until": until}
    event = {"id": new_id("ev"), "type": "message.status", "created_at": NOW}
    deliveries = [
        {"id": new_id("dl"), "event_id": event["id"], "target": "wh_1", "url": "http://127.0.0.1:9/hook",
         "due_at": NOW, "claimed_by": who, "claimed_until": until, "created_at": NOW, "updated_at": NOW}
        for who in ("me", "other")
    ]  # fmt: skip
    try:
        with store.transaction(engine) as session:
            tables = [(Contact, [contact]), (Message, [mine, theirs]), (Event, [event])]
            store.insert_rows(session, [*tables, (EventDelivery, deliveries)])
        with store.transaction(engine) as session:
            store.release_claims(session, "me")
        with store.transaction(engine) as session:
            claims = {
                (kind, row.claimed_by, row.claimed_until is not None)
                for kind, table in (("message", Message), ("delivery", EventDelivery))
                for row in session.exec(select(table))
            }
        assert claims == {
            ("message", None, False), ("message", "other", True),
            ("delivery", None, False), ("delivery", "other", True),
        }  # fmt: skip
    finally:
        engine.dispose()
