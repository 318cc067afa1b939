"""Events to business systems: written as rows in the same transaction as the change they report,
delivered by the dispatcher, signed, retried with backoff for a day, in order per endpoint and contact.

A delivery is a POST of `{"id": "evt_…", "type", "created_at", "data"}` with the header
`Gateway-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, func, or_, update
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, select

from gateway.ids import new_id
from gateway.models import Event, EventDelivery, Message, WebhookSubscription
from gateway.timeutil import add_seconds, rfc3339

EVENT_TYPES = ("message.status", "message.inbound", "contact.opted_out", "contact.reachability")
GIVE_UP_AFTER = timedelta(hours=25)  # retried for at least 24 h
SUBSCRIPTIONS_CACHE = 5.0  # seconds another process may take to see a new subscription


def sign(secret: str, body: bytes, at: int) -> str:
    """The Gateway-Signature header value for a body sent at unix time `at`."""
    mac = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={mac}"


class Subscriptions:
    """Active webhook subscriptions, cached briefly so emitting costs no query per change."""

    def __init__(self) -> None:
        self._rows: list[tuple[str, str, frozenset[str]]] = []
        self._loaded_at = -SUBSCRIPTIONS_CACHE
        self._lock = threading.Lock()

    def forget(self) -> None:
        with self._lock:
            self._loaded_at = -SUBSCRIPTIONS_CACHE

    def for_type(self, session: Session, event_type: str) -> list[tuple[str, str]]:
        now = time.monotonic()
        with self._lock:
            fresh = now - self._loaded_at < SUBSCRIPTIONS_CACHE
            rows = self._rows
        if not fresh:
            query = select(WebhookSubscription).where(col(WebhookSubscription.deleted_at).is_(None))
            rows = [(s.id, s.url, frozenset(s.events or ())) for s in session.exec(query)]
            with self._lock:
                self._rows, self._loaded_at = rows, now
        return [(sid, url) for sid, url, types in rows if event_type in types]


QUEUED = "gateway.events.queued"  # session.info key: this transaction queued deliveries


def queued(session: Session) -> bool:
    """Whether this transaction queued event deliveries (the dispatcher should be woken after it)."""
    return bool(session.info.get(QUEUED))


def emit(
    session: Session,
    subscriptions: Subscriptions,
    event_type: str,
    contact_id: str | None,
    data: Callable[[], dict[str, Any]],
    now: datetime,
    extra_targets: list[tuple[str, str]] = (),  # type: ignore[assignment]
) -> Event | None:
    """Record an event and one delivery per interested endpoint; nothing when nobody listens."""
    targets = subscriptions.for_type(session, event_type) + list(extra_targets)
    if not targets:
        return None
    event = Event(id=new_id("evt"), type=event_type, contact_id=contact_id, data=data(), created_at=now)
    session.add(event)
    session.flush()
    session.info[QUEUED] = True
    for target, url in targets:
        session.add(
            EventDelivery(
                id=new_id("dlv"),
                event_id=event.id,
                target=target,
                url=url,
                contact_id=contact_id,
                due_at=now,
                created_at=now,
                updated_at=now,
            )
        )
    return event


def emit_message_status(
    session: Session,
    subscriptions: Subscriptions,
    message: Message,
    data: Callable[[], dict[str, Any]],
    now: datetime,
) -> None:
    """`message.status` to subscribers and to the message's own `status_callback`."""
    extra = [(message.id, message.status_callback)] if message.status_callback else []
    emit(session, subscriptions, "message.status", message.contact_id, data, now, extra)


def body_of(event: Event) -> bytes:
    payload = {
        "id": event.id,
        "type": event.type,
        "created_at": rfc3339(event.created_at),
        "data": event.data,
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def _first_in_line() -> Any:
    """Deliveries with no earlier unfinished delivery to the same endpoint about the same contact."""
    earlier = aliased(EventDelivery)
    return ~(
        select(earlier.id)
        .where(
            earlier.target == EventDelivery.target,
            col(earlier.contact_id).is_not_distinct_from(EventDelivery.contact_id),
            col(earlier.delivered).is_(False),
            col(earlier.given_up).is_(False),
            col(earlier.id) < EventDelivery.id,
        )
        .exists()
    )


# Built once, as gateway/store.py's hot queries are: building a statement on every claim round costs about
# as much as running a small one on SQLite.
_UNCLAIMED = or_(
    col(EventDelivery.claimed_until).is_(None), col(EventDelivery.claimed_until) < bindparam("now")
)
_DUE = (
    select(EventDelivery.id)
    .where(col(EventDelivery.due_at) <= bindparam("now"), _UNCLAIMED, _first_in_line())
    .order_by(col(EventDelivery.due_at))
    .limit(bindparam("limit"))
)
_CLAIM = {False: _DUE, True: _DUE.with_for_update(skip_locked=True, of=EventDelivery)}  # by PostgreSQL
_NEXT_DUE = select(func.min(EventDelivery.due_at)).where(_UNCLAIMED, _first_in_line())


def claim_due_deliveries(session: Session, worker: str, now: datetime, lease: float, limit: int) -> list[str]:
    """Claim due deliveries that are first in line for their (endpoint, contact)."""
    query = _CLAIM[session.get_bind().dialect.name == "postgresql"]
    ids = list(session.exec(query, params={"now": now, "limit": limit}))
    if ids:
        session.execute(
            update(EventDelivery)
            .where(col(EventDelivery.id).in_(ids))
            .values(claimed_until=add_seconds(now, lease), claimed_by=worker)
        )
    return ids


def next_due_at(session: Session, now: datetime) -> datetime | None:
    """The earliest due time of a delivery that could be claimed once due."""
    value: datetime | None = session.exec(_NEXT_DUE, params={"now": now}).one()
    return value


def record_delivery(
    session: Session,
    delivery: EventDelivery,
    error: str | None,
    now: datetime,
    backoff: float,
    max_backoff: float,
) -> None:
    """Mark a delivery done, or schedule its next try (giving up after a day and an hour)."""
    delivery.tries += 1
    delivery.claimed_until = None
    delivery.claimed_by = None
    delivery.updated_at = now
    if error is None:
        delivery.delivered = True
        delivery.due_at = None
        delivery.last_error = None
        return
    delivery.last_error = error[:500]
    if now - delivery.created_at > GIVE_UP_AFTER:
        delivery.given_up = True
        delivery.due_at = None
        return
    delay = min(max_backoff, backoff * 2 ** (delivery.tries - 1))
    delivery.due_at = add_seconds(now, delay)


def secret_for(session: Session, delivery: EventDelivery, callback_secret: str) -> str:
    """A subscription's own secret, or the callback secret for a message's status_callback."""
    if delivery.target.startswith("wh_"):
        sub = session.get(WebhookSubscription, delivery.target)
        return sub.secret if sub else callback_secret
    return callback_secret
