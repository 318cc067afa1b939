"""Messages and attempts read and written without the ORM, for the dispatcher's common case.

The dispatcher starts and records hundreds of sends a second. Loading each message and attempt as an ORM
object, tracking every attribute set and letting the unit of work find the changes cost about nine tenths
of its database work; SQLite itself, a tenth. For the common case (a message's first try starting; a
provider accepting a send) `gateway.dispatch` reads the rows with one statement as plain `Row`s, runs the
same `Progress` steps on them, and writes what changed with one UPDATE a set of changed columns. The
`plain_*` predicates say when a row may go this way: only where those steps change nothing but the message
and its attempt (the contact's channel state is only read; no event, reply token or early status is
involved). Anything else goes through the ORM as before, in the same transaction.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, ClassVar

from sqlalchemy import Select, Update, bindparam, or_, select, update
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.sql.elements import BindParameter, ColumnElement
from sqlalchemy.types import JSON
from sqlmodel import Session, SQLModel

from gateway import models
from gateway.channels.base import SendResult
from gateway.crypto import Sealed
from gateway.models import ChannelState
from gateway.progress import FINAL_STATUSES, refusal
from gateway.timeutil import add_seconds


class Row:
    """A row's columns as attributes. Scalar columns may be set (and are written by `write` when changed);
    JSON values (plain or sealed) are read-only, and a column not loaded is no attribute: a step that would
    need more than the row fails loudly instead of writing something the ORM path would not."""

    model: ClassVar[type[SQLModel]]
    skipped: ClassVar[frozenset[str]] = frozenset()  # columns never loaded (large, unused by the steps)
    _keys: ClassVar[tuple[str, ...]]  # attribute names loaded, in the query's order
    _writable: ClassVar[frozenset[str]]
    _columns: ClassVar[tuple[ColumnElement[Any], ...]]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        mapper = sa_inspect(cls.model)
        attrs = [a for a in mapper.column_attrs if a.key not in cls.skipped]
        cls._keys = tuple(a.key for a in attrs)
        cls._columns = tuple(a.columns[0] for a in attrs)
        cls._writable = frozenset(a.key for a in attrs if not isinstance(a.columns[0].type, JSON | Sealed))

    def __init__(self, values: Sequence[Any]) -> None:
        loaded = dict(zip(self._keys, values, strict=True))
        self.__dict__.update(loaded)
        object.__setattr__(self, "_loaded", loaded)

    def __setattr__(self, name: str, value: Any) -> None:
        if name not in self._writable:
            raise AttributeError(f"{type(self).__name__}.{name} cannot be set on a plain row")
        self.__dict__[name] = value

    def changes(self) -> dict[str, Any]:
        """The columns set to another value than the one loaded."""
        loaded: dict[str, Any] = self.__dict__["_loaded"]
        current = self.__dict__
        return {key: current[key] for key in self._writable if current[key] != loaded[key]}


_MESSAGE_UNUSED = frozenset({"skipped", "metadata_"})  # no step of the dispatcher's reads these


class MessageRow(Row):
    """A message being claimed and started: starting a try reads neither its plan nor its retry policy
    (two JSON values fewer to read a claim)."""

    model = models.Message
    skipped = _MESSAGE_UNUSED | {"plan", "retry"}
    id: str
    contact_id: str
    status: str
    content: dict[str, Any] | None
    current_attempt_id: str | None
    status_callback: str | None
    in_reply_to: str | None
    expires_at: datetime | None
    due_at: datetime | None
    claimed_until: datetime | None
    claimed_by: str | None
    completed: bool


class SentMessageRow(MessageRow):
    """A message whose send is being recorded: a provider's acceptance reads its plan (the step's receipt
    and timer), neither its content nor its retry policy."""

    skipped = _MESSAGE_UNUSED | {"content", "retry"}
    plan: list[dict[str, Any]] | None


class AttemptRow(Row):
    model = models.Attempt
    id: str
    channel: str
    status: str
    provider_message_id: str | None
    sent_by: str | None


_MESSAGE = SQLModel.metadata.tables["message"]
_ATTEMPT = SQLModel.metadata.tables["attempt"]
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
_DUE = (
    select(*MessageRow._columns, *AttemptRow._columns)
    .select_from(_MESSAGE.outerjoin(_ATTEMPT, _ATTEMPT.c.id == _MESSAGE.c.current_attempt_id))
    .where(_MESSAGE.c.due_at <= bindparam("now"))
    .where(or_(_MESSAGE.c.claimed_until.is_(None), _MESSAGE.c.claimed_until < bindparam("now")))
    .order_by(_MESSAGE.c.due_at)
    .limit(bindparam("limit"))
)
# On PostgreSQL the message rows are locked, and those another worker holds skipped (the attempt is the
# nullable side of the join: it cannot be locked there, and is guarded by its message's lock, as elsewhere).
_CLAIM: dict[bool, Select[Any]] = {False: _DUE, True: _DUE.with_for_update(skip_locked=True, of=_MESSAGE)}
_LOCK_MESSAGES = (
    select(*SentMessageRow._columns).where(_MESSAGE.c.id.in_(_IDS)).order_by(_MESSAGE.c.id).with_for_update()
)
_ATTEMPTS = select(*AttemptRow._columns).where(_ATTEMPT.c.id.in_(_IDS))


def claim_due(
    session: Session, worker: str, now: datetime, lease: float, limit: int
) -> list[tuple[MessageRow, AttemptRow | None]]:
    """As `store.claim_due_messages`, as plain rows with each message's current attempt."""
    postgres = session.get_bind().dialect.name == "postgresql"
    result = session.connection().execute(_CLAIM[postgres], {"now": now, "limit": limit}).all()
    width = len(MessageRow._keys)
    until = add_seconds(now, lease)
    claimed = []
    for values in result:
        message = MessageRow(values[:width])
        attempt = AttemptRow(values[width:]) if values[width] is not None else None
        message.claimed_until, message.claimed_by = until, worker
        claimed.append((message, attempt))
    return claimed


