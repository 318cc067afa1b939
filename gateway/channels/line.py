"""LINE through the Messaging API: push messages out, one webhook in (`/webhooks/line`).

Every push carries `X-Line-Retry-Key`, so a push retried after a 5xx or a timeout is executed once:
LINE answers a retry of an accepted push with 409, which counts as success here. The key must be a
UUID and must stay the same for every try of the message's LINE step; each try is a new attempt row in
the gateway, so the key is derived from the message id (one LINE step per message), not the attempt id.
A push to someone who blocked the account still answers 200: blocks are learned from `unfollow` events.

A reply to a customer's message goes with the reply API (`POST /v2/bot/message/reply`, free of charge) when
the attempt carries that message's `replyToken`: LINE issues one per message event, usable once, within
one minute of the webhook (REPLY_TOKEN_VALIDITY). A token LINE refuses as used or expired (400 "Invalid
reply token") falls back to a push in the same send. The reply API has no retry key: a reply whose answer
was lost is retried as a push (the token is used up), so it may arrive twice.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar

from gateway.adapt import TextPolicy
from gateway.channels.base import (
    AddressKind,
    IdentityEvent,
    Inbound,
    OutgoingMessage,
    SendResult,
    WebhookBatch,
    WebhookRequest,
)
from gateway.channels.http_base import HttpChannel, b64_hmac_sha256, header, json_body, missing_settings, same
from gateway.errors import ChannelError, ErrorKind
from gateway.settings import Settings

SIGNATURE_HEADER = "X-Line-Signature"
RETRY_KEY_HEADER = "X-Line-Retry-Key"
# LINE: "the reply token must be used within one minute of receiving the webhook"; counted from the event's
# timestamp, so a redelivered event's token is already known to be stale.
REPLY_TOKEN_VALIDITY = timedelta(minutes=1)
INVALID_REPLY_TOKEN = "Invalid reply token"
_RETRY_KEY_NAMESPACE = uuid.UUID("6f1c3a52-4f0e-4d8a-9a3e-2b7c8d1e5f60")


def retry_key(message_id: str) -> str:
    """The retry key of a message's LINE push: a UUID that every try of it shares."""
    return str(uuid.uuid5(_RETRY_KEY_NAMESPACE, message_id))


def classify_line_error(status: int, body: dict[str, Any] | None) -> ChannelError:
    """Map a Messaging API error (`{"message", "details": [{"message", "property"}]}`) onto a ChannelError."""
    body = body or {}
    details = [d for d in body.get("details") or [] if isinstance(d, dict)]
    detail = str(body.get("message") or f"HTTP {status}")
    if details:
        detail += ": " + "; ".join(f"{d.get('property', '')} {d.get('message', '')}".strip() for d in details)
    code = str(status)
    if status == 400 and any(d.get("property") == "to" for d in details):
        return ChannelError(ErrorKind.INVALID_ADDRESS, detail, code)
    if status == 429:  # the rate limit, or the monthly message quota
        return ChannelError(ErrorKind.RATE_LIMITED, detail, code)
    if status >= 500:
        return ChannelError(ErrorKind.TRANSIENT, detail, code)
    # 400 other bad requests, 401 wrong token, 403 not allowed for this channel's plan: permanent.
    return ChannelError(ErrorKind.REJECTED, detail, code)


def _at(millis: Any) -> datetime | None:
    return datetime.fromtimestamp(int(millis) / 1000, UTC) if millis is not None else None


def line_messages(message: OutgoingMessage) -> list[dict[str, Any]]:
    """Image messages (each its own preview), then the text's parts; quick replies on the last one."""
    found: list[dict[str, Any]] = [
        {"type": "image", "originalContentUrl": m.url, "previewImageUrl": m.url} for m in message.media
    ]
    found += [{"type": "text", "text": part} for part in message.parts or (message.text,)]
    if message.buttons:
        actions = [
            {"type": "postback", "label": b.title, "data": b.id, "displayText": b.title}
            for b in message.buttons
        ]
        found[-1]["quickReply"] = {"items": [{"type": "action", "action": action} for action in actions]}
    return found


