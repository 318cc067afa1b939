"""WhatsApp's Cloud API (Meta Graph): sending, error codes, and the `/webhooks/whatsapp` payloads.

Errors are classified by `error.code` with `WHATSAPP_ERROR_KINDS`, whether they come synchronously or in
a `failed` status webhook.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.adapt import ButtonItem, MediaItem
from gateway.channels.base import (
    Inbound,
    OutgoingMessage,
    SendResult,
    StatusUpdate,
    WebhookBatch,
    WebhookRequest,
)
from gateway.channels.meta import (
    ErrorTable,
    GraphCallError,
    GraphClient,
    Meaning,
    as_int,
    classify_graph_error,
    from_epoch,
    items,
    payload_of,
)
from gateway.errors import ChannelError, ErrorKind
from gateway.settings import Settings

K = ErrorKind
# Graph error code -> meaning, exactly as PROVIDERS.md's WhatsApp Cloud API list.
WHATSAPP_ERROR_KINDS: ErrorTable = {
    (131026, None): Meaning(K.UNREACHABLE, "the number is not on WhatsApp or cannot receive the message"),
    (131047, None): Meaning(K.WINDOW_CLOSED, "more than 24 hours since the person last wrote"),
    (131051, None): Meaning(K.REJECTED, "unsupported message type"),
    (130429, None): Meaning(K.RATE_LIMITED, "Cloud API throughput reached"),
    (131056, None): Meaning(K.RATE_LIMITED, "too many messages to this number in a short time"),
    # "Spam rate limit": a limit on our number, not a choice of this person, so retried later.
    (131048, None): Meaning(K.RATE_LIMITED, "spam rate limit of the business number"),
    (131049, None): Meaning(K.BLOCKED, "Meta did not deliver it, to keep the person's engagement healthy"),
    (131050, None): Meaning(K.BLOCKED, "the person stopped marketing messages from this business"),
    (131030, None): Meaning(
        K.REJECTED, "the recipient is not in the test number's allowed list", config=True
    ),
    (131000, None): Meaning(K.TRANSIENT, "something went wrong at Meta"),
    (131016, None): Meaning(K.TRANSIENT, "the service is temporarily unavailable"),
    (2, None): Meaning(K.TRANSIENT, "temporary Graph API error"),
}

_STATUSES = {"sent": "sent", "delivered": "delivered", "read": "read"}


def classify_whatsapp_error(code: int | None, detail: str, http_status: int | None = None) -> ChannelError:
    """The ChannelError of a Cloud API error code (HTTP status only matters for unknown codes)."""
    return classify_graph_error(WHATSAPP_ERROR_KINDS, code, None, detail, http_status, "whatsapp")


def digits(address: str) -> str:
    """The Cloud API's `to`: the E.164 number without `+` or punctuation."""
    return re.sub(r"\D", "", address)


def cloud_template(template: dict[str, Any]) -> dict[str, Any]:
    """`{"name", "language", "params"}` (or ready-made `components`) as the Cloud API's template object."""
    name = template.get("name")
    if not isinstance(name, str) or not name:
        raise ChannelError(K.REJECTED, "a WhatsApp template needs a name (Cloud API)")
    language = template.get("language") or "en_US"
    body: dict[str, Any] = {
        "name": name,
        "language": language if isinstance(language, dict) else {"code": str(language)},
    }
    components = template.get("components")
    if components is None and template.get("params"):
        parameters = [{"type": "text", "text": str(value)} for value in template["params"]]
        components = [{"type": "body", "parameters": parameters}]
    if components:
        body["components"] = components
    return body


def media_object(media: MediaItem) -> dict[str, Any]:
    """A media message's content: `image`, `video`, `audio`, or a `document` with its file name."""
    kind = media.type.partition("/")[0]
    if kind in ("image", "video", "audio"):
        return {"type": kind, kind: {"link": media.url}}
    return {"type": "document", "document": {"link": media.url, "filename": media.filename}}


def reply_buttons(text: str, buttons: tuple[ButtonItem, ...]) -> dict[str, Any]:
    """An interactive message with reply buttons (at most 3, titles of at most 20 characters)."""
    return {
        "type": "interactive",
        "interactive": {
            "type": "button",
            "body": {"text": text},
            "action": {
                "buttons": [{"type": "reply", "reply": {"id": b.id, "title": b.title}} for b in buttons]
            },
        },
    }


