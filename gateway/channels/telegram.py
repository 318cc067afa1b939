"""Telegram through the Bot API: `sendMessage` (and `sendPhoto`, `sendDocument`, ... for files) out, one
webhook in (`/webhooks/telegram`): messages, `/start`, blocks, and inline keyboard taps (`callback_query`).

A bot reaches only people who wrote to it first, so Telegram is planned only for contacts with a known
chat id. There are no delivery receipts: a send ends as `accepted`. Errors are classified by HTTP status
and the description text, exactly as PROVIDERS.md lists them, in `classify_telegram_error`.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, ClassVar

from gateway.adapt import ButtonItem, MediaItem, TextPolicy
from gateway.channels.base import (
    AddressKind,
    IdentityEvent,
    Inbound,
    OutgoingMessage,
    SendResult,
    WebhookAnswer,
    WebhookBatch,
    WebhookRequest,
)
from gateway.channels.http_base import HttpChannel, check_shape, header, json_body, missing_settings, same
from gateway.errors import ChannelError, ErrorKind
from gateway.settings import Settings

SECRET_HEADER = "X-Telegram-Bot-Api-Secret-Token"

# (HTTP status, words in the description) -> kind; the first match wins, then the status alone.
TELEGRAM_DESCRIPTIONS: tuple[tuple[int, str, ErrorKind], ...] = (
    (403, "bot was blocked by the user", ErrorKind.BLOCKED),
    (403, "user is deactivated", ErrorKind.UNREACHABLE),
    (403, "bot can't initiate conversation", ErrorKind.UNREACHABLE),
    (403, "bot was kicked", ErrorKind.BLOCKED),
    (400, "chat not found", ErrorKind.INVALID_ADDRESS),
    (400, "peer_id_invalid", ErrorKind.INVALID_ADDRESS),
)


def classify_telegram_error(status: int, description: str, retry_after: float | None = None) -> ChannelError:
    """Map a Bot API error (`error_code`, `description`, `parameters.retry_after`) onto a ChannelError."""
    detail = description or f"HTTP {status}"
    lowered = detail.lower()
    for code, words, kind in TELEGRAM_DESCRIPTIONS:
        if status == code and words in lowered:
            return ChannelError(kind, detail, code=str(status))
    if status == 429:
        return ChannelError(ErrorKind.RATE_LIMITED, detail, code="429", retry_after=retry_after)
    if status >= 500:
        return ChannelError(ErrorKind.TRANSIENT, detail, code=str(status))
    # 400 bad request, 401 wrong token, 403 other refusals: permanent for this message.
    return ChannelError(ErrorKind.REJECTED, detail, code=str(status))


def chat_id(address: str) -> int | str:
    """Numeric chat ids go out as numbers, @usernames and anything else as given."""
    return int(address) if re.fullmatch(r"-?\d+", address) else address


def _command(text: str) -> str:
    """The bot command a text starts with, without its @botname (`/start@shop_bot payload` -> `/start`)."""
    return text.split(maxsplit=1)[0].split("@", 1)[0]


# How a file goes by URL: the Bot API fetches photos (JPEG, PNG), MP4 videos, MP3 audio, and as documents
# only GIF, PDF and ZIP files.
MEDIA_METHODS: dict[str, tuple[str, str]] = {
    "image/jpeg": ("sendPhoto", "photo"),
    "image/png": ("sendPhoto", "photo"),
    "video/mp4": ("sendVideo", "video"),
    "audio/mpeg": ("sendAudio", "audio"),
    "image/gif": ("sendDocument", "document"),
    "application/pdf": ("sendDocument", "document"),
    "application/zip": ("sendDocument", "document"),
}


def inline_keyboard(buttons: tuple[ButtonItem, ...]) -> dict[str, Any]:
    """One button per row; a tap comes back as a `callback_query` with the button's id as its data."""
    return {"inline_keyboard": [[{"text": b.title, "callback_data": b.id}] for b in buttons]}


def _at(seconds: Any) -> datetime | None:
    return datetime.fromtimestamp(int(seconds), UTC) if seconds is not None else None


