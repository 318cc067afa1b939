"""`/webhooks/…`: providers report delivery status here; authenticated by their signatures only."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from gateway.api.http import gateway
from gateway.channels.base import Channel, WebhookAnswer, WebhookRequest
from gateway.errors import ProblemError, not_found
from gateway.services.provider_webhooks import ForgedWebhook, channel_for_hook, handle_webhook

bp = Blueprint("provider_hooks", __name__, url_prefix="/webhooks")


def webhook_request() -> WebhookRequest:
    """The request as the provider signed it: the public URL, the raw body, the form."""
    query = request.query_string.decode()
    url = gateway().settings.public_url + request.path + (f"?{query}" if query else "")
    return WebhookRequest(
        url=url,
        method=request.method,
        headers={k: v for k, v in request.headers.items()},
        body=request.get_data(cache=True),
        form=request.form.to_dict(),
        query=request.args.to_dict(),
    )


def _channel(hook: str) -> Channel:
    channels: dict[str, Channel] = current_app.extensions["gateway.channels"]
    handler = channel_for_hook(channels.values(), hook)
    if handler is None:
        raise not_found(f"webhook {hook}")
    return handler


def _answer(answer: WebhookAnswer) -> Response:
    return Response(answer.body, status=answer.status, content_type=answer.content_type)


@bp.get("/<path:hook>")
def verify(hook: str) -> Response:
    """A provider's subscription handshake (Meta hub.challenge, X CRC, WeChat echostr)."""
    answer = _channel(hook).handshake(hook, webhook_request())
    if answer is None:
        raise ProblemError(405, "method-not-allowed", "Method not allowed", "this webhook takes POST only")
    return _answer(answer)


@bp.post("/<path:hook>")
def receive(hook: str) -> Response:
    handler = _channel(hook)
    request = webhook_request()
    try:
        handle_webhook(gateway(), handler, hook, request)
    except ForgedWebhook:
        raise ProblemError(
            403, "forbidden", "Forbidden", "the webhook signature is missing or wrong"
        ) from None
    except (KeyError, ValueError, TypeError, AttributeError) as exc:  # a payload of the wrong shape
        detail = f"cannot read the payload: {type(exc).__name__}"
        raise ProblemError(400, "malformed-request", "Malformed webhook", detail) from None
    return _answer(handler.webhook_answer(hook, request))
