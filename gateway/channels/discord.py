"""Discord direct messages from a bot, over REST; send-only.

A DM goes in two calls: open (or reuse) the DM channel with the user (`POST /users/@me/channels`), then
post the message into it (`POST /channels/{id}/messages`). DM channel ids are cached per user. Inbound
Discord messages arrive only over Discord's gateway (a persistent WebSocket with heartbeats, resumes
and sharding), not as webhooks, so this adapter does not receive; see the README.
Errors carry a JSON `code`: 50007 (cannot send messages to this user: DMs closed or the bot blocked) is
`blocked`; 429 carries `retry_after` in seconds.
"""

from __future__ import annotations

from typing import Any, ClassVar

from gateway.channels.base import AddressKind, OutgoingMessage, SendResult
from gateway.channels.http_base import HttpAnswer, HttpChannel, missing_settings
from gateway.errors import ChannelError, ErrorKind
from gateway.settings import Settings

DISCORD_CODE_KINDS: dict[int, tuple[ErrorKind, str]] = {
    50007: (ErrorKind.BLOCKED, "cannot send messages to this user"),
    10013: (ErrorKind.INVALID_ADDRESS, "unknown user"),
    50033: (ErrorKind.INVALID_ADDRESS, "invalid recipient"),
    50035: (ErrorKind.REJECTED, "invalid form body"),
    50006: (ErrorKind.REJECTED, "cannot send an empty message"),
    50001: (ErrorKind.REJECTED, "missing access (configuration)"),
    50013: (ErrorKind.REJECTED, "missing permissions (configuration)"),
    40001: (ErrorKind.REJECTED, "unauthorized (configuration)"),
    20026: (ErrorKind.REJECTED, "the bot is flagged as spam"),
}


def classify_discord_error(
    status: int, body: dict[str, Any] | None, retry_after: float | None = None
) -> ChannelError:
    """Map a Discord REST error (`{"code", "message"}`, or a 429 with `retry_after`) onto a ChannelError."""
    body = body or {}
    code = body.get("code")
    detail = str(body.get("message") or f"HTTP {status}")
    if status == 429:
        wait = body.get("retry_after", retry_after)
        seconds = float(wait) if wait is not None else None
        return ChannelError(ErrorKind.RATE_LIMITED, detail, "429", retry_after=seconds)
    if isinstance(code, int) and code in DISCORD_CODE_KINDS:
        kind, meaning = DISCORD_CODE_KINDS[code]
        return ChannelError(kind, f"{meaning}: {detail}", str(code))
    code_text = str(code) if code else str(status)
    if status >= 500:
        return ChannelError(ErrorKind.TRANSIENT, detail, code_text)
    if status == 404:
        return ChannelError(ErrorKind.INVALID_ADDRESS, detail, code_text)
    return ChannelError(ErrorKind.REJECTED, detail, code_text)


def _error(answer: HttpAnswer) -> ChannelError:
    header = answer.header("retry-after")
    try:
        retry_after = float(header) if header else None
    except ValueError:
        retry_after = None
    return classify_discord_error(
        answer.status, answer.data if isinstance(answer.data, dict) else None, retry_after
    )


class DiscordChannel(HttpChannel):
    """Direct messages from a Discord bot to users who share a server with it (and accept DMs)."""

    name: ClassVar[str] = "discord"
    address_kind: ClassVar[AddressKind] = "identity"
    delivery_receipts: ClassVar[bool] = False
    max_text_length: ClassVar[int] = 2000
    default_rate: ClassVar[float] = 5.0

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._dm_channels: dict[str, str] = {}

    @classmethod
    def disabled_reason(cls, settings: Settings) -> str | None:
        return missing_settings(settings, "discord_bot_token")

    def default_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bot {self.settings.discord_bot_token}"}

    async def send(self, message: OutgoingMessage) -> SendResult:
        if not message.text:
            raise ChannelError(ErrorKind.REJECTED, "a Discord message needs a text")
        if len(message.text) > self.max_text_length:
            raise ChannelError(ErrorKind.REJECTED, f"text longer than {self.max_text_length} characters")
        channel_id = await self._dm_channel(message.address)
        url = f"{self.settings.discord_api_url}/channels/{channel_id}/messages"
        answer = await self.call("POST", url, json={"content": message.text})
        if answer.status == 404:
            self._dm_channels.pop(message.address, None)  # a stale cached channel: open it again next time
        if 200 <= answer.status < 300 and isinstance(answer.data, dict) and answer.data.get("id"):
            return SendResult(str(answer.data["id"]), "accepted")
        raise _error(answer)

    async def _dm_channel(self, user_id: str) -> str:
        """The DM channel with `user_id`: cached, else opened (Discord returns the existing one)."""
        cached = self._dm_channels.get(user_id)
        if cached is not None:
            return cached
        url = f"{self.settings.discord_api_url}/users/@me/channels"
        answer = await self.call("POST", url, json={"recipient_id": user_id})
        if 200 <= answer.status < 300 and isinstance(answer.data, dict) and answer.data.get("id"):
            self._dm_channels[user_id] = str(answer.data["id"])
            return self._dm_channels[user_id]
        raise _error(answer)
