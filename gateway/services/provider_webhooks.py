"""Provider webhooks: verify the signature, then apply status reports and customers' messages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
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
    statuses = apply_status_updates(gw, batch.statuses, channel.name)
    for item in batch.inbound:
        receive_inbound(gw, item)
    for event in batch.identity:
        receive_identity_event(gw, event)
    return statuses + len(batch.inbound) + len(batch.identity)


# Our record of a send is a little later than the provider's own time for it.
WATERMARK_SLACK = timedelta(seconds=2)


def apply_status_updates(gw: Gateway, updates: Sequence[StatusUpdate], channel: str = "") -> int:
    """Apply a webhook's status updates in order; how many found their attempt.

    Updates that name a message are applied with those of other webhook calls of this process arriving at
    the same moment, in one transaction (`gw.statuses`); a watermark receipt is applied on its own.
    """
    applied, run = 0, list[StatusUpdate]()
    for update in [*updates, None]:
        if update is not None and update.up_to is None:
            run.append(update)
            continue
        if run:
            applied += gw.statuses.submit(tuple(run), lambda items: _apply_together(gw, items))
            run = []
        if update is not None:
            applied += apply_watermark(gw, channel, update)
    return applied


def apply_status_update(gw: Gateway, update: StatusUpdate, channel: str = "") -> bool:
    """Apply one update to its attempt; one for a send not yet recorded is kept until it is."""
    return apply_status_updates(gw, [update], channel) > 0


def _apply_together(gw: Gateway, items: Sequence[Sequence[StatusUpdate]]) -> list[int | Exception]:
    """The updates of webhook calls that arrived together, in one transaction; should it fail, each call's
    in a transaction of its own, so a bad update costs only its own call."""
    try:
        return list(_apply_in_one(gw, items))
    except Exception as exc:
        if len(items) == 1:
            return [exc]
    answers: list[int | Exception] = []
    for item in items:
        try:
            answers += _apply_in_one(gw, [item])
        except Exception as exc:
            answers.append(exc)
    return answers


def _apply_in_one(gw: Gateway, items: Sequence[Sequence[StatusUpdate]]) -> list[int]:
    """Apply every item's updates in one transaction; how many of each item's found their attempt.

    Locks are taken as the dispatcher's recording takes them (provider ids, then messages in id order), so
    the two never wait on each other in a ring.
    """
    updates = [u for item in items for u in item]
    with store.transaction(gw.engine) as session:
        store.lock_provider_ids(session, [u.provider_message_id for u in updates])
        attempts = _attempts_for(session, updates)
        messages = store.lock_messages(session, sorted({a.message_id for a in attempts if a is not None}))
        if store.is_postgres(gw.engine):  # read before the messages' locks; SQLite's writer lock came first
            store.load_attempts(session, [a.id for a in attempts if a is not None], fresh=True)
        pairs = {
            (messages[a.message_id].contact_id, a.channel) for a in attempts if a and a.message_id in messages
        }
        store.load_channel_states(session, pairs)
        progress, now = gw.progress, gw.clock()
        found = []
        for update, attempt in zip(updates, attempts, strict=True):
            message = messages.get(attempt.message_id) if attempt is not None else None
            if attempt is None:
                # The provider was faster than our own record of the send: keep it for `apply_early_statuses`.
                session.add(early_status(update, now))
            elif message is not None:
                metrics.receipt(session, message, attempt, update)
                progress.apply_status(session, message, attempt, update)
            found.append(message is not None)
        # Wake the dispatcher only for work due now: a retry or the next step, or an event to deliver.
        now = gw.clock()
        wake = events.queued(session) or any(
            m.due_at is not None and m.due_at <= now for m in messages.values()
        )
    if wake:
        gw.nudge()
    answers, taken = [], iter(found)
    for item in items:
        answers.append(sum(next(taken) for _ in item))
    return answers


def _attempts_for(session: Session, updates: Sequence[StatusUpdate]) -> list[Attempt | None]:
    """Each update's attempt: the one it names if that is the provider message's, else the provider
    message's; an update earlier in the list may have named the attempt a later one finds by provider id."""
    named = store.load_attempts(session, [u.attempt_id for u in updates if u.attempt_id])
    wanted = {
        u.provider_message_id
        for u in updates
        if u.attempt_id not in named
        or named[u.attempt_id].provider_message_id not in (None, u.provider_message_id)
    }
    by_provider_id = _attempts_by_provider_id(session, sorted(wanted))
    found: list[Attempt | None] = []
    for update in updates:
        attempt = named.get(update.attempt_id or "")
        if attempt is not None and attempt.provider_message_id not in (None, update.provider_message_id):
            attempt = None  # the attempt id does not belong to this provider message
        if attempt is None:
            attempt = by_provider_id.get(update.provider_message_id)
        else:
            by_provider_id.setdefault(update.provider_message_id, attempt)
        found.append(attempt)
    return found


def _attempts_by_provider_id(session: Session, provider_message_ids: list[str]) -> dict[str, Attempt]:
    found: dict[str, Attempt] = {}
    for attempt in store.attempts_by_provider_id(session, provider_message_ids):
        found.setdefault(attempt.provider_message_id or "", attempt)
    return found


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
    return apply_status_updates(gw, single, channel)


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