class CloudTransport:
    """POST {graph}/{phone_number_id}/messages with the Cloud API token."""

    def __init__(self, settings: Settings) -> None:
        self.path = f"{settings.whatsapp_phone_number_id}/messages"
        self.client = GraphClient(
            settings.meta_graph_url, settings.whatsapp_token or "", settings.provider_timeout
        )

    async def open(self) -> None:
        await self.client.open()

    async def close(self) -> None:
        await self.client.close()

    async def send_text(self, message: OutgoingMessage) -> SendResult:
        """The media first (one message each), then the text's parts; the last carries the buttons.
        The attempt tracks the last message's id."""
        for media in message.media:
            await self._post(message, media_object(media))
        parts = message.parts or (message.text or "",)
        result: SendResult | None = None
        for number, part in enumerate(parts, 1):
            if number == len(parts) and message.buttons:
                content = reply_buttons(part, message.buttons)
            else:
                content = {"type": "text", "text": {"body": part, "preview_url": False}}
            result = await self._post(message, content)
        assert result is not None
        return result

    async def send_template(self, message: OutgoingMessage) -> SendResult:
        return await self._post(
            message, {"type": "template", "template": cloud_template(message.template or {})}
        )

    async def _post(self, message: OutgoingMessage, content: dict[str, Any]) -> SendResult:
        payload = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": digits(message.address),
        }
        try:
            answer = await self.client.post(self.path, payload | content)
        except GraphCallError as exc:
            raise classify_whatsapp_error(exc.code, exc.message, exc.http_status) from exc
        sent = items(answer.get("messages"))
        if not sent or not sent[0].get("id"):
            raise ChannelError(K.TRANSIENT, "the Cloud API answered without a message id")
        return SendResult(provider_message_id=str(sent[0]["id"]), status="accepted")


def parse_webhook(request: WebhookRequest, phone_number_id: str | None) -> WebhookBatch:
    """Statuses and customer messages of a Cloud API webhook; other numbers' changes are ignored."""
    batch = WebhookBatch()
    payload = payload_of(request)
    for entry in items(payload.get("entry")):
        for change in items(entry.get("changes")):
            value = change.get("value")
            if not isinstance(value, dict):
                continue
            number = (value.get("metadata") or {}).get("phone_number_id")
            if phone_number_id and number and str(number) != phone_number_id:
                continue
            batch.statuses += [u for u in map(_status, items(value.get("statuses"))) if u is not None]
            names = {str(c.get("wa_id")): c.get("profile") for c in items(value.get("contacts"))}
            batch.inbound += [i for i in (_inbound(m, names) for m in items(value.get("messages"))) if i]
    return batch


def _status(status: dict[str, Any]) -> StatusUpdate | None:
    wamid, state = status.get("id"), status.get("status")
    if not wamid or not isinstance(state, str):
        return None
    at = from_epoch(status.get("timestamp"))
    if state in _STATUSES:
        return StatusUpdate(str(wamid), _STATUSES[state], at=at)  # type: ignore[arg-type]
    if state != "failed":
        return None  # e.g. "deleted" or "warning": nothing the gateway tracks
    errors = items(status.get("errors"))
    if not errors:
        return StatusUpdate(str(wamid), "failed", ChannelError(K.TRANSIENT, "failed without a reason"), at=at)
    first = errors[0]
    detail = str(first.get("message") or first.get("title") or "delivery failed")
    details = (first.get("error_data") or {}).get("details")
    if details and str(details) not in detail:
        detail = f"{detail} ({details})"
    error = classify_whatsapp_error(as_int(first.get("code")), detail)
    return StatusUpdate(str(wamid), "failed", error, at=at)


def _inbound(message: dict[str, Any], names: dict[str, Any]) -> Inbound | None:
    """A customer's message; `system` notices are not messages from the person."""
    sender, wamid, kind = message.get("from"), message.get("id"), message.get("type")
    if not sender or not wamid or kind == "system":
        return None
    text: str | None = None
    button_id: str | None = None
    body = message.get(str(kind))
    body = body if isinstance(body, dict) else {}
    if kind == "text":
        text = body.get("body")
    elif kind == "button":  # a template's quick-reply button
        text, button_id = body.get("text"), body.get("payload")
    elif kind == "interactive":
        reply = body.get("button_reply") or body.get("list_reply") or {}
        text, button_id = reply.get("title"), reply.get("id")
    else:  # media and the rest: a caption at most; the payload stays in `raw`
        text = body.get("caption")
    profile = names.get(str(sender))
    raw = message | ({"profile": profile} if profile else {})
    return Inbound(
        channel="whatsapp",
        sender="+" + digits(str(sender)),
        text=str(text) if text is not None else None,
        provider_message_id=str(wamid),
        received_at=from_epoch(message.get("timestamp")),
        raw=raw,
        button_id=str(button_id) if button_id else None,
    )
