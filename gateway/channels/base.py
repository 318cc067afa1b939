"""The one base class every channel adapter implements (social channels, SMS and email).

An adapter declares what its channel can do as class attributes and implements `send`. Errors leave
`send` only as `ChannelError` with a kind (see gateway.errors); the dispatcher decides what happens next.
Provider webhooks reach the adapter as a `WebhookRequest`; the adapter verifies the signature and turns
the payload into `StatusUpdate`s. The core never branches on a channel's name.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, Literal

from gateway.adapt import ButtonItem, ContentSupport, MediaItem, TextPolicy
from gateway.errors import ChannelError
from gateway.settings import Settings

AddressKind = Literal["phone", "email", "identity"]
ProviderStatus = Literal["accepted", "sent", "delivered", "read", "failed"]


@dataclass(frozen=True)
class OutgoingMessage:
    """What an adapter needs to send one attempt."""

    attempt_id: str
    message_id: str
    address: str
    text: str | None
    subject: str | None = None
    html: str | None = None
    template: dict[str, Any] | None = None
    # Absolute URL the provider should post this attempt's status updates to, if the channel has any.
    status_callback_url: str | None = None
    expires_at: datetime | None = None
    # Windowed channels: whether free-form text may go out now (else the template, if any).
    window_open: bool = False
    # The request marked this as written by a person (Messenger sends it with the HUMAN_AGENT tag).
    human_agent: bool = False
    # Email only: where replies go (`reply+<token>@<GATEWAY_INBOUND_EMAIL_DOMAIN>`), and extra headers
    # such as List-Unsubscribe. Other adapters ignore both.
    reply_to: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    # The provider's one-use token for answering the message this replies to (LINE replyToken), taken
    # for this attempt while it was still valid; the adapter may send for free with it.
    reply_token: str | None = None
    # Content already fitted to the channel (gateway/adapt.py): `text` is the whole text, `parts` the
    # messages it goes out as (several only under the `split` policy), `media` and `buttons` only what the
    # channel shows natively (the rest is in the text as links and a numbered list).
    parts: tuple[str, ...] = ()
    media: tuple[MediaItem, ...] = ()
    buttons: tuple[ButtonItem, ...] = ()


@dataclass(frozen=True)
class SendResult:
    """A provider accepted the attempt."""

    provider_message_id: str
    status: ProviderStatus = "accepted"
    # SMS: the segments the text costs (GSM-7 160/153, UCS-2 70/67), stored on the attempt.
    segments: int | None = None


@dataclass(frozen=True)
class StatusUpdate:
    """A provider reported progress (or failure) of an earlier attempt."""

    provider_message_id: str
    status: ProviderStatus
    error: ChannelError | None = None
    attempt_id: str | None = None
    at: datetime | None = None
    # A watermark receipt (Messenger) names no message: it covers every message sent to `address` on the
    # channel at or before `up_to`, and `provider_message_id` is empty.
    address: str | None = None
    up_to: datetime | None = None


@dataclass(frozen=True)
class Inbound:
    """A customer's message as an adapter hands it to the inbound pipeline."""

    channel: str
    sender: str  # the address on that channel: E.164 phone, email, user id
    text: str | None
    provider_message_id: str
    received_at: datetime | None = None
    raw: dict[str, Any] = field(default_factory=dict)
    button_id: str | None = None
    # The gateway message this answers, when the channel says so (an email's reply token).
    in_reply_to: str | None = None
    # A one-use token the provider gives for answering this message (LINE replyToken), and until when
    # it may be used.
    reply_token: str | None = None
    reply_token_expires_at: datetime | None = None


@dataclass(frozen=True)
class IdentityEvent:
    """A person followed (subscribed to, started) or blocked (unfollowed, kicked) the business."""

    channel: str
    sender: str
    kind: Literal["follow", "block"]
    event_id: str
    reason: str
    at: datetime | None = None


@dataclass
class WebhookBatch:
    """Everything one provider webhook call carried."""

    statuses: list[StatusUpdate] = field(default_factory=list)
    inbound: list[Inbound] = field(default_factory=list)
    identity: list[IdentityEvent] = field(default_factory=list)


@dataclass(frozen=True)
class WebhookAnswer:
    """What the gateway answers a provider's webhook call with."""

    status: int
    body: str = ""
    content_type: str = "text/plain"


@dataclass(frozen=True)
class WebhookRequest:
    """A provider's HTTP call to the gateway, as the adapter needs to see it."""

    url: str  # public URL the provider called: GATEWAY_PUBLIC_URL + path + query string
    method: str
    headers: dict[str, str]
    body: bytes
    form: dict[str, str] = field(default_factory=dict)
    query: dict[str, str] = field(default_factory=dict)


