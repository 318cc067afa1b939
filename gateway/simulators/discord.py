"""A local stand-in for the two Discord REST calls a bot DM needs: `POST /users/@me/channels` (open the
DM channel) and `POST /channels/{id}/messages`. Discord delivers inbound messages over its gateway
WebSocket, not webhooks, so this simulator posts nothing to the gateway.

Recipients by convention (docs/simulators-social.md): `blocked-…` 403 code 50007 (cannot send messages
to this user), `unknown-…` 404 code 10013 when the DM channel is opened, `rate_limited-…` 429 with
`retry_after` seconds, `server_error-…` 502.
Run it alone with `python -m gateway.simulators.discord --port 8816`.
"""

from __future__ import annotations

import argparse
import math
import re
from datetime import UTC, datetime
from typing import Any, ClassVar

from gateway.simulators.http_stub import Reply, Request, header_of
from gateway.simulators.social import SocialSimulator, serve

DEFAULT_BOT_TOKEN = "simulator-discord-bot-token"
BOT_USER = {"id": "900000000000000001", "username": "simulator", "bot": True}
ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "blocked": (403, {"message": "Cannot send messages to this user", "code": 50007}),
    "unknown": (404, {"message": "Unknown User", "code": 10013}),
    "rate_limited": (429, {"message": "You are being rate limited.", "retry_after": 0.0, "global": False}),
    "server_error": (502, {"message": "502: Bad Gateway", "code": 0}),
}
_MESSAGES = re.compile(r"^/channels/(?P<channel>\d+)/messages$")


class DiscordSimulator(SocialSimulator):
    name: ClassVar[str] = "discord"
    errors: ClassVar[tuple[str, ...]] = tuple(ERRORS)

    def __init__(self, bot_token: str = DEFAULT_BOT_TOKEN, retry_after: float = 0.5, **options: Any) -> None:
        super().__init__(**options)
        self.bot_token, self.retry_after = bot_token, retry_after
        self.channels: dict[str, str] = {}  # DM channel id -> user id
        self.channels_opened = 0

    def gateway_settings(self) -> dict[str, Any]:
        """Setting overrides that point the gateway's Discord channel here."""
        return {"discord_bot_token": self.bot_token, "discord_api_url": self.base_url}

    def route(self, request: Request) -> Reply:
        if header_of(request, "Authorization") != f"Bot {self.bot_token}":
            return Reply(401, {"message": "401: Unauthorized", "code": 0})
        if request.method != "POST":
            return Reply(405, {"message": "405: Method Not Allowed", "code": 0})
        if request.path == "/users/@me/channels":
            return self._open_dm(str((request.json() or {}).get("recipient_id") or ""))
        match = _MESSAGES.match(request.path)
        if match is None:
            return Reply(404, {"message": "404: Not Found", "code": 0})
        with self.lock:
            user = self.channels.get(match["channel"])
        if user is None:
            return Reply(404, {"message": "Unknown Channel", "code": 10003})
        content = (request.json() or {}).get("content")
        if not content:
            return Reply(400, {"message": "Cannot send an empty message", "code": 50006})
        return self._post_message(match["channel"], user, content)

    def _open_dm(self, user: str) -> Reply:
        if not user:
            return Reply(400, {"message": "Invalid Form Body", "code": 50035})
        if user == "unknown" or user.startswith("unknown-"):
            return Reply(*ERRORS["unknown"])
        with self.lock:
            channel = next((c for c, u in self.channels.items() if u == user), None)
            if channel is None:
                self.channels_opened += 1
                channel = str(800_000_000_000_000_000 + self.next_id())
                self.channels[channel] = user
        return Reply(200, {"id": channel, "type": 1, "last_message_id": None, "recipients": [{"id": user}]})

    def _post_message(self, channel: str, user: str, content: str) -> Reply:
        behaviour = self.outcome(user)
        if behaviour.kind == "error" and behaviour.error in ERRORS:
            status, body = ERRORS[behaviour.error]
            if status == 429:
                body = {**body, "retry_after": self.retry_after}
                headers = {"Retry-After": str(math.ceil(self.retry_after)), "X-RateLimit-Scope": "user"}
                return Reply(status, body, headers)
            return Reply(status, body)
        entry = self.record(user_id=user, channel_id=channel, content=content)
        message = {
            "id": str(1_100_000_000_000_000_000 + entry["id"]),
            "channel_id": channel,
            "type": 0,
            "content": content,
            "author": BOT_USER,
            "timestamp": datetime.now(UTC).isoformat(),
        }
        return Reply(200, message)

    def signed(self, body: bytes, query: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        return {}, {}  # Discord posts no webhooks here


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Discord REST (DM) simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8816)
    parser.add_argument("--bot-token", default=DEFAULT_BOT_TOKEN)
    args = parser.parse_args(argv)
    serve(DiscordSimulator(args.bot_token, host=args.host, port=args.port))


if __name__ == "__main__":
    main()
