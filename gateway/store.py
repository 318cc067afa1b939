"""Engine, schema and the queries that need care: claiming due work with a lease, locking a message.

SQLite (the embedded default) runs in WAL mode with foreign keys on, and every transaction starts with
`BEGIN IMMEDIATE` so writers queue on the database lock instead of failing on a lock upgrade.
PostgreSQL claims with `SELECT … FOR UPDATE SKIP LOCKED`, so several workers never take the same row.

Schema upgrades: the schema is created on start (`create_all`, which only adds missing tables). Until the
first release, a changed table means a new database; from the first release on, upgrades ship as Alembic
migrations run by `gateway migrate` before the new version starts.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    DateTime,
    Engine,
    Insert,
    Table,
    TextClause,
    TypeDecorator,
    bindparam,
    create_engine,
    event,
    func,
    or_,
    text,
    update,
)
from sqlalchemy import event as sa_event
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import Dialect, make_url
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import SessionTransaction
from sqlalchemy.orm.util import identity_key
from sqlalchemy.sql.elements import BindParameter
from sqlalchemy.sql.schema import Column, ScalarElementColumnDefault
from sqlalchemy.types import TypeEngine
from sqlmodel import Session, SQLModel, col, select

from gateway import models
from gateway import notify as due_notice
from gateway.timeutil import add_seconds
from gateway.wake import sqlite_file

__all__ = ["IntegrityError"]
log = logging.getLogger("gateway.store")


def make_engine(url: str, pool_size: int = 10) -> Engine:
    """Create the engine for a SQLite or PostgreSQL URL."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
        event.listen(engine, "connect", _sqlite_on_connect)
        event.listen(engine, "begin", _sqlite_on_begin)
        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.isolation_level = None  # let the "begin" hook issue BEGIN itself
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_schema(engine: Engine) -> None:
    """Create missing tables (tables are imported with gateway.models)."""
    assert models.Contact.__tablename__  # the import registers every table on SQLModel.metadata
    SQLModel.metadata.create_all(engine)


# SQLite has one writer at a time, and a writer that finds the lock taken polls for it, sleeping 1 to 100 ms
# between tries (so two processes writing took the lock from each other in bursts, and a request could wait
# 100 ms for a lock free for most of that time). Writers queue here instead: the threads of a process on a
# lock, the processes on an flock of `<database>.writer`, and each goes within a fraction of a millisecond.
SQLITE_WRITER_WAIT = 30.0  # seconds, as the connections' busy_timeout
# How often a process waiting for another's writer tries again. The writer lock is what limits a busy SQLite
# gateway, and every moment it lies free before a waiter notices is lost: waits growing to 2 ms gave 600
# accepts/s under gunicorn, 0.2 ms gives 900 (as a blocking flock, which could not time out). A waiting
# process wakes 5,000 times a second, a few percent of a CPU, only while another is writing.
FLOCK_POLL = 0.0002