class Channel(ABC):
    """A way to reach a person. Subclasses set the class attributes and implement `send`."""

    name: ClassVar[str]
    address_kind: ClassVar[AddressKind]
    # Customer-care window in seconds after the person's last message; None = no window.
    window_seconds: ClassVar[float | None] = None
    # Messages the business may send per window (WeChat: 5); None = no limit.
    window_message_limit: ClassVar[int | None] = None
    # A longer window for replies written by a person (Messenger's HUMAN_AGENT tag: 7 days).
    human_agent_window_seconds: ClassVar[float | None] = None
    delivery_receipts: ClassVar[bool] = False
    read_receipts: ClassVar[bool] = False
    supports_templates: ClassVar[bool] = False
    max_text_length: ClassVar[int] = 4096
    # What a text longer than max_text_length becomes: "split" into at most `max_parts` messages, or
    # "truncate"d with "…" (links and numbered lists are kept). gateway/adapt.py applies both.
    text_policy: ClassVar[TextPolicy] = "truncate"
    max_parts: ClassVar[int] = 5
    # Rich content shown natively; what is not becomes links and a numbered list in the text.
    # MIME types: exact ("application/pdf"), prefixes ("image/"), or "*/*" for any.
    media_types: ClassVar[frozenset[str]] = frozenset()
    max_media: ClassVar[int] = 10
    media_https_only: ClassVar[bool] = False
    # Reply buttons: how many (0 = none; more than this and all go as a numbered list), title length,
    # and the longest text a message with buttons may carry (None: max_text_length).
    max_buttons: ClassVar[int] = 0
    max_button_title: ClassVar[int] = 20
    button_text_length: ClassVar[int | None] = None
    # Messages one provider call may carry, media included (None: no such limit).
    messages_per_send: ClassVar[int | None] = None
    # Messages per second this channel is paced at when GATEWAY_CHANNEL_RATES does not name it.
    default_rate: ClassVar[float] = 0.0
    # Paths under /webhooks/ where the provider posts status updates and inbound messages, or None.
    status_webhook: ClassVar[str | None] = None
    inbound_webhook: ClassVar[str | None] = None
    # What a verified webhook call is answered with (Twilio wants TwiML, WeChat "success", ...).
    webhook_ok: ClassVar[WebhookAnswer] = WebhookAnswer(200, "")
    # Words that, sent alone, opt the person out of (or back into) this channel.
    opt_out_keywords: ClassVar[frozenset[str]] = frozenset()
    opt_in_keywords: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @classmethod
    @abstractmethod
    def disabled_reason(cls, settings: Settings) -> str | None:
        """Why the channel cannot be used with these settings, or None when it is enabled."""

    async def open(self) -> None:
        """Create clients and connections; called once in the dispatcher's event loop."""
        return None

    async def close(self) -> None:
        """Release clients and connections."""
        return None

    @abstractmethod
    async def send(self, message: OutgoingMessage) -> SendResult:
        """Send one attempt; raise ChannelError on failure."""

    def content_support(self) -> ContentSupport:
        """What this channel shows natively: its class attributes (adapters whose settings change it
        override this, e.g. WhatsApp through Twilio has no free-form buttons)."""
        return ContentSupport(
            media_types=self.media_types,
            max_media=self.max_media,
            media_https_only=self.media_https_only,
            max_buttons=self.max_buttons,
            max_button_title=self.max_button_title,
            button_text_length=self.button_text_length,
            max_text_length=self.max_text_length,
            text_policy=self.text_policy,
            max_parts=self.max_parts,
            messages_per_send=self.messages_per_send,
        )

    def status_callback_url(self, attempt_id: str) -> str | None:
        """Where the provider should report this attempt's status, if it reports any."""
        if self.status_webhook is None:
            return None
        return f"{self.settings.public_url}/webhooks/{self.status_webhook}?attempt={attempt_id}"

    def verify_webhook(self, request: WebhookRequest) -> bool:
        """Whether the request really comes from the provider. Channels without webhooks refuse all."""
        return False

    def parse_status_webhook(self, request: WebhookRequest) -> list[StatusUpdate]:
        """Turn a verified status webhook into updates."""
        return []

    def parse_inbound_webhook(self, request: WebhookRequest) -> list[Inbound]:
        """Turn a verified inbound webhook into customer messages."""
        return []

    def owns_webhook(self, hook: str) -> bool:
        """Whether `/webhooks/<hook>` is this adapter's."""
        return hook in (self.status_webhook, self.inbound_webhook)

    def parse_webhook(self, hook: str, request: WebhookRequest) -> WebhookBatch:
        """Everything a verified webhook call carries; adapters with one combined hook override this."""
        batch = WebhookBatch()
        if hook == self.status_webhook:
            batch.statuses += self.parse_status_webhook(request)
        if hook == self.inbound_webhook:
            batch.inbound += self.parse_inbound_webhook(request)
        return batch

    def webhook_answer(self, hook: str, request: WebhookRequest) -> WebhookAnswer:
        """What a verified, applied webhook call is answered with; `webhook_ok` unless the channel
        answers some calls with more (Telegram acknowledges a button tap in its answer)."""
        return self.webhook_ok

    def handshake(self, hook: str, request: WebhookRequest) -> WebhookAnswer | None:
        """Answer a provider's GET verification (Meta hub.challenge, X CRC, WeChat echostr), or None."""
        return None

    @classmethod
    def default_until(cls) -> str:
        """The receipt a step waits for when nothing else is said."""
        return "delivered" if cls.delivery_receipts else "accepted"

    @classmethod
    def can_report(cls, until: str) -> bool:
        """Whether this channel can ever reach `until`."""
        if until in ("accepted", "sent"):
            return True
        if until == "delivered":
            return cls.delivery_receipts
        return cls.read_receipts