def lock_sent_messages(session: Session, ids: Iterable[str]) -> dict[str, SentMessageRow]:
    """As `store.lock_messages`, as plain rows of messages whose sends are being recorded."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    result = session.connection().execute(_LOCK_MESSAGES, {"ids": ids}).all()
    return {m.id: m for m in map(SentMessageRow, result)}


def load_attempts(session: Session, ids: Iterable[str]) -> dict[str, AttemptRow]:
    ids = list(ids)
    if not ids:
        return {}
    return {a.id: a for a in map(AttemptRow, session.connection().execute(_ATTEMPTS, {"ids": ids}).all())}


def write(session: Session, rows: Iterable[Row]) -> None:
    """UPDATE what changed in these rows: one statement, run for many rows, a table and set of columns."""
    groups: dict[tuple[type[Row], tuple[str, ...]], list[dict[str, Any]]] = {}
    for row in rows:
        changed = row.changes()
        if changed:
            names = tuple(sorted(changed))
            params = {f"v_{name}": value for name, value in changed.items()}
            params["v__id"] = row.__dict__["id"]
            groups.setdefault((type(row), names), []).append(params)
    connection = session.connection()
    for (kind, names), params_list in groups.items():
        connection.execute(_update(kind.model, names), params_list)


@functools.lru_cache(maxsize=128)
def _update(model: type[SQLModel], names: tuple[str, ...]) -> Update:
    """The UPDATE of these columns by id, built once (building one costs as much as running it)."""
    mapper = sa_inspect(model)
    column = {name: mapper.column_attrs[name].columns[0] for name in (*names, "id")}
    return (
        update(mapper.local_table)
        .where(column["id"] == bindparam("v__id"))
        .values({column[name].key: bindparam(f"v_{name}") for name in names})
    )


# -- which rows may go the plain way ---------------------------------------------------------------


def plain_start(
    message: MessageRow,
    attempt: AttemptRow | None,
    now: datetime,
    state: ChannelState | None,
    listened: bool,
) -> bool:
    """Whether `Progress.start` on these rows reads and changes nothing else: the message's current attempt is
    a first or next try not yet started, the message is neither completed nor expired, and nothing beside it
    changes (no refusal: an opt-out or block in the contact's channel `state`, which is only read; no answered
    message's reply token; no template for a closed window; no event about the status: `listened`, or the
    message's status callback).
    """
    return (
        attempt is not None
        and attempt.status == "pending"
        and not message.completed
        and (message.expires_at is None or message.expires_at > now)
        and refusal(state, attempt.channel) is None
        and message.in_reply_to is None
        and message.status_callback is None
        and not listened
        and attempt.channel not in ((message.content or {}).get("templates") or {})
    )


def plain_finish(
    message: SentMessageRow,
    attempt: AttemptRow,
    result: object,
    early: set[str],
    window_limited: bool,
    listened: bool,
) -> bool:
    """Whether `Progress.finish_send` on these rows reads and changes nothing else: a provider accepted a send
    still under way, of a message not completed; no receipt that teaches reachability (delivered, read), no
    count of sends in a channel's window, no early status waiting, no event about the status."""
    return (
        isinstance(result, SendResult)
        and result.status in ("accepted", "sent")
        and not (window_limited and result.status == "accepted")
        and attempt.status == "sending"
        and not message.completed
        and message.status not in FINAL_STATUSES
        and result.provider_message_id not in early
        and (attempt.provider_message_id or "") not in early
        and message.status_callback is None
        and not listened
    )
