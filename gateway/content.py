"""Turn a message's content into what one channel can carry."""

from __future__ import annotations

from typing import Any

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


def plain_text(content: dict[str, Any]) -> str | None:
    """The text, with media as links and buttons as a numbered list (for channels without either)."""
    text = content.get("text")
    parts = [text] if text else []
    for media in content.get("media") or []:
        parts.append(f"{media.get('filename') or 'Attachment'}: {media['url']}")
    buttons = content.get("buttons") or []
    if buttons:
        parts.append("\n".join(f"{i}. {b['title']}" for i, b in enumerate(buttons, 1)))
        parts.append("Reply with a number.")
    return "\n\n".join(parts) if parts else None


def outgoing_for(channel: Channel, job: SendJob, gw: Gateway) -> OutgoingMessage:
    """What the adapter sends for this attempt."""
    content = job.content
    reply_to, headers = _email_extras(channel, job, gw) if channel.address_kind == "email" else (None, {})
    return OutgoingMessage(
        attempt_id=job.attempt_id,
        message_id=job.message_id,
        address=job.address,
        text=plain_text(content),
        subject=content.get("subject"),
        html=content.get("html"),
        template=(content.get("templates") or {}).get(channel.name),
        status_callback_url=channel.status_callback_url(job.attempt_id),
        expires_at=job.expires_at,
        window_open=job.window_open,
        human_agent=job.human_agent,
        reply_to=reply_to,
        headers=headers,
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
