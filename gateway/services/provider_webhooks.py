"""Provider webhooks: verify the signature, then apply status reports and customers' messages."""

from __future__ import annotations

from collections.abc import Iterable

from sqlmodel import select

from gateway import store
from gateway.channels.base import Channel, StatusUpdate, WebhookRequest
from gateway.core import Gateway
from gateway.inbound.pipeline import receive_inbound
from gateway.models import Attempt


class ForgedWebhook(Exception):
    """The request does not carry a valid provider signature."""


def channel_for_hook(channels: Iterable[Channel], hook: str) -> Channel | None:
    """The adapter that owns the webhook path `hook` (under /webhooks/)."""
    return next((c for c in channels if hook in (c.status_webhook, c.inbound_webhook)), None)


def handle_webhook(gw: Gateway, channel: Channel, hook: str, request: WebhookRequest) -> int:
    """Verify and apply one provider webhook call; return how many items it carried."""
    if not channel.verify_webhook(request):
        raise ForgedWebhook(channel.name)
    applied = 0
    if hook == channel.status_webhook:
        applied += sum(apply_status_update(gw, update) for update in channel.parse_status_webhook(request))
        if applied:
            gw.nudge()  # a failure may have scheduled an immediate retry or fallback
    if hook == channel.inbound_webhook:
        for item in channel.parse_inbound_webhook(request):
            receive_inbound(gw, item)
            applied += 1
    return applied


def apply_status_update(gw: Gateway, update: StatusUpdate) -> bool:
    """Apply one update to its attempt; an unknown attempt is acknowledged and ignored."""
    with store.transaction(gw.engine) as session:
        attempt = session.get(Attempt, update.attempt_id) if update.attempt_id else None
        if attempt is not None and attempt.provider_message_id not in (None, update.provider_message_id):
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
