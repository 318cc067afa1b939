"""Housekeeping: forget what is no longer needed.

Hourly: idempotency records and unmatched early statuses older than a day. Daily, when
GATEWAY_RETENTION_DAYS is set: message bodies, metadata, inbound texts and event payloads older than
that are erased (statuses, channels and timings are kept, so delivery counts stay).
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete, update
from sqlmodel import col

from gateway import store
from gateway.core import Gateway
from gateway.models import EarlyStatus, Event, IdempotencyRecord, InboundMessage, Message

KEEP = timedelta(hours=24)


def purge(gw: Gateway) -> int:
    """Delete idempotency records and unmatched early statuses older than a day; return how many."""
    cutoff = gw.clock() - KEEP
    with store.transaction(gw.engine) as session:
        removed = 0
        for model, column in (
            (IdempotencyRecord, col(IdempotencyRecord.created_at)),
            (EarlyStatus, col(EarlyStatus.received_at)),
        ):
            result = session.execute(delete(model).where(column < cutoff))
            removed += result.rowcount or 0  # type: ignore[attr-defined]
        return removed


def erase_old_bodies(gw: Gateway) -> int:
    """Erase what people wrote, in rows older than the retention period; return how many rows."""
    days = gw.settings.retention_days
    if days is None:
        return 0
    cutoff = gw.clock() - timedelta(days=days)
    with store.transaction(gw.engine) as session:
        erased = 0
        for statement in (
            update(Message)
            .where(col(Message.created_at) < cutoff, col(Message.content).is_not(None))
            .values(content=None, metadata_=None),
            update(InboundMessage)
            .where(col(InboundMessage.received_at) < cutoff, col(InboundMessage.text).is_not(None))
            .values(text=None, raw=None, reply_token=None),
            update(Event)
            .where(col(Event.created_at) < cutoff, col(Event.data).is_not(None))
            .values(data=None),
        ):
            erased += session.execute(statement).rowcount or 0  # type: ignore[attr-defined]
        return erased
