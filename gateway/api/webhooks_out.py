"""`/v1/webhooks`: business systems subscribe to events (admin scope)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response

from gateway import store
from gateway.api.http import api_route, caller, gateway, json_response, parse_body
from gateway.models import WebhookSubscription
from gateway.schemas import WebhookIn, WebhookList, WebhookOut
from gateway.services import webhooks
from gateway.timeutil import rfc3339

bp = Blueprint("webhooks_out", __name__, url_prefix="/v1/webhooks")


def _out(sub: WebhookSubscription, secret: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": sub.id,
        "url": sub.url,
        "events": sub.events or [],
        "respond": sub.respond,
        "created_at": rfc3339(sub.created_at),
    }
    if secret is not None:
        body["secret"] = secret
    return body


@api_route(bp, "", "POST", "Subscribe an endpoint to events", "admin", WebhookIn, WebhookOut, 201)
def create() -> Response:
    body = parse_body(WebhookIn)
    gw = gateway()
    with store.transaction(gw.engine) as session:
        sub, secret = webhooks.subscribe(session, gw, body, f"api:{caller().key_id}")
    gw.subscriptions.forget()
    return json_response(_out(sub, secret), 201)


@api_route(bp, "", "GET", "Subscriptions", "admin", response=WebhookList)
def list_() -> Response:
    with store.transaction(gateway().engine) as session:
        data = [_out(s) for s in webhooks.list_subscriptions(session)]
    return json_response({"data": data, "next_cursor": None})


@api_route(bp, "/<webhook_id>", "GET", "A subscription", "admin", response=WebhookOut)
def get(webhook_id: str) -> Response:
    with store.transaction(gateway().engine) as session:
        return json_response(_out(webhooks.get_subscription(session, webhook_id)))


@api_route(
    bp, "/<webhook_id>", "DELETE", "Unsubscribe (pending deliveries still go out)", "admin", status=204
)
def delete(webhook_id: str) -> Response:
    gw = gateway()
    with store.transaction(gw.engine) as session:
        webhooks.unsubscribe(session, gw, webhook_id, f"api:{caller().key_id}")
    gw.subscriptions.forget()
    return Response(status=204)
