"""`/v1/webhooks`: business systems subscribe to events (admin scope)."""

from __future__ import annotations

import secrets
from typing import Any

from flask import Blueprint, Response
from sqlmodel import Session, col, select

from gateway import store
from gateway.api.http import api_route, gateway, json_response, parse_body
from gateway.errors import not_found
from gateway.ids import new_id
from gateway.models import WebhookSubscription
from gateway.schemas import WebhookIn, WebhookList, WebhookOut
from gateway.timeutil import rfc3339

bp = Blueprint("webhooks_out", __name__, url_prefix="/v1/webhooks")


def _out(sub: WebhookSubscription, secret: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": sub.id,
        "url": sub.url,
        "events": sub.events or [],
        "created_at": rfc3339(sub.created_at),
    }
    if secret is not None:
        body["secret"] = secret
    return body


@api_route(bp, "", "POST", "Subscribe an endpoint to events", "admin", WebhookIn, WebhookOut, 201)
def create() -> Response:
    body = parse_body(WebhookIn)
    gw = gateway()
    secret = "whsec_" + secrets.token_urlsafe(32)
    with store.transaction(gw.engine) as session:
        sub = WebhookSubscription(
            id=new_id("wh"), url=body.url, events=list(body.events), secret=secret, created_at=gw.clock()
        )
        session.add(sub)
    gw.subscriptions.forget()
    return json_response(_out(sub, secret), 201)


@api_route(bp, "", "GET", "Subscriptions", "admin", response=WebhookList)
def list_() -> Response:
    with store.transaction(gateway().engine) as session:
        query = select(WebhookSubscription).where(col(WebhookSubscription.deleted_at).is_(None))
        data = [_out(s) for s in session.exec(query.order_by(col(WebhookSubscription.id)))]
    return json_response({"data": data, "next_cursor": None})


def _get(session: Session, webhook_id: str) -> WebhookSubscription:
    sub = session.get(WebhookSubscription, webhook_id)
    if sub is None or sub.deleted_at is not None:
        raise not_found(f"webhook {webhook_id}")
    return sub


@api_route(bp, "/<webhook_id>", "GET", "A subscription", "admin", response=WebhookOut)
def get(webhook_id: str) -> Response:
    with store.transaction(gateway().engine) as session:
        return json_response(_out(_get(session, webhook_id)))


@api_route(
    bp, "/<webhook_id>", "DELETE", "Unsubscribe (pending deliveries still go out)", "admin", status=204
)
def delete(webhook_id: str) -> Response:
    gw = gateway()
    with store.transaction(gw.engine) as session:
        _get(session, webhook_id).deleted_at = gw.clock()
    gw.subscriptions.forget()
    return Response(status=204)
