"""Turn a message's content into what one channel can carry."""

from __future__ import annotations

from gateway.adapt import adapt
from gateway.channels.base import Channel, OutgoingMessage
from gateway.core import Gateway
from gateway.inbound.reply_token import (
    make_token,
    make_unsubscribe_token,
    reply_address,
    reply_key,
    unsubscribe_key,
)
from gateway.progress import SendJob


def outgoing_for(channel: Channel, job: SendJob, gw: Gateway) -> OutgoingMessage:
    """What the adapter sends for this attempt: the content fitted to the channel (gateway/adapt.py)."""
    content = job.content
    fitted = adapt(content, channel.content_support())
    reply_to, headers = _email_extras(channel, job, gw) if channel.address_kind == "email" else (None, {})
    return OutgoingMessage(
        attempt_id=job.attempt_id,
        message_id=job.message_id,
        address=job.address,
        text=fitted.text,
        subject=content.get("subject"),
        html=fitted.html,
        template=(content.get("templates") or {}).get(channel.name),
        status_callback_url=channel.status_callback_url(job.attempt_id),
        expires_at=job.expires_at,
        window_open=job.window_open,
        human_agent=job.human_agent,
        reply_to=reply_to,
        headers=headers,
        reply_token=job.reply_token,
        parts=fitted.parts,
        media=fitted.media,
        buttons=fitted.buttons,
    )


def _email_extras(channel: Channel, job: SendJob, gw: Gateway) -> tuple[str | None, dict[str, str]]:
    """Reply-To with a signed token of the message (when an inbound domain is set); for `marketing`
    messages, RFC 8058 one-click List-Unsubscribe headers pointing at the gateway."""
    domain = gw.settings.inbound_email_domain
    reply_to = reply_address(make_token(reply_key(gw), job.message_id), domain) if domain else None
    headers: dict[str, str] = {}
    if job.category == "marketing" and job.contact_id:
        token = make_unsubscribe_token(unsubscribe_key(gw), job.contact_id, channel.name)
        headers["List-Unsubscribe"] = f"<{gw.settings.public_url}/unsubscribe/{token}>"
        headers["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    return reply_to, headers