class LineChannel(HttpChannel):
    """Push messages from a LINE Official Account to its friends."""

    name: ClassVar[str] = "line"
    address_kind: ClassVar[AddressKind] = "identity"
    delivery_receipts: ClassVar[bool] = False
    max_text_length: ClassVar[int] = 5000
    # One push carries up to 5 messages: the images and the text's parts together.
    text_policy: ClassVar[TextPolicy] = "split"
    messages_per_send: ClassVar[int | None] = 5
    # Image messages: JPEG or PNG over HTTPS (videos and audio need a preview or a duration).
    media_types: ClassVar[frozenset[str]] = frozenset({"image/jpeg", "image/png"})
    media_https_only: ClassVar[bool] = True
    # Quick replies: 13 at most, labels of 20 characters; a tap is a `postback` event with the button id.
    max_buttons: ClassVar[int] = 13
    max_button_title: ClassVar[int] = 20
    default_rate: ClassVar[float] = 100.0
    inbound_webhook: ClassVar[str | None] = "line"

    @classmethod
    def disabled_reason(cls, settings: Settings) -> str | None:
        return missing_settings(settings, "line_channel_token", "line_channel_secret")

    def default_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.line_channel_token}"}

    async def send(self, message: OutgoingMessage) -> SendResult:
        if not message.text:
            raise ChannelError(ErrorKind.REJECTED, "a LINE message needs a text")
        messages = line_messages(message)
        if message.reply_token:
            replied = await self._reply(message.reply_token, messages)
            if replied is not None:
                return replied
        key = retry_key(message.message_id)
        body = {"to": message.address, "messages": messages}
        answer = await self.call(
            "POST",
            f"{self.settings.line_api_url}/v2/bot/message/push",
            json=body,
            headers={RETRY_KEY_HEADER: key},
        )
        data = answer.data if isinstance(answer.data, dict) else None
        if answer.status == 200 or answer.status == 409:
            # 409: an earlier try with this key was accepted (its answer was lost): it went out once.
            sent = (data or {}).get("sentMessages") or [{}]
            message_id = sent[0].get("id") or answer.header("x-line-accepted-request-id") or key
            return SendResult(str(message_id), "accepted")
        raise classify_line_error(answer.status, data)

    async def _reply(self, token: str, messages: list[dict[str, Any]]) -> SendResult | None:
        """Send with the reply API; None when LINE refuses the token (used or expired): push instead."""
        answer = await self.call(
            "POST",
            f"{self.settings.line_api_url}/v2/bot/message/reply",
            json={"replyToken": token, "messages": messages},
        )
        data = answer.data if isinstance(answer.data, dict) else None
        if answer.status == 200:
            sent = (data or {}).get("sentMessages") or [{}]
            message_id = sent[0].get("id") or answer.header("x-line-request-id") or token
            return SendResult(str(message_id), "accepted")
        if answer.status == 400 and (data or {}).get("message") == INVALID_REPLY_TOKEN:
            return None
        raise classify_line_error(answer.status, data)

    def verify_webhook(self, request: WebhookRequest) -> bool:
        """`X-Line-Signature` is base64(HMAC-SHA256(channel secret, raw body))."""
        secret = self.settings.line_channel_secret
        given = header(request.headers, SIGNATURE_HEADER)
        return secret is not None and same(b64_hmac_sha256(secret, request.body), given)

    def parse_webhook(self, hook: str, request: WebhookRequest) -> WebhookBatch:
        """Messages from users, `follow` (added as a friend or unblocked) and `unfollow` (blocked)."""
        batch = WebhookBatch()
        for event in json_body(request.body).get("events") or []:
            source = event.get("source") or {}
            if source.get("type") != "user" or not source.get("userId"):
                continue  # group and room events do not address one person
            user, kind = str(source["userId"]), event.get("type")
            event_id = str(event.get("webhookEventId") or f"{user}:{event.get('timestamp')}")
            at = _at(event.get("timestamp"))
            if kind == "message":
                content = event.get("message") or {}
                batch.inbound.append(
                    Inbound(
                        channel=self.name,
                        sender=user,
                        text=content.get("text") if content.get("type") == "text" else None,
                        provider_message_id=str(content.get("id") or event_id),
                        received_at=at,
                        raw={k: v for k, v in event.items() if k != "replyToken"},
                        reply_token=event.get("replyToken") or None,
                        reply_token_expires_at=at + REPLY_TOKEN_VALIDITY if at else None,
                    )
                )
            elif kind == "postback":  # a quick reply tapped: its data is the button id
                data = (event.get("postback") or {}).get("data")
                batch.inbound.append(
                    Inbound(
                        channel=self.name,
                        sender=user,
                        text=None,
                        provider_message_id=f"postback:{event_id}",
                        received_at=at,
                        raw={k: v for k, v in event.items() if k != "replyToken"},
                        button_id=str(data) if data else None,
                        reply_token=event.get("replyToken") or None,
                        reply_token_expires_at=at + REPLY_TOKEN_VALIDITY if at else None,
                    )
                )
            elif kind == "follow":
                batch.identity.append(IdentityEvent(self.name, user, "follow", event_id, "followed", at))
            elif kind == "unfollow":
                batch.identity.append(IdentityEvent(self.name, user, "block", event_id, "unfollowed", at))
        return batch
