"""What the console asks that the API does not: dashboard figures per channel, message search by channel and
time, recent contacts.

The dashboard reads one compact row per attempt created in the window (`load_attempt_rows`) and the pure
`aggregate`, `median` and `time_buckets` turn them into figures, so the arithmetic is tested without a
database and is the same on SQLite and PostgreSQL (which disagree on date arithmetic and medians).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlmodel import Session, col, select

from gateway.models import Attempt, Contact, Message
from gateway.services.contacts import live

# The dashboard's periods: name -> (length, width of one column of the time chart).
WINDOWS: dict[str, tuple[timedelta, timedelta]] = {
    "hour": (timedelta(hours=1), timedelta(minutes=5)),
    "day": (timedelta(days=1), timedelta(hours=1)),
}
# At most this many attempts (the newest) are read for one dashboard; the page says when it hit the cap.
MAX_ATTEMPT_ROWS = 100_000
SENT_STATUSES = frozenset({"accepted", "sent", "delivered", "read"})
DELIVERED_STATUSES = frozenset({"delivered", "read"})


@dataclass(frozen=True)
class AttemptRow:
    """What the dashboard needs of one attempt (and its message's start)."""

    channel: str
    message_id: str
    step_index: int
    status: str
    error_kind: str | None
    created_at: datetime
    sent_at: datetime | None
    delivered_at: datetime | None
    message_start: datetime  # acceptance, or send_at when later


@dataclass
class ChannelFigures:
    channel: str
    attempts: int = 0
    sent: int = 0  # the provider accepted the attempt
    delivered: int = 0  # a delivery (or read) receipt came back
    failed: Counter[str] = field(default_factory=Counter)  # attempts with an error, by error kind
    steps: int = 0  # (message, plan step) pairs on this channel
    fell_back: int = 0  # of those, how many moved on to a later step
    median_delivery: float | None = None  # seconds from the message's start to the delivery receipt

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())

    @property
    def fallback_rate(self) -> float | None:
        return self.fell_back / self.steps if self.steps else None


@dataclass(frozen=True)
class Bucket:
    start: datetime
    sent: int
    delivered: int
    failed: int


@dataclass(frozen=True)
class Dashboard:
    window: str
    since: datetime
    until: datetime
    channels: list[ChannelFigures]
    buckets: list[Bucket]
    truncated: bool  # MAX_ATTEMPT_ROWS was reached: older attempts of the window are left out