class TelegramChannel(HttpChannel):
    """Direct messages from a Telegram bot."""

    name: ClassVar[str] = "telegram"
    address_kind: ClassVar[AddressKind] = "identity"
    delivery_receipts: ClassVar[bool] = False
    max_text_length: ClassVar[int] = 4096
    text_policy: ClassVar[TextPolicy] = "split"
    media_types: ClassVar[frozenset[str]] = frozenset(MEDIA_METHODS)
    # Inline keyboards hold up to 100 buttons; their callback_data (the button id) 1-64 bytes.
    max_buttons: ClassVar[int] = 100
    max_button_title: ClassVar[int] = 64
    default_rate: ClassVar[float] = 25.0  # Telegram allows about 30 messages per second per bot
    inbound_webhook: ClassVar[str | None] = "telegram"

    @classmethod
    def disabled_reason(cls, settings: Settings) -> str | None:
        return missing_settings(settings, "telegram_bot_token", "telegram_secret_token")

    async def send(self, message: OutgoingMessage) -> SendResult:
        """The files first (sendPhoto, sendDocument, ...), then the text's parts (sendMessage), the last
        with the inline keyboard; the attempt tracks the last message."""
        if not message.text:
            raise ChannelError(ErrorKind.REJECTED, "a Telegram message needs a text")
        chat = chat_id(message.address)
        for media in message.media:
            method, field = MEDIA_METHODS[media.type]
            await self._call(method, {"chat_id": chat, field: media.url} | self._file_name(media, field))
        parts = message.parts or (message.text,)
        result: SendResult | None = None
        for number, part in enumerate(parts, 1):
            params: dict[str, Any] = {"chat_id": chat, "text": part}
            if number == len(parts) and message.buttons:
                params["reply_markup"] = inline_keyboard(message.buttons)
            result = await self._call("sendMessage", params)
        assert result is not None
        return result

    @staticmethod
    def _file_name(media: MediaItem, field: str) -> dict[str, Any]:
        """A document's caption names the file (a URL's file name is the Bot API's own choice)."""
        return {"caption": media.filename} if field == "document" else {}

    async def _call(self, method: str, params: dict[str, Any]) -> SendResult:
        """One Bot API call that sends a message; its `chat:message_id`, or a classified ChannelError."""
        url = f"{self.settings.telegram_api_url}/bot{self.settings.telegram_bot_token}/{method}"
        answer = await self.call("POST", url, json=params)
        data = answer.data if isinstance(answer.data, dict) else {}
        if answer.status == 200 and data.get("ok"):
            result = data.get("result") or {}
            chat = (result.get("chat") or {}).get("id", params["chat_id"])
            return SendResult(f"{chat}:{result.get('message_id')}", "accepted")
        parameters = data.get("parameters") or {}
        retry_after = parameters.get("retry_after")
        raise classify_telegram_error(
            int(data.get("error_code") or answer.status),
            str(data.get("description") or ""),
            float(retry_after) if retry_after is not None else None,
        )

    def verify_webhook(self, request: WebhookRequest) -> bool:
        """The secret token given to setWebhook comes back in a header on every update."""
        secret = self.settings.telegram_secret_token
        return secret is not None and same(secret, header(request.headers, SECRET_HEADER))

    def webhook_answer(self, hook: str, request: WebhookRequest) -> WebhookAnswer:
        """A button tap is acknowledged in the webhook's answer (a Bot API call the answer may carry:
        `answerCallbackQuery`), so the user's app stops showing its progress indicator at once."""
        query = json_body(request.body).get("callback_query")
        if isinstance(query, dict) and isinstance(query.get("id"), str):
            body = json.dumps({"method": "answerCallbackQuery", "callback_query_id": query["id"]})
            return WebhookAnswer(200, body, "application/json")
        return self.webhook_ok

    def parse_webhook(self, hook: str, request: WebhookRequest) -> WebhookBatch:
        """One update: a message (`/start` is a follow), or `my_chat_member` (kicked = blocked)."""
        update = json_body(request.body)
        check_shape(
            update, {"message": dict, "edited_message": dict, "my_chat_member": dict, "callback_query": dict}
        )
        batch = WebhookBatch()
        update_id = str(update["update_id"])
        message = update.get("message")
        if isinstance(message, dict) and (message.get("chat") or {}).get("type", "private") == "private":
            sender = str(message["chat"]["id"])
            text = message.get("text")
            if isinstance(text, str) and text.strip() and _command(text) == "/start":
                batch.identity.append(
                    IdentityEvent(
                        self.name, sender, "follow", update_id, "started the bot", _at(message.get("date"))
                    )
                )
            else:
                batch.inbound.append(
                    Inbound(
                        channel=self.name,
                        sender=sender,
                        text=text if isinstance(text, str) else message.get("caption"),
                        provider_message_id=f"{sender}:{message['message_id']}",
                        received_at=_at(message.get("date")),
                        raw=message,
                    )
                )
        query = update.get("callback_query")
        if isinstance(query, dict) and (query.get("message") or {}).get("chat", {}).get("type") == "private":
            batch.inbound.append(self._button_tap(query))
        member = update.get("my_chat_member")
        if isinstance(member, dict) and (member.get("chat") or {}).get("type", "private") == "private":
            status = (member.get("new_chat_member") or {}).get("status")
            sender = str(member["chat"]["id"])
            at = _at(member.get("date"))
            if status == "kicked":
                batch.identity.append(
                    IdentityEvent(self.name, sender, "block", update_id, "blocked the bot", at)
                )
            elif status == "member":
                batch.identity.append(
                    IdentityEvent(self.name, sender, "follow", update_id, "unblocked the bot", at)
                )
        return batch

    def _button_tap(self, query: dict[str, Any]) -> Inbound:
        """A tap on an inline keyboard button: its callback_data is the button id, its text the text."""
        data = query.get("data")
        keyboard = ((query.get("message") or {}).get("reply_markup") or {}).get("inline_keyboard") or []
        titles = {
            b.get("callback_data"): b.get("text") for row in keyboard for b in row if isinstance(b, dict)
        }
        sender = str(query["message"]["chat"]["id"])  # the private chat's id: the address sends go to
        return Inbound(
            channel=self.name,
            sender=sender,
            text=titles.get(data),
            provider_message_id=f"callback:{query['id']}",
            received_at=None,
            raw=query,
            button_id=str(data) if data else None,
        )
