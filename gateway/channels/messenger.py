"""Facebook Messenger through Meta's Send API; Instagram (instagram.py) is the same platform.

A Page may message a person only within 24 hours of the person's last message (`messaging_type`
`RESPONSE`); a reply the request marks as written by a person (`human_agent`) goes with the `HUMAN_AGENT`
tag, which stretches that to 7 days. Outside the window nothing is sent: the attempt fails as
`window_closed` and the dispatcher falls back. Errors are classified by Graph code and subcode
(`PAGE_ERROR_KINDS`). Webhooks at `/webhooks/messenger` bring customers' messages and postbacks, and
delivery receipts by message id.
"""

from __future__ import annotations

from typing import Any, ClassVar

from gateway.adapt import ANY_MEDIA, MediaItem, TextPolicy
from gateway.channels.base import (
    AddressKind,
    Channel,
    Inbound,
    OutgoingMessage,
    SendResult,
    StatusUpdate,
    WebhookAnswer,
    WebhookBatch,
    WebhookRequest,
)
from gateway.channels.meta import (
    ErrorTable,
    GraphCallError,
    GraphClient,
    Meaning,
    classify_graph_error,
    from_epoch,
    handshake,
    items,
    payload_of,
    signature_valid,
)
from gateway.errors import ChannelError, ErrorKind
from gateway.settings import Settings

K = ErrorKind
# (code, subcode) -> meaning, exactly as PROVIDERS.md's Messenger and Instagram list.
PAGE_ERROR_KINDS: ErrorTable = {
    (551, 1545041): Meaning(K.BLOCKED, "this person is not available right now"),
    (551, None): Meaning(K.BLOCKED, "this person is not available right now"),
    (10, 2018278): Meaning(K.WINDOW_CLOSED, "sent outside the allowed window"),
    (100, 2018001): Meaning(K.INVALID_ADDRESS, "no matching user found"),
    (613, None): Meaning(K.RATE_LIMITED, "calls to this API exceeded the rate limit"),
    (4, None): Meaning(K.RATE_LIMITED, "application request limit reached"),
    (1200, None): Meaning(K.TRANSIENT, "temporary send message failure"),
    (2, None): Meaning(K.TRANSIENT, "temporary Graph API error"),
    (190, None): Meaning(K.REJECTED, "the access token is invalid or expired", config=True),
    (200, None): Meaning(K.REJECTED, "the app lacks a permission", config=True),
    (230, None): Meaning(K.REJECTED, "the app needs the pages_messaging permission", config=True),
}


def classify_page_error(
    code: int | None,
    subcode: int | None,
    detail: str,
    http_status: int | None = None,
    channel: str = "messenger",
) -> ChannelError:
    """The ChannelError of a Send API error (HTTP status only matters for unknown codes)."""
    return classify_graph_error(PAGE_ERROR_KINDS, code, subcode, detail, http_status, channel)


def attachment(media: MediaItem) -> dict[str, Any]:
    """A Send API attachment by URL: image, video, audio, or any other file."""
    kind = media.type.partition("/")[0]
    return {
        "type": kind if kind in ("image", "video", "audio") else "file",
        "payload": {"url": media.url, "is_reusable": True},
    }


