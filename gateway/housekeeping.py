"""Hourly housekeeping: forget what is no longer needed (old idempotency records, orphan statuses)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import delete
from sqlmodel import col

from gateway import store
from gateway.core import Gateway
from gateway.models import EarlyStatus, IdempotencyRecord

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