class _SqliteWriter:
    """The right to write one SQLite file: re-entrant within a thread, one thread of one process at a time."""

    def __init__(self, path: str | None) -> None:
        self._lock = threading.RLock()
        self._depth = 0  # nesting of the thread holding `_lock`
        self._path = path
        self._fd: int | None = None
        self._pid = 0  # the process that opened `_fd` (a forked child opens its own: flock is per open file)

    def acquire(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        if not self._lock.acquire(timeout=timeout):
            return False
        if self._depth == 0 and self._path is not None and not self._lock_file(deadline):
            self._lock.release()
            return False
        self._depth += 1
        return True

    def release(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._lock.release()

    def _lock_file(self, deadline: float) -> bool:
        assert self._path is not None
        if self._fd is None or self._pid != os.getpid():
            self._fd, self._pid = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600), os.getpid()
        while True:
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(FLOCK_POLL)


_sqlite_writers: dict[str, _SqliteWriter] = {}
_sqlite_writers_lock = threading.Lock()


def _writer_lock(engine: Engine) -> _SqliteWriter | None:
    if engine.dialect.name != "sqlite":
        return None
    key = engine.url.render_as_string(hide_password=True)
    database = sqlite_file(engine)  # None: in memory, one process
    with _sqlite_writers_lock:
        if key not in _sqlite_writers:
            _sqlite_writers[key] = _SqliteWriter(f"{database}.writer" if database else None)
        return _sqlite_writers[key]


@contextmanager
def transaction(engine: Engine, snapshot: bool = False) -> Iterator[Session]:
    """One unit of work: commit on success, roll back on any exception.

    On SQLite every transaction writes (`BEGIN IMMEDIATE`), so they queue for the file, threads and
    processes alike (`_SqliteWriter`), and each sees one state of the database. On PostgreSQL each statement
    sees what was committed before it (READ COMMITTED) unless `snapshot`: then every statement sees the
    database as it was at the first (REPEATABLE READ), for reads that must agree with each other, such as a
    message and its attempts.
    """
    lock = _writer_lock(engine)
    if lock is not None and not lock.acquire(SQLITE_WRITER_WAIT):
        raise TimeoutError(f"no SQLite transaction could start within {SQLITE_WRITER_WAIT:g} s")
    session = Session(engine, expire_on_commit=False)
    committed = False
    try:
        if snapshot and engine.dialect.name == "postgresql":
            session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        try:
            yield session
            session.commit()
            committed = True
        except BaseException:
            session.rollback()
            raise
    finally:
        # SQLite's writer goes to the next in line once the commit is done: closing the session (every
        # object it holds let go) and what waited for the commit (`after_commit`) need no lock, and
        # the writer is what a busy SQLite gateway waits for (about 2% of a dispatcher transaction's hold).
        if lock is not None:
            lock.release()
        try:
            session.close()
        finally:
            if committed:  # even should closing fail: the work is in the database
                _run_after_commit(session)


_PENDING = "after_commit_actions"  # session.info key: what waits for the session's commit, in order
Pending = list[tuple[SessionTransaction | None, Callable[[], None]]]  # each with the savepoint it is in


def after_commit(session: Session, action: Callable[[], None]) -> None:
    """Run `action` once the session's transaction commits (never if it rolls back): `transaction` runs the
    actions in order after the commit, once SQLite's writer has gone to the next in line. A savepoint rolled
    back drops the actions registered inside it, not the others (a batch accept refuses one message that way).
    One listener a session: one per action cost more than the counting it guards."""
    pending: Pending | None = session.info.get(_PENDING)
    if pending is None:
        session.info[_PENDING] = pending = []
        sa_event.listen(session, "after_soft_rollback", _drop_rolled_back)
    pending.append((session.get_nested_transaction(), action))


def _run_after_commit(session: Session) -> None:
    pending: Pending = session.info.pop(_PENDING, None) or []
    for _, action in pending:
        try:
            action()
        except Exception:  # counting, logging or a wake-up must never turn a commit into a failure
            log.exception("an action after the commit failed")


def _drop_rolled_back(session: Session, rolled_back: SessionTransaction) -> None:
    """What waited inside what a rollback undid goes: a savepoint's own actions (those of savepoints within it
    too), or, when the transaction itself rolls back, all of them."""
    pending: Pending = session.info.get(_PENDING) or []
    if not rolled_back.nested:
        session.info[_PENDING] = []
        return
    session.info[_PENDING] = [(where, a) for where, a in pending if not _within(where, rolled_back)]


def _within(where: SessionTransaction | None, savepoint: SessionTransaction) -> bool:
    while where is not None:
        if where is savepoint:
            return True
        where = where.parent
    return False


def insert_rows(
    session: Session, tables: Sequence[tuple[type[SQLModel], list[dict[str, Any]]]], notify: bool = False
) -> None:
    """INSERT rows into several tables, in order, without ORM objects or the ORM's unit of work (every dict
    of a table has the same keys, the columns' defaults fill the rest; the rows are not in the session, and
    later reads in the transaction load them from the database); with `notify`, wake listening workers
    when the transaction commits (`gateway.notify.notify_due`).

    On PostgreSQL the write is one statement whatever the number of rows: each table's rows go as one JSON
    parameter, read by `json_populate_recordset` in an INSERT, the INSERTs being WITH clauses of
    `SELECT pg_notify(…)`; its foreign keys are checked at the statement's end. One round trip, and a short
    statement with a parameter a table: psycopg converts it once and prepares it on the server (a VALUES list
    of a parameter a column was re-parsed on every call, past psycopg's cache limits). Otherwise, and on
    SQLite, one INSERT a table.
    """
    filled = [(sa_inspect(model).local_table, rows) for model, rows in tables if rows]
    connection = session.connection()
    if filled and connection.dialect.name == "postgresql":
        built = _one_statement(tuple((table.name, tuple(rows[0])) for table, rows in filled), notify)
        if built is not None:
            statement, converters = built
            dialect = connection.dialect
            values = {
                f"rows_{t}": json.dumps(
                    [
                        {
                            name: convert(row.get(key, default), dialect)
                            for key, name, convert, default in converters[t]
                        }
                        for row in rows
                    ],
                    separators=(",", ":"),
                )
                for t, (_, rows) in enumerate(filled)
            }
            connection.execute(statement, values)
            return
    for table, rows in filled:
        connection.execute(_insert_into(table), rows)
    if notify:
        due_notice.notify_due(session)


@functools.cache
def _insert_into(table: Table) -> Insert:
    """A table's INSERT, built once: one built per call cost its cache key each time (~5 µs a table)."""
    return table.insert()


Shape = tuple[tuple[str, tuple[str, ...]], ...]  # each table's name and the keys its rows give
# A column's key (in the rows given), name (in the JSON read back), conversion to a JSON value, default.
Converter = tuple[str, str, Callable[[Any, Dialect], Any], Any]


@functools.lru_cache(maxsize=256)
def _one_statement(shape: Shape, notify: bool) -> tuple[TextClause, list[list[Converter]]] | None:
    """`insert_rows`' statement for these tables and keys, and each table's columns in it (those given, and
    those with a constant default) with their conversions to JSON; built once. None when a column left out
    has a default that must be computed."""
    clauses: list[str] = []
    converters: list[list[Converter]] = []
    for t, (name, given) in enumerate(shape):
        table = SQLModel.metadata.tables[name]
        if any(c.default is not None and not c.default.is_scalar and c.key not in given for c in table.c):
            return None
        columns = [c for c in table.c if c.key in given or (c.default is not None and c.default.is_scalar)]
        converters.append([(c.key, c.name, _to_json(c.type), _constant_default(c)) for c in columns])
        names = ", ".join(_quoted(c.name) for c in columns)
        rows = f"json_populate_recordset(NULL::{_quoted(name)}, CAST(:rows_{t} AS json))"
        clauses.append(f"insert_{t} AS (INSERT INTO {_quoted(name)} ({names}) SELECT {names} FROM {rows})")
    final = f"SELECT pg_notify('{due_notice.CHANNEL}', '')" if notify else "SELECT 1"
    return text(f"WITH {', '.join(clauses)} {final}"), converters


def _constant_default(column: Column[Any]) -> Any:
    """The column's constant default (for rows that leave it out), else None."""
    default = column.default
    return default.arg if isinstance(default, ScalarElementColumnDefault) else None


def _to_json(column_type: TypeEngine[Any]) -> Callable[[Any, Dialect], Any]:
    """How a column's Python value becomes the JSON value `json_populate_recordset` reads back as it: a
    type decorator's own conversion first (UTC datetimes, sealed bodies as text), datetimes as ISO 8601,
    JSON columns' values as they are."""
    decorator = column_type if isinstance(column_type, TypeDecorator) else None
    if decorator is not None and type(decorator).process_bind_param is TypeDecorator.process_bind_param:
        decorator = None  # one that only picks the dialect's type (sqlmodel's AutoString)
    impl = decorator.impl_instance if decorator is not None else column_type
    dated = isinstance(impl, DateTime)

    def convert(value: Any, dialect: Dialect) -> Any:
        if decorator is not None:
            value = decorator.process_bind_param(value, dialect)
        if dated and value is not None:
            return value.isoformat()
        return value

    return convert


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def is_postgres(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


# The hot queries, built once: building a statement costs about as much as running a small one on SQLite
# (~40 µs), and a statement object kept keeps its cache key. Lists go in expanding parameters.
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
_FREE = or_(col(models.Message.claimed_until).is_(None), col(models.Message.claimed_until) < bindparam("now"))
_DUE = (
    select(models.Message)
    .where(col(models.Message.due_at) <= bindparam("now"))
    .where(_FREE)
    .order_by(col(models.Message.due_at))
    .limit(bindparam("limit"))
)
_CLAIM = {False: _DUE, True: _DUE.with_for_update(skip_locked=True)}  # by is_postgres
_NEXT_DUE = select(func.min(models.Message.due_at)).where(_FREE)
_LOCK_MESSAGES = (
    select(models.Message)
    .where(col(models.Message.id).in_(_IDS))
    .order_by(col(models.Message.id))
    .with_for_update()
)
_ATTEMPTS = select(models.Attempt).where(col(models.Attempt.id).in_(_IDS))
_ATTEMPTS_FRESH = _ATTEMPTS.execution_options(populate_existing=True)
_ATTEMPTS_BY_PROVIDER_ID = select(models.Attempt).where(col(models.Attempt.provider_message_id).in_(_IDS))
_CHANNEL_STATES = select(models.ChannelState).where(col(models.ChannelState.contact_id).in_(_IDS))
_EARLY_STATUS_IDS = (
    select(col(models.EarlyStatus.provider_message_id))
    .where(col(models.EarlyStatus.provider_message_id).in_(_IDS))
    .distinct()
)


def claim_due_messages(
    session: Session, worker: str, now: datetime, lease: float, limit: int
) -> list[models.Message]:
    """Claim up to `limit` messages whose work is due and whose claim is free or has expired.

    The `due_at` index keeps this O(log n + limit) however long the queue is.
    """
    query = _CLAIM[is_postgres(session.get_bind())]  # type: ignore[arg-type]
    messages = list(session.exec(query, params={"now": now, "limit": limit}))
    until = add_seconds(now, lease)
    for message in messages:
        message.claimed_until = until
        message.claimed_by = worker
    return messages


def next_due_at(session: Session, now: datetime) -> datetime | None:
    """The earliest due time of work nobody holds a live claim on."""
    value: datetime | None = session.exec(_NEXT_DUE, params={"now": now}).one()
    return value


def lock_message(session: Session, message_id: str) -> models.Message | None:
    """Load a message for update; callers change it and its attempts in the same transaction."""
    query = select(models.Message).where(models.Message.id == message_id).with_for_update()
    return session.exec(query).first()


def lock_messages(session: Session, ids: list[str]) -> dict[str, models.Message]:
    """Load messages for update, locked in id order (so two batches never wait on each other in a ring)."""
    if not ids:
        return {}
    return {m.id: m for m in session.exec(_LOCK_MESSAGES, params={"ids": ids})}


def load_attempts(session: Session, ids: list[str], fresh: bool = False) -> dict[str, models.Attempt]:
    """Load attempts by id in one query (later `session.get`s find them in the session); `fresh` reads
    them again even where the session holds them already."""
    if not ids:
        return {}
    return {a.id: a for a in session.exec(_ATTEMPTS_FRESH if fresh else _ATTEMPTS, params={"ids": ids})}


def attempts_by_provider_id(session: Session, provider_message_ids: list[str]) -> list[models.Attempt]:
    """The attempts that sent these provider messages, in one query."""
    if not provider_message_ids:
        return []
    return list(session.exec(_ATTEMPTS_BY_PROVIDER_ID, params={"ids": provider_message_ids}))


ABSENT_STATES = "absent_channel_states"  # session.info key: (contact, channel) pairs known to have no row
LOADED_STATES = "loaded_channel_states"  # session.info key: the rows loaded, held while the session lives


def load_channel_states(
    session: Session, pairs: set[tuple[str, str]]
) -> dict[tuple[str, str], models.ChannelState | None]:
    """The states of these (contact, channel) pairs in one query, None where there is none; later
    `channel_state` calls in the session find them without a query (the session holds them: it keeps
    loaded rows only while something references them)."""
    if not pairs:
        return {}
    contacts = sorted({contact for contact, _ in pairs})
    found = {(s.contact_id, s.channel): s for s in session.exec(_CHANNEL_STATES, params={"ids": contacts})}
    states = {pair: found.get(pair) for pair in pairs}
    session.info.setdefault(LOADED_STATES, []).extend(found.values())
    absent = session.info.setdefault(ABSENT_STATES, set())
    absent |= {pair for pair, state in states.items() if state is None}
    return states


def channel_state(session: Session, contact_id: str, channel: str) -> models.ChannelState | None:
    """The contact's state on a channel, if any; pairs `load_channel_states` found without a row are
    answered from the session (a row added since is in it), every other pair by `session.get`."""
    key = (contact_id, channel)
    if key in session.info.get(ABSENT_STATES, ()):
        added = (
            o for o in session.new if isinstance(o, models.ChannelState) and (o.contact_id, o.channel) == key
        )
        found: models.ChannelState | None = next(added, None) or session.identity_map.get(
            identity_key(models.ChannelState, key)
        )
        return found
    return session.get(models.ChannelState, key)


def early_status_ids(session: Session, provider_message_ids: list[str]) -> set[str]:
    """Which of these provider message ids have statuses waiting for their send to be recorded."""
    wanted = sorted({p for p in provider_message_ids if p})
    if not wanted:
        return set()
    return set(session.exec(_EARLY_STATUS_IDS, params={"ids": wanted}))


CONTACT_LOCKS = 2  # the class of contact-address advisory locks (two-key locks: apart from provider ids')


def lock_contact_addresses(session: Session, addresses: Sequence[str]) -> None:
    """Serialise making contacts for these phone numbers and email addresses (PostgreSQL; SQLite serialises
    every writer anyway): of two transactions that would each make a contact for the same new address, the
    second waits for the first's commit, then finds its contact (a statement after the wait reads what was
    committed before it)."""
    _advisory_locks(session, [a for a in addresses if a], CONTACT_LOCKS)


def lock_provider_ids(session: Session, provider_message_ids: list[str]) -> None:
    """Serialise work on these provider message ids (PostgreSQL; SQLite serialises every writer anyway).

    The dispatcher recording a send and a webhook reporting on it may run at once; holding these locks
    while each looks for the other's row means an early status is never missed.
    """
    _advisory_locks(session, provider_message_ids)


def _advisory_locks(session: Session, names: Sequence[str], lock_class: int | None = None) -> None:
    """Transaction-scoped advisory locks on these names (PostgreSQL only), taken in key order so two
    transactions never wait on each other in a ring; a `lock_class` picks a two-key lock space."""
    if names and is_postgres(session.get_bind()):  # type: ignore[arg-type]
        session.execute(_lock_statement(lock_class), {"names": list(names)})


@functools.cache
def _lock_statement(lock_class: int | None) -> TextClause:
    keys = "SELECT DISTINCT hashtext(n) AS key FROM unnest(CAST(:names AS text[])) AS n ORDER BY key"
    lock = "key" if lock_class is None else f"{int(lock_class)}, key"
    return text(f"SELECT pg_advisory_xact_lock({lock}) FROM ({keys}) AS keys")


def release_claims(session: Session, worker: str) -> None:
    """Give back every claim (messages, event deliveries) of a worker that is shutting down."""
    for table in (models.Message, models.EventDelivery):
        session.execute(
            update(table).where(col(table.claimed_by) == worker).values(claimed_until=None, claimed_by=None)
        )
