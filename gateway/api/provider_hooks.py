"""`/webhooks/…`: providers report delivery status here; authenticated by their signatures only."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from gateway.api.http import gateway
from gateway.channels.base import Channel, WebhookRequest
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


@bp.post("/<path:hook>")
def receive(hook: str) -> Response:
    channels: dict[str, Channel] = current_app.extensions["gateway.channels"]
    handler = channel_for_hook(channels.values(), hook)
    if handler is None:
        raise not_found(f"webhook {hook}")
    try:
        handle_webhook(gateway(), handler, hook, webhook_request())
    except ForgedWebhook:
        raise ProblemError(
            403, "forbidden", "Forbidden", "the webhook signature is missing or wrong"
        ) from None
    except (KeyError, ValueError, TypeError) as exc:
        raise ProblemError(
            400, "malformed-request", "Malformed webhook", f"cannot read the payload: {exc}"
        ) from None
    # Twilio expects an empty TwiML document or an empty 2xx.
    return Response("<Response/>", status=200, content_type="text/xml")
