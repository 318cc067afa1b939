"""Viber through the REST bot API: `send_message` out; one webhook in (`/webhooks/viber`) for delivery
and seen receipts, failures, subscriptions and customers' messages.

Viber answers HTTP 200 to everything: the outcome is the `status` number in the body, classified by the
table `VIBER_STATUS_KINDS` (PROVIDERS.md). A bot may message only subscribers (or someone who just
opened a conversation); `unsubscribed` events and status 6 mark the contact blocked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any, ClassVar

from gateway.adapt import ButtonItem, TextPolicy
from gateway.channels.base import (
    AddressKind,
    IdentityEvent,
    Inbound,
    OutgoingMessage,
    ProviderStatus,
    SendResult,
    StatusUpdate,
    WebhookBatch,
    WebhookRequest,
)
from gateway.channels.http_base import HttpChannel, header, json_body, missing_settings, same
from gateway.errors import ChannelError, ErrorKind
from gateway.settings import Settings

SIGNATURE_HEADER = "X-Viber-Content-Signature"
AUTH_HEADER = "X-Viber-Auth-Token"

VIBER_STATUS_KINDS: dict[int, tuple[ErrorKind, str]] = {
    2: (ErrorKind.REJECTED, "invalidAuthToken (configuration)"),
    3: (ErrorKind.REJECTED, "badData"),
    4: (ErrorKind.REJECTED, "missingData"),
    5: (ErrorKind.UNREACHABLE, "receiverNotRegistered"),
    6: (ErrorKind.BLOCKED, "receiverNotSubscribed"),
    7: (ErrorKind.REJECTED, "publicAccountBlocked (configuration)"),
    8: (ErrorKind.REJECTED, "publicAccountNotFound (configuration)"),
    9: (ErrorKind.REJECTED, "publicAccountSuspended (configuration)"),
    10: (ErrorKind.REJECTED, "webhookNotSet (configuration)"),
    11: (ErrorKind.UNREACHABLE, "receiverNoSuitableDevice"),
    12: (ErrorKind.RATE_LIMITED, "tooManyRequests"),
}

_RECEIPTS: dict[str, ProviderStatus] = {"delivered": "delivered", "seen": "read"}


def classify_viber_status(status: int, status_message: str = "") -> ChannelError:
    """Map a `send_message` status other than 0 onto a ChannelError."""
    kind, meaning = VIBER_STATUS_KINDS.get(status, (ErrorKind.REJECTED, "unexpected status"))
    extra = f": {status_message}" if status_message and status_message not in meaning else ""
    detail = meaning + extra
    return ChannelError(kind, detail, code=str(status))


def viber_signature(auth_token: str, body: bytes) -> str:
    """`X-Viber-Content-Signature`: hex HMAC-SHA256 of the raw body, keyed with the auth token."""
    return hmac.new(auth_token.encode(), body, hashlib.sha256).hexdigest()


def keyboard(buttons: tuple[ButtonItem, ...]) -> dict[str, Any]:
    """A reply keyboard, one full-width button per row; a tap sends its ActionBody (the title) as text."""
    rows = [
        {"Columns": 6, "Rows": 1, "ActionType": "reply", "ActionBody": b.title, "Text": b.title}
        for b in buttons
    ]
    return {"Type": "keyboard", "DefaultHeight": False, "Buttons": rows}


def tracking_data(buttons: tuple[ButtonItem, ...]) -> str:
    """Viber passes `tracking_data` back with the person's reply: which title means which button id."""
    titles: dict[str, str] = {}
    for b in buttons:
        titles.setdefault(b.title, b.id)
    return json.dumps({"buttons": titles}, ensure_ascii=False)


def tapped_button(content: dict[str, Any]) -> str | None:
    """The button id a reply's text names through the `tracking_data` of the message it answers."""
    try:
        tracked = json.loads(str(content.get("tracking_data") or ""))
    except ValueError:
        return None
    titles = tracked.get("buttons") if isinstance(tracked, dict) else None
    found = titles.get(content.get("text")) if isinstance(titles, dict) else None
    return str(found) if found else None


def _at(millis: Any) -> datetime | None:
    return datetime.fromtimestamp(int(millis) / 1000, UTC) if millis is not None else None