class MessengerChannel(Channel):
    """Messages to a Page-scoped id (PSID) from a Facebook Page."""

    name: ClassVar[str] = "messenger"
    address_kind: ClassVar[AddressKind] = "identity"
    window_seconds: ClassVar[float | None] = 24 * 3600.0
    human_agent_window_seconds: ClassVar[float | None] = 7 * 86400.0
    delivery_receipts: ClassVar[bool] = True
    read_receipts: ClassVar[bool] = True
    max_text_length: ClassVar[int] = 2000
    text_policy: ClassVar[TextPolicy] = "split"
    # Attachments by URL: image, video, audio, and any other file as `file`.
    media_types: ClassVar[frozenset[str]] = frozenset({ANY_MEDIA})
    # Quick replies: 13 at most, titles of 20 characters.
    max_buttons: ClassVar[int] = 13
    max_button_title: ClassVar[int] = 20
    # The Send API allows 300 text messages per second per Page.
    default_rate: ClassVar[float] = 300.0
    status_webhook: ClassVar[str | None] = "messenger"
    inbound_webhook: ClassVar[str | None] = "messenger"
    webhook_ok: ClassVar[WebhookAnswer] = WebhookAnswer(200, "EVENT_RECEIVED")
    # The webhook payload's `object`, and the settings holding the token and the sending account's id.
    webhook_object: ClassVar[str] = "page"
    token_setting: ClassVar[str] = "messenger_page_token"
    account_setting: ClassVar[str] = "messenger_page_id"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.account_id: str = getattr(settings, self.account_setting) or ""
        token: str = getattr(settings, self.token_setting) or ""
        self.client = GraphClient(settings.meta_graph_url, token, settings.provider_timeout)

    @classmethod
    def disabled_reason(cls, settings: Settings) -> str | None:
        """Name the missing token, account id or app secret, or None when the channel can be used."""
        needed = (cls.token_setting, cls.account_setting, "meta_app_secret")
        missing = [Settings.env_name(name) for name in needed if not getattr(settings, name)]
        if not missing:
            return None
        return ", ".join(missing) + (" is not set" if len(missing) == 1 else " are not set")

    async def open(self) -> None:
        await self.client.open()

    async def close(self) -> None:
        await self.client.close()

    async def send(self, message: OutgoingMessage) -> SendResult:
        """Inside the window (HUMAN_AGENT tag for a person's reply): the attachments, then the text's parts,
        the last with the quick replies; the attempt tracks the last message. ChannelError otherwise."""
        if not message.text:
            raise ChannelError(K.REJECTED, f"a {self.name} message needs a text")
        if not message.window_open:
            window = "7 days (human agent)" if message.human_agent else "24 hours"
            detail = f"the person has not written in the last {window}"
            raise ChannelError(K.WINDOW_CLOSED, detail)
        for media in message.media:
            await self._post(message, {"attachment": attachment(media)})
        parts = message.parts or (message.text,)
        result: SendResult | None = None
        for number, part in enumerate(parts, 1):
            content: dict[str, Any] = {"text": part}
            if number == len(parts) and message.buttons:
                content["quick_replies"] = [
                    {"content_type": "text", "title": b.title, "payload": b.id} for b in message.buttons
                ]
            result = await self._post(message, content)
        assert result is not None
        return result

    async def _post(self, message: OutgoingMessage, content: dict[str, Any]) -> SendResult:
        """One Send API call with `content` as its `message`."""
        payload: dict[str, Any] = {"recipient": {"id": message.address}, "message": content}
        if message.human_agent:
            payload |= {"messaging_type": "MESSAGE_TAG", "tag": "HUMAN_AGENT"}
        else:
            payload["messaging_type"] = "RESPONSE"
        try:
            answer = await self.client.post(f"{self.account_id}/messages", payload)
        except GraphCallError as exc:
            raise classify_page_error(exc.code, exc.subcode, exc.message, exc.http_status, self.name) from exc
        if not answer.get("message_id"):
            raise ChannelError(K.TRANSIENT, "the Send API answered without a message id")
        return SendResult(provider_message_id=str(answer["message_id"]), status="accepted")

    def status_callback_url(self, attempt_id: str) -> str | None:
        """None: Meta posts receipts to the app's webhook, not to a URL given per message."""
        return None

    def verify_webhook(self, request: WebhookRequest) -> bool:
        return signature_valid(self.settings.meta_app_secret, request)

    def handshake(self, hook: str, request: WebhookRequest) -> WebhookAnswer | None:
        return handshake(self.settings.meta_verify_token, request)

    def parse_webhook(self, hook: str, request: WebhookRequest) -> WebhookBatch:
        """Customers' messages and postbacks, and receipts that name message ids."""
        batch = WebhookBatch()
        payload = payload_of(request)
        if payload.get("object") != self.webhook_object:
            return batch
        for entry in items(payload.get("entry")):
            if self.account_id and str(entry.get("id") or self.account_id) != self.account_id:
                continue  # another Page or account subscribed to the same app
            for event in items(entry.get("messaging")):
                self._parse_event(event, batch)
        return batch

    def _parse_event(self, event: dict[str, Any], batch: WebhookBatch) -> None:
        sender = (event.get("sender") or {}).get("id")
        if not sender:
            return
        at = from_epoch(event.get("timestamp"), millis=True)
        message, postback = event.get("message"), event.get("postback")
        if isinstance(message, dict) and message.get("mid") and not message.get("is_echo"):
            quick_reply = message.get("quick_reply") or {}
            batch.inbound.append(
                self._inbound(
                    sender, message.get("text"), message["mid"], at, event, quick_reply.get("payload")
                )
            )
        if isinstance(postback, dict):
            mid = postback.get("mid") or f"postback:{sender}:{event.get('timestamp')}"
            batch.inbound.append(
                self._inbound(sender, postback.get("title"), mid, at, event, postback.get("payload"))
            )
        delivery = event.get("delivery")
        if isinstance(delivery, dict):
            mids = [str(m) for m in delivery["mids"] if m] if isinstance(delivery.get("mids"), list) else []
            batch.statuses += [StatusUpdate(mid, "delivered", at=at) for mid in mids]
            up_to = from_epoch(delivery.get("watermark"), millis=True)
            if not mids and up_to is not None:  # older clients give only the watermark
                batch.statuses.append(StatusUpdate("", "delivered", at=at, address=str(sender), up_to=up_to))
        read = event.get("read")
        if isinstance(read, dict) and read.get("mid"):  # Instagram's messaging_seen names the message
            batch.statuses.append(StatusUpdate(str(read["mid"]), "read", at=at))
        elif isinstance(read, dict) and (up_to := from_epoch(read.get("watermark"), millis=True)):
            batch.statuses.append(StatusUpdate("", "read", at=at, address=str(sender), up_to=up_to))

    def _inbound(
        self, sender: Any, text: Any, mid: Any, at: Any, event: dict[str, Any], button: Any
    ) -> Inbound:
        return Inbound(
            channel=self.name,
            sender=str(sender),
            text=str(text) if text is not None else None,
            provider_message_id=str(mid),
            received_at=at,
            raw=event,
            button_id=str(button) if button else None,
        )
