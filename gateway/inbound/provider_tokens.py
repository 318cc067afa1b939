"""Providers' one-use tokens for answering a customer's message (LINE's `replyToken`).

The token is stored, encrypted like other bodies, with the inbound message it answers. The first attempt of
a reply on that channel, to that address, while the token is valid takes it: the token is cleared in the
same transaction that starts the attempt, so it is offered to the provider at most once. Later attempts
(a retry, another reply to the same message) find it gone and send the usual way.
"""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session

from gateway.models import InboundMessage


def take_reply_token(
    session: Session, in_reply_to: str | None, channel: str, address: str, now: datetime
) -> str | None:
    """The answered message's reply token for an attempt on `channel` to `address`, used up; or None."""
    inbound = session.get(InboundMessage, in_reply_to) if in_reply_to else None
    if inbound is None or inbound.reply_token is None:
        return None
    if inbound.channel != channel or inbound.address != address:
        return None
    token = inbound.reply_token
    expires = inbound.reply_token_expires_at
    inbound.reply_token = None  # once offered (or expired) it can never be used again
    inbound.reply_token_expires_at = None
    if expires is None or expires <= now:
        return None
    return token
