"""Turn a message's content into what one channel can carry."""

from __future__ import annotations

from typing import Any

from gateway.channels.base import Channel, OutgoingMessage
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


def outgoing_for(channel: Channel, job: SendJob) -> OutgoingMessage:
    """What the adapter sends for this attempt."""
    content = job.content
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
    )