def median(values: Iterable[float]) -> float | None:
    """The middle value (the mean of the two middle ones for an even count); None for no values."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return None
    mid = n // 2
    return ordered[mid] if n % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def is_sent(row: AttemptRow) -> bool:
    return row.sent_at is not None or row.status in SENT_STATUSES


def is_delivered(row: AttemptRow) -> bool:
    return row.delivered_at is not None or row.status in DELIVERED_STATUSES


def aggregate(rows: Sequence[AttemptRow]) -> list[ChannelFigures]:
    """Figures per channel, in order of first appearance in `rows`.

    A (message, step) pair "fell back" when the same message has an attempt on a later step; retries of a
    step are one pair. Time to delivery runs from the message's start to the receipt, like the
    `gateway_time_to_delivery_seconds` metric.
    """
    last_step: dict[str, int] = {}
    for row in rows:
        last_step[row.message_id] = max(last_step.get(row.message_id, -1), row.step_index)
    figures: dict[str, ChannelFigures] = {}
    pairs: dict[str, set[tuple[str, int]]] = defaultdict(set)
    took: dict[str, list[float]] = defaultdict(list)
    for row in rows:
        f = figures.setdefault(row.channel, ChannelFigures(row.channel))
        f.attempts += 1
        f.sent += is_sent(row)
        if is_delivered(row):
            f.delivered += 1
            if row.delivered_at is not None:
                seconds = (_aware(row.delivered_at) - _aware(row.message_start)).total_seconds()
                took[row.channel].append(max(0.0, seconds))
        if row.error_kind:
            f.failed[row.error_kind] += 1
        pairs[row.channel].add((row.message_id, row.step_index))
    for name, f in figures.items():
        f.steps = len(pairs[name])
        f.fell_back = sum(1 for message_id, step in pairs[name] if last_step[message_id] > step)
        f.median_delivery = median(took[name])
    return list(figures.values())


def time_buckets(rows: Iterable[AttemptRow], since: datetime, width: timedelta, count: int) -> list[Bucket]:
    """Sent, delivered and failed attempts per column of the time chart, by when the attempt was created."""
    sent, delivered, failed = [0] * count, [0] * count, [0] * count
    for row in rows:
        index = (_aware(row.created_at) - since) // width  # floor: a moment before `since` is out
        if not 0 <= index < count:
            continue
        sent[index] += is_sent(row)
        delivered[index] += is_delivered(row)
        failed[index] += row.error_kind is not None
    return [Bucket(since + i * width, sent[i], delivered[i], failed[i]) for i in range(count)]


def load_attempt_rows(session: Session, since: datetime, limit: int = MAX_ATTEMPT_ROWS) -> list[AttemptRow]:
    """Attempts created at or after `since`, newest first, at most `limit`."""
    query = (
        select(Attempt, Message.created_at, Message.send_at)
        .join(Message, col(Message.id) == col(Attempt.message_id))
        .where(col(Attempt.created_at) >= since)
        .order_by(col(Attempt.created_at).desc())
        .limit(limit)
    )
    rows = []
    for a, accepted, send_at in session.exec(query):
        start = _aware(accepted) if send_at is None else max(_aware(accepted), _aware(send_at))
        rows.append(
            AttemptRow(
                a.channel,
                a.message_id,
                a.step_index,
                a.status,
                a.error_kind,
                a.created_at,
                a.sent_at,
                a.delivered_at,
                start,
            )
        )
    return rows


def dashboard(session: Session, now: datetime, window: str) -> Dashboard:
    """The figures of the last hour or day (`WINDOWS`) up to `now`."""
    length, width = WINDOWS[window]
    since = now - length
    rows = load_attempt_rows(session, since)
    count = int(length / width)
    return Dashboard(
        window=window,
        since=since,
        until=now,
        channels=sorted(aggregate(rows), key=lambda f: (-f.attempts, f.channel)),  # busiest first
        buckets=time_buckets(rows, since, width, count),
        truncated=len(rows) >= MAX_ATTEMPT_ROWS,
    )


@dataclass(frozen=True)
class MessageQuery:
    """The console's message search; empty fields do not filter."""

    statuses: tuple[str, ...] = ()
    channel: str | None = None  # the channel the message is on, or ended on
    contact_id: str | None = None
    since: datetime | None = None  # created at or after
    until: datetime | None = None  # created before


def search_messages(
    session: Session, query: MessageQuery, limit: int, cursor: str | None
) -> tuple[list[Message], str | None]:
    """Newest first, like `messages.list_messages` (same cursor: the last id seen), with more filters."""
    q = select(Message)
    if query.statuses:
        q = q.where(col(Message.status).in_(query.statuses))
    if query.channel:
        q = q.where(Message.channel == query.channel)
    if query.contact_id:
        q = q.where(Message.contact_id == query.contact_id)
    if query.since is not None:
        q = q.where(col(Message.created_at) >= query.since)
    if query.until is not None:
        q = q.where(col(Message.created_at) < query.until)
    if cursor:
        q = q.where(col(Message.id) < cursor)
    rows = list(session.exec(q.order_by(col(Message.id).desc()).limit(limit + 1)))
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor


def recent_contacts(session: Session, limit: int, cursor: str | None) -> tuple[list[Contact], str | None]:
    """Live contacts, newest first; the cursor is the last id seen."""
    q = select(Contact).where(live())
    if cursor:
        q = q.where(col(Contact.id) < cursor)
    rows = list(session.exec(q.order_by(col(Contact.id).desc()).limit(limit + 1)))
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor


def figures_out(figures: ChannelFigures) -> dict[str, Any]:
    """One channel's figures as plain values (for templates and tests)."""
    return {
        "channel": figures.channel,
        "attempts": figures.attempts,
        "sent": figures.sent,
        "delivered": figures.delivered,
        "failed": dict(sorted(figures.failed.items())),
        "failed_total": figures.failed_total,
        "fallback_rate": figures.fallback_rate,
        "median_delivery": figures.median_delivery,
    }
