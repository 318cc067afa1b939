"""`/webhooks/…`: providers report delivery status here; authenticated by their signatures only."""

from __future__ import annotations

from flask import Blueprint, Response, current_app, request

from gateway.api.http import gateway
from gateway.channels.base import Channel, WebhookRequest
from gateway.errors import ProblemError, not_found
from gateway.services.provider_webhooks import ForgedWebhook, handle_status_webhook

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
def status(hook: str) -> Response:
    channels: dict[str, Channel] = current_app.extensions["gateway.channels"]
    handler = next((c for c in channels.values() if c.status_webhook == hook), None)
    if handler is None:
        raise not_found(f"webhook {hook}")
    try:
        handle_status_webhook(gateway(), handler, webhook_request())
    except ForgedWebhook:
        raise ProblemError(
            403, "forbidden", "Forbidden", "the webhook signature is missing or wrong"
        ) from None
    # Twilio expects an empty TwiML document or an empty 2xx.
    return Response("<Response/>", status=200, content_type="text/xml")
