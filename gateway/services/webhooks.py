"""Webhook subscriptions of business systems: create (the secret is shown once), list, delete.

After a create or delete commits, the caller calls `gw.subscriptions.forget()` so this process's
dispatcher sees the change at once (others reload on their own schedule).
"""

from __future__ import annotations

import secrets
from typing import Any

from sqlmodel import Session, col, select

from gateway.core import Gateway
from gateway.errors import not_found
from gateway.ids import new_id
from gateway.models import WebhookSubscription
from gateway.schemas import WebhookIn
from gateway.services.admin_users import audit
from gateway.timeutil import rfc3339


def subscribe(session: Session, gw: Gateway, body: WebhookIn, actor: str) -> tuple[WebhookSubscription, str]:
    """Store a subscription and return it with its signing secret (kept for signing, shown only now)."""
    secret = "whsec_" + secrets.token_urlsafe(32)
    sub = WebhookSubscription(
        id=new_id("wh"),
        url=body.url,
        events=list(body.events),
        secret=secret,
        respond=body.respond,
        created_at=gw.clock(),
    )
    session.add(sub)
    audit(session, actor, "webhook.create", sub.id, None, webhook_audit(sub), sub.created_at)
    return sub, secret


def list_subscriptions(session: Session) -> list[WebhookSubscription]:
    query = select(WebhookSubscription).where(col(WebhookSubscription.deleted_at).is_(None))
    return list(session.exec(query.order_by(col(WebhookSubscription.id))))


def get_subscription(session: Session, webhook_id: str) -> WebhookSubscription:
    sub = session.get(WebhookSubscription, webhook_id)
    if sub is None or sub.deleted_at is not None:
        raise not_found(f"webhook {webhook_id}")
    return sub


def unsubscribe(session: Session, gw: Gateway, webhook_id: str, actor: str) -> None:
    """Delete a subscription; deliveries already pending still go out."""
    sub = get_subscription(session, webhook_id)
    before = webhook_audit(sub)
    sub.deleted_at = gw.clock()
    audit(session, actor, "webhook.delete", sub.id, before, None, sub.deleted_at)


def webhook_audit(sub: WebhookSubscription) -> dict[str, Any]:
    """What the audit log keeps of a subscription: never its secret."""
    return {
        "id": sub.id,
        "url": sub.url,
        "events": list(sub.events or []),
        "respond": sub.respond,
        "created_at": rfc3339(sub.created_at),
    }
