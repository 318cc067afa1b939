"""Provider webhooks: verify the signature, then apply status reports and customers' messages."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace
from datetime import datetime, timedelta

from sqlmodel import Session, col, select

from gateway import events, metrics, store
from gateway.channels.base import Channel, StatusUpdate, WebhookRequest
from gateway.core import Gateway
from gateway.errors import ChannelError, ErrorKind
from gateway.inbound.pipeline import receive_identity_event, receive_inbound
from gateway.models import Attempt, EarlyStatus, Message


class ForgedWebhook(Exception):
    """The request does not carry a valid provider signature."""


def channel_for_hook(channels: Iterable[Channel], hook: str) -> Channel | None:
    """The adapter that owns the webhook path `hook` (under /webhooks/)."""
    return next((c for c in channels if c.owns_webhook(hook)), None)


def handle_webhook(gw: Gateway, channel: Channel, hook: str, request: WebhookRequest) -> int:
    """Verify and apply one provider webhook call; return how many items it carried."""
    if not channel.verify_webhook(request):
        raise ForgedWebhook(channel.name)
    batch = channel.parse_webhook(hook, request)
    statuses = sum(apply_status_update(gw, update, channel.name) for update in batch.statuses)
    for item in batch.inbound:
        receive_inbound(gw, item)
    for event in batch.identity:
        receive_identity_event(gw, event)
    return statuses + len(batch.inbound) + len(batch.identity)


# Our record of a send is a little later than the provider's own time for it.
WATERMARK_SLACK = timedelta(seconds=2)


def apply_status_update(gw: Gateway, update: StatusUpdate, channel: str = "") -> bool:
    """Apply one update to its attempt; one for a send not yet recorded is kept until it is."""
    if update.up_to is not None:
        return apply_watermark(gw, channel, update) > 0
    with store.transaction(gw.engine) as session:
        store.lock_provider_id(session, update.provider_message_id)
        attempt = session.get(Attempt, update.attempt_id) if update.attempt_id else None
        if attempt is not None and attempt.provider_message_id not in (None, update.provider_message_id):
            attempt = None  # the attempt id does not belong to this provider message
        if attempt is None:
            query = select(Attempt).where(Attempt.provider_message_id == update.provider_message_id)
            attempt = session.exec(query).first()
        if attempt is None:
            # The provider was faster than our own record of the send: keep it for `apply_early_statuses`.
            session.add(early_status(update, gw.clock()))
            return False
        message = store.lock_message(session, attempt.message_id)
        if message is None:
            return False
        if store.is_postgres(gw.engine):  # read before the message's lock; SQLite's writer lock came first
            session.refresh(attempt)
        metrics.receipt(session, message, attempt, update)
        gw.progress.apply_status(session, message, attempt, update)
        # Wake the dispatcher only for work due now: a retry or the next step, or an event to deliver.
        wake = events.queued(session) or (message.due_at is not None and message.due_at <= gw.clock())
    if wake:
        gw.nudge()
    return True


def apply_watermark(gw: Gateway, channel: str, update: StatusUpdate) -> int:
    """A receipt by watermark: apply it to every attempt to that address sent by then; how many."""
    assert update.up_to is not None
    with store.transaction(gw.engine) as session:
        query = select(Attempt).where(
            Attempt.channel == channel,
            Attempt.address == update.address,
            col(Attempt.sent_at) <= update.up_to + WATERMARK_SLACK,
            col(Attempt.status).in_(("accepted", "sent", "delivered")),
        )
        found = [(a.id, a.provider_message_id or "") for a in session.exec(query)]
    single = [
        replace(update, provider_message_id=pmid, attempt_id=aid, address=None, up_to=None)
        for aid, pmid in found
    ]
    return sum(apply_status_update(gw, one) for one in single)


def early_status(update: StatusUpdate, now: datetime) -> EarlyStatus:
    error = update.error
    return EarlyStatus(
        provider_message_id=update.provider_message_id,
        status=update.status,
        error_kind=error.kind if error else None,
        error_code=error.code if error else None,
        error_detail=error.detail if error else None,
        received_at=update.at or now,
    )


def apply_early_statuses(gw: Gateway, session: Session, message: Message, attempt: Attempt) -> None:
    """Apply statuses that arrived for this attempt before its send was recorded, oldest first."""
    if not attempt.provider_message_id:
        return
    query = select(EarlyStatus).where(EarlyStatus.provider_message_id == attempt.provider_message_id)
    for row in sorted(session.exec(query), key=lambda r: r.id or 0):
        error = (
            ChannelError(ErrorKind(row.error_kind), row.error_detail or "", row.error_code)
            if row.error_kind
            else None
        )
        update = StatusUpdate(row.provider_message_id, row.status, error, attempt.id, row.received_at)  # type: ignore[arg-type]
        metrics.receipt(session, message, attempt, update)
        gw.progress.apply_status(session, message, attempt, update)
        session.delete(row)
