"""WhatsApp, through Meta's Cloud API or through Twilio: one channel, `whatsapp`, two transports.

Configuration picks the transport: the Cloud API when GATEWAY_WHATSAPP_TOKEN is set, else Twilio when
GATEWAY_TWILIO_WHATSAPP_FROM is set. Free-form text goes out only while the person's 24-hour window is
open; otherwise the message's `content.templates.whatsapp` is sent (Cloud API `{"name", "language",
"params"}`, Twilio `{"content_sid", "variables"}`), and without one the send fails as `window_closed`
(the dispatcher falls back). When the provider says the window is closed although the gateway thought it
open, the template goes out instead, if there is one.

Cloud API statuses and inbound messages arrive at `/webhooks/whatsapp` (signed by Meta). Twilio posts
its status callbacks to `/webhooks/twilio/status` and inbound messages to `/webhooks/twilio/inbound`,
which the SMS adapter parses (it turns `whatsapp:+…` senders into `whatsapp` messages); when SMS is not
enabled this adapter serves those two hooks itself, with the same parser.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any, ClassVar
from urllib.parse import urlsplit

from twilio.base import values
from twilio.base.exceptions import TwilioException
from twilio.rest import Client

from fallbacks.sms import SmsChannel, _BaseUrlHttpClient, _error_from_exception
from gateway.adapt import ContentSupport, TextPolicy
from gateway.channels.base import (
    AddressKind,
    Channel,
    OutgoingMessage,
    SendResult,
    WebhookAnswer,
    WebhookBatch,
    WebhookRequest,
)
from gateway.channels.meta import handshake, signature_valid
from gateway.channels.whatsapp_cloud import CloudTransport, digits
from gateway.channels.whatsapp_cloud import parse_webhook as parse_cloud_webhook
from gateway.errors import ChannelError, ErrorKind
from gateway.settings import Settings

TWILIO_HOOKS = ("twilio/status", "twilio/inbound")


def _hook_of(request: WebhookRequest) -> str:
    """The part of the called path after /webhooks/."""
    return urlsplit(request.url).path.rpartition("/webhooks/")[2]


class _TwilioTransport:
    """WhatsApp through Twilio's Messages API, with the SDK's async client (as the SMS adapter)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        sender = settings.twilio_whatsapp_from or ""
        self.sender = sender if sender.startswith("whatsapp:") else f"whatsapp:{sender}"
        # Parses Twilio's callbacks to this channel when the SMS adapter is not there to do it.
        self.hooks: Channel = SmsChannel(settings)
        self._http: _BaseUrlHttpClient | None = None
        self._client: Client | None = None

    async def open(self) -> None:
        self._http = _BaseUrlHttpClient(self.settings.twilio_base_url, self.settings.provider_timeout or None)
        self._client = Client(
            self.settings.twilio_account_sid,
            self.settings.twilio_auth_token,
            http_client=self._http,
            environment={},
        )

    async def close(self) -> None:
        http, self._http, self._client = self._http, None, None
        if http is not None:
            await http.close()

    async def send_text(self, message: OutgoingMessage) -> SendResult:
        """The text's parts, the first with the media (MediaUrl); the attempt tracks the last one."""
        parts = message.parts or (message.text or "",)
        result: SendResult | None = None
        for number, part in enumerate(parts, 1):
            media = [m.url for m in message.media] if number == 1 else []
            result = await self._create(message, body=part, media_url=media or values.unset)
        assert result is not None
        return result

    async def send_template(self, message: OutgoingMessage) -> SendResult:
        template = message.template or {}
        sid = template.get("content_sid")
        if not isinstance(sid, str) or not sid:
            raise ChannelError(ErrorKind.REJECTED, "a WhatsApp template through Twilio needs a content_sid")
        variables = template.get("variables") or {}
        if isinstance(variables, list):  # ["42", "Ada"] means {"1": "42", "2": "Ada"}
            variables = {str(i): value for i, value in enumerate(variables, 1)}
        return await self._create(
            message, content_sid=sid, content_variables=json.dumps(variables) if variables else None
        )

    async def _create(self, message: OutgoingMessage, **fields: Any) -> SendResult:
        if self._client is None:
            raise RuntimeError("WhatsAppChannel.send called before open()")
        try:
            created = await self._client.messages.create_async(
                to=f"whatsapp:+{digits(message.address)}",
                from_=self.sender,
                status_callback=message.status_callback_url,
                **fields,
            )
        except TwilioException as exc:
            raise _error_from_exception(exc) from exc
        except TimeoutError as exc:
            detail = f"Twilio did not answer within {self.settings.provider_timeout:g}s"
            raise ChannelError(ErrorKind.TRANSIENT, detail) from exc
        except (OSError, ValueError) as exc:  # fallbacks/http1.py raises OSErrors
            detail = f"cannot use Twilio at {self.settings.twilio_base_url}: {exc}"
            raise ChannelError(ErrorKind.TRANSIENT, detail) from exc
        return SendResult(provider_message_id=str(created.sid), status="accepted")


