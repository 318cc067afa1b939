"""Provider status webhooks: verify, then move attempts and messages forward."""

from __future__ import annotations

from sqlmodel import select

from gateway import store
from gateway.channels.base import Channel, StatusUpdate, WebhookRequest
from gateway.core import Gateway
from gateway.models import Attempt


class ForgedWebhook(Exception):
    """The request does not carry a valid provider signature."""


def handle_status_webhook(gw: Gateway, channel: Channel, request: WebhookRequest) -> int:
    """Verify and apply a status webhook; return how many updates were applied."""
    if not channel.verify_webhook(request):
        raise ForgedWebhook(channel.name)
    applied = 0
    for update in channel.parse_status_webhook(request):
        if apply_status_update(gw, update):
            applied += 1
    if applied:
        gw.nudge()  # a failure may have scheduled an immediate fallback
    return applied


def apply_status_update(gw: Gateway, update: StatusUpdate) -> bool:
    """Apply one update to its attempt; an unknown attempt is acknowledged and ignored."""
    with store.transaction(gw.engine) as session:
        attempt = session.get(Attempt, update.attempt_id) if update.attempt_id else None
        if attempt is not None and attempt.provider_message_id not in (
            None,
            update.provider_message_id,
        ):
            attempt = None  # the attempt id does not belong to this provider message
        if attempt is None:
            query = select(Attempt).where(Attempt.provider_message_id == update.provider_message_id)
            attempt = session.exec(query).first()
        if attempt is None:
            return False
        message = store.lock_message(session, attempt.message_id)
        if message is None:
            return False
        session.refresh(attempt)
        gw.progress.apply_status(session, message, attempt, update)
        return True