class ViberChannel(HttpChannel):
    """Messages from a Viber bot to its subscribers, with delivered and seen receipts."""

    name: ClassVar[str] = "viber"
    address_kind: ClassVar[AddressKind] = "identity"
    delivery_receipts: ClassVar[bool] = True
    read_receipts: ClassVar[bool] = True
    max_text_length: ClassVar[int] = 7000
    text_policy: ClassVar[TextPolicy] = "split"
    # `picture` messages take JPEG and PNG by URL (files and videos need their size, which is not known).
    media_types: ClassVar[frozenset[str]] = frozenset({"image/jpeg", "image/png"})
    # Keyboards hold up to 24 buttons.
    max_buttons: ClassVar[int] = 24
    max_button_title: ClassVar[int] = 40
    default_rate: ClassVar[float] = 50.0
    status_webhook: ClassVar[str | None] = "viber"
    inbound_webhook: ClassVar[str | None] = "viber"

    @classmethod
    def disabled_reason(cls, settings: Settings) -> str | None:
        return missing_settings(settings, "viber_auth_token", "viber_sender_name")

    def default_headers(self) -> dict[str, str]:
        return {AUTH_HEADER: self.settings.viber_auth_token or ""}

    def status_callback_url(self, attempt_id: str) -> str | None:
        return None  # receipts go to the bot's one webhook, set with set_webhook

    async def send(self, message: OutgoingMessage) -> SendResult:
        """Pictures first, then the text's parts, the last with the keyboard; the attempt tracks the last."""
        if not message.text:
            raise ChannelError(ErrorKind.REJECTED, "a Viber message needs a text")
        for media in message.media:
            await self._send({"receiver": message.address, "type": "picture", "text": "", "media": media.url})
        parts = message.parts or (message.text,)
        result: SendResult | None = None
        for number, part in enumerate(parts, 1):
            body: dict[str, Any] = {"receiver": message.address, "type": "text", "text": part}
            if number == len(parts) and message.buttons:
                body |= {
                    "keyboard": keyboard(message.buttons),
                    "tracking_data": tracking_data(message.buttons),
                }
            result = await self._send(body)
        assert result is not None
        return result

    async def _send(self, fields: dict[str, Any]) -> SendResult:
        """One send_message call; the message token, or a classified ChannelError."""
        body = {"min_api_version": 1, "sender": {"name": self.settings.viber_sender_name}} | fields
        answer = await self.call("POST", f"{self.settings.viber_api_url}/send_message", json=body)
        data = answer.data if isinstance(answer.data, dict) else None
        if answer.status >= 500 or data is None or "status" not in data:
            raise ChannelError(ErrorKind.TRANSIENT, f"unexpected answer from Viber (HTTP {answer.status})")
        status = int(data["status"])
        if status == 0:
            return SendResult(str(data["message_token"]), "accepted")
        raise classify_viber_status(status, str(data.get("status_message") or ""))

    def verify_webhook(self, request: WebhookRequest) -> bool:
        token = self.settings.viber_auth_token
        given = header(request.headers, SIGNATURE_HEADER)
        return token is not None and same(viber_signature(token, request.body), given)

    def parse_webhook(self, hook: str, request: WebhookRequest) -> WebhookBatch:
        """One callback: a receipt or failure, a (un)subscription, a conversation start, or a message."""
        event = json_body(request.body)
        batch = WebhookBatch()
        kind, at = event.get("event"), _at(event.get("timestamp"))
        token = str(event.get("message_token", ""))
        if kind in _RECEIPTS:
            batch.statuses.append(StatusUpdate(token, _RECEIPTS[kind], at=at))
        elif kind == "failed":
            error = ChannelError(ErrorKind.UNREACHABLE, str(event.get("desc") or "Viber could not deliver"))
            batch.statuses.append(StatusUpdate(token, "failed", error=error, at=at))
        elif kind in ("subscribed", "conversation_started"):
            user = str((event.get("user") or {})["id"])
            reason = "subscribed" if kind == "subscribed" else "opened a conversation"
            batch.identity.append(IdentityEvent(self.name, user, "follow", f"{kind}:{token}", reason, at))
        elif kind == "unsubscribed":
            user = str(event["user_id"])
            batch.identity.append(
                IdentityEvent(self.name, user, "block", f"{kind}:{token}", "unsubscribed", at)
            )
        elif kind == "message":
            content = event.get("message") or {}
            batch.inbound.append(
                Inbound(
                    channel=self.name,
                    sender=str((event.get("sender") or {})["id"]),
                    text=content.get("text"),
                    provider_message_id=token,
                    received_at=at,
                    raw=event,
                    button_id=tapped_button(content),
                )
            )
        return batch  # `webhook` (the set_webhook check) and unknown events carry nothing