class WhatsAppChannel(Channel):
    """WhatsApp messages to phone numbers: text inside the 24-hour window, templates outside it."""

    name: ClassVar[str] = "whatsapp"
    address_kind: ClassVar[AddressKind] = "phone"
    window_seconds: ClassVar[float | None] = 24 * 3600.0
    delivery_receipts: ClassVar[bool] = True
    read_receipts: ClassVar[bool] = True
    supports_templates: ClassVar[bool] = True
    max_text_length: ClassVar[int] = 4096
    text_policy: ClassVar[TextPolicy] = "split"
    # What the Cloud API's media messages take (image, video, audio; any of these documents).
    media_types: ClassVar[frozenset[str]] = frozenset(
        {
            "image/jpeg", "image/png", "video/mp4", "video/3gpp",
            "audio/aac", "audio/amr", "audio/mpeg", "audio/mp4", "audio/ogg",
            "application/pdf", "text/plain", "application/msword", "application/vnd.ms-excel",
            "application/vnd.ms-powerpoint", "application/vnd.openxmlformats-officedocument.",
        }
    )  # fmt: skip
    # Interactive reply buttons: 3 at most, titles of 20 characters, a body of 1024.
    max_buttons: ClassVar[int] = 3
    max_button_title: ClassVar[int] = 20
    button_text_length: ClassVar[int | None] = 1024
    # The Cloud API's default throughput per business number.
    default_rate: ClassVar[float] = 80.0
    status_webhook: ClassVar[str | None] = "whatsapp"
    inbound_webhook: ClassVar[str | None] = "whatsapp"
    webhook_ok: ClassVar[WebhookAnswer] = WebhookAnswer(200, "")  # Meta and Twilio both take an empty 200

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._twilio: _TwilioTransport | None = None
        self._cloud: CloudTransport | None = None
        if settings.whatsapp_token:
            self._cloud = CloudTransport(settings)
        else:
            self._twilio = _TwilioTransport(settings)

    @classmethod
    def disabled_reason(cls, settings: Settings) -> str | None:
        """Name what is missing for the Cloud API (when its token is set) or for Twilio."""
        if settings.whatsapp_token:
            needed = ("whatsapp_phone_number_id", "meta_app_secret")
        elif settings.twilio_whatsapp_from:
            needed = ("twilio_account_sid", "twilio_auth_token")
        else:
            return "GATEWAY_WHATSAPP_TOKEN (Cloud API) or GATEWAY_TWILIO_WHATSAPP_FROM (Twilio) is not set"
        missing = [Settings.env_name(name) for name in needed if not getattr(settings, name)]
        if not missing:
            return None
        return ", ".join(missing) + (" is not set" if len(missing) == 1 else " are not set")

    def content_support(self) -> ContentSupport:
        """Through Twilio: one media file per message and no free-form buttons (Twilio sends
        interactive buttons only as Content templates), so buttons become a numbered list."""
        support = super().content_support()
        if self._twilio is not None:
            return replace(support, max_media=1, max_buttons=0, button_text_length=None)
        return support

    @property
    def transport(self) -> str:
        """`cloud` or `twilio`."""
        return "cloud" if self._cloud is not None else "twilio"

    async def open(self) -> None:
        await (self._cloud or self._twilio_transport()).open()

    async def close(self) -> None:
        await (self._cloud or self._twilio_transport()).close()

    def _twilio_transport(self) -> _TwilioTransport:
        assert self._twilio is not None
        return self._twilio

    async def send(self, message: OutgoingMessage) -> SendResult:
        """Text while the window is open, else the template; ChannelError on every failure."""
        transport = self._cloud or self._twilio_transport()
        if message.window_open and message.text:
            try:
                return await transport.send_text(message)
            except ChannelError as exc:
                if exc.kind != ErrorKind.WINDOW_CLOSED or not message.template:
                    raise
                # The provider says the window is closed after all: the template may still go out.
        if message.template:
            return await transport.send_template(message)
        if message.window_open:
            raise ChannelError(ErrorKind.REJECTED, "nothing to send: no text and no whatsapp template")
        detail = "the person has not written in the last 24 hours and the message has no whatsapp template"
        raise ChannelError(ErrorKind.WINDOW_CLOSED, detail)

    def status_callback_url(self, attempt_id: str) -> str | None:
        """Twilio reports to its status hook; the Cloud API posts to the app's webhook instead."""
        if self._twilio is None:
            return None
        return f"{self.settings.public_url}/webhooks/twilio/status?attempt={attempt_id}"

    def _serves_twilio_hooks(self) -> bool:
        return self._twilio is not None and SmsChannel.disabled_reason(self.settings) is not None

    def owns_webhook(self, hook: str) -> bool:
        return hook == "whatsapp" or (hook in TWILIO_HOOKS and self._serves_twilio_hooks())

    def verify_webhook(self, request: WebhookRequest) -> bool:
        if self._twilio is not None and _hook_of(request) in TWILIO_HOOKS:
            return self._twilio.hooks.verify_webhook(request)
        return signature_valid(self.settings.meta_app_secret, request)

    def handshake(self, hook: str, request: WebhookRequest) -> WebhookAnswer | None:
        return handshake(self.settings.meta_verify_token, request) if hook == "whatsapp" else None

    def parse_webhook(self, hook: str, request: WebhookRequest) -> WebhookBatch:
        if hook in TWILIO_HOOKS and self._twilio is not None:
            return self._twilio.hooks.parse_webhook(hook, request)
        return parse_cloud_webhook(request, self.settings.whatsapp_phone_number_id)
