"""A local stand-in for the Telegram Bot API (`sendMessage`) that also plays the users: it posts their
messages, `/start` and blocks to the gateway's webhook with the secret-token header.

Recipients by convention (docs/simulators-social.md): `blocked-…` 403 bot was blocked by the user,
`deactivated-…` 403 user is deactivated, `no_chat-…` 403 bot can't initiate conversation,
`not_found-…` 400 chat not found, `rate_limited-…` 429 with `retry_after`, `server_error-…` 500.
Run it alone with `python -m gateway.simulators.telegram --port 8811`.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from typing import Any, ClassVar

from gateway.simulators.http_stub import Reply, Request
from gateway.simulators.social import SocialSimulator, serve

DEFAULT_BOT_TOKEN = "123456:simulator-bot-token"
DEFAULT_SECRET_TOKEN = "simulator-secret-token"
BOT_USER = {"id": 123456, "is_bot": True, "first_name": "Simulator", "username": "simulator_bot"}
ERRORS: dict[str, tuple[int, str]] = {
    "blocked": (403, "Forbidden: bot was blocked by the user"),
    "deactivated": (403, "Forbidden: user is deactivated"),
    "no_chat": (403, "Forbidden: bot can't initiate conversation with a user"),
    "not_found": (400, "Bad Request: chat not found"),
    "rate_limited": (429, "Too Many Requests: retry after {retry_after}"),
    "server_error": (500, "Internal Server Error"),
}


# Methods that send a file by URL, and the parameter naming it.
FILE_METHODS = {"sendPhoto": "photo", "sendDocument": "document", "sendVideo": "video", "sendAudio": "audio"}


def keyboard_problem(markup: Any) -> str | None:
    """Why an inline keyboard is invalid (callback_data must be 1-64 bytes), or None."""
    if markup is None:
        return None
    rows = markup.get("inline_keyboard") if isinstance(markup, dict) else None
    if not isinstance(rows, list) or not all(isinstance(row, list) for row in rows):
        return 'field "inline_keyboard" of the InlineKeyboardMarkup should be an Array of Arrays'
    for row in rows:
        for button in row:
            if not isinstance(button, dict) or not button.get("text"):
                return "text buttons are unallowed in the inline keyboard"
            data = button.get("callback_data")
            if not isinstance(data, str) or not 1 <= len(data.encode()) <= 64:
                return "BUTTON_DATA_INVALID"
    return None


def error_body(status: int, description: str, retry_after: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"ok": False, "error_code": status, "description": description}
    if retry_after is not None:
        body["parameters"] = {"retry_after": retry_after}
    return body


class TelegramSimulator(SocialSimulator):
    name: ClassVar[str] = "telegram"
    errors: ClassVar[tuple[str, ...]] = tuple(ERRORS)

    def __init__(
        self,
        bot_token: str = DEFAULT_BOT_TOKEN,
        secret_token: str = DEFAULT_SECRET_TOKEN,
        retry_after: int = 1,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.bot_token, self.secret_token, self.retry_after = bot_token, secret_token, retry_after
        self._update_ids = itertools.count(10_000)
        self.answered_callbacks: list[str] = []  # callback_query ids acknowledged in a webhook answer

    def webhook_answered(self, status: int, body: bytes) -> None:
        """The Bot API runs a method a webhook answer carries (`{"method": …, …}` as JSON); this stand-in
        records `answerCallbackQuery`, which stops the tapped button's progress indicator."""
        try:
            call = json.loads(body) if status == 200 and body else None
        except ValueError:
            return
        if isinstance(call, dict) and call.get("method") == "answerCallbackQuery":
            with self.lock:
                self.answered_callbacks.append(str(call.get("callback_query_id")))

    def gateway_settings(self) -> dict[str, Any]:
        """Setting overrides that point the gateway's Telegram channel here."""
        return {
            "telegram_bot_token": self.bot_token,
            "telegram_secret_token": self.secret_token,
            "telegram_api_url": self.base_url,
        }

    def route(self, request: Request) -> Reply:
        prefix = f"/bot{self.bot_token}/"
        if not request.path.startswith(prefix):
            status = 401 if request.path.startswith("/bot") else 404
            return Reply(status, error_body(status, "Unauthorized" if status == 401 else "Not Found"))
        method = request.path.removeprefix(prefix)
        if method == "getMe":
            return Reply(200, {"ok": True, "result": BOT_USER})
        if (method != "sendMessage" and method not in FILE_METHODS) or request.method != "POST":
            return Reply(404, error_body(404, "Not Found: method not found"))
        return self._send_message(method, request.json() or {})

    def _send_message(self, method: str, params: dict[str, Any]) -> Reply:
        if params.get("chat_id") in (None, ""):
            return Reply(400, error_body(400, "Bad Request: chat_id is empty"))
        field = FILE_METHODS.get(method)
        if field is None and not params.get("text"):
            return Reply(400, error_body(400, "Bad Request: message text is empty"))
        if field is not None and not str(params.get(field) or "").startswith(("http://", "https://")):
            return Reply(400, error_body(400, f"Bad Request: there is no {field} in the request"))
        problem = keyboard_problem(params.get("reply_markup"))
        if problem is not None:
            return Reply(400, error_body(400, f"Bad Request: {problem}"))
        chat = params["chat_id"]
        behaviour = self.outcome(str(chat))
        if behaviour.kind == "error" and behaviour.error in ERRORS:
            status, description = ERRORS[behaviour.error]
            retry = self.retry_after if status == 429 else None
            return Reply(status, error_body(status, description.format(retry_after=retry), retry))
        entry = self.record(
            chat_id=str(chat),
            method=method,
            text=params.get("text"),
            file=params.get(field) if field else None,
            caption=params.get("caption"),
            reply_markup=params.get("reply_markup"),
        )
        result: dict[str, Any] = {
            "message_id": entry["id"],
            "from": BOT_USER,
            "chat": {"id": chat, "type": "private"},
            "date": int(time.time()),
        }
        if field is None:
            result["text"] = params["text"]
        else:  # the Bot API fetched the file: its answer describes it (file ids are opaque)
            result[field] = {"file_id": f"sim-{entry['id']}", "file_unique_id": f"u{entry['id']}"}
        if params.get("reply_markup"):
            result["reply_markup"] = params["reply_markup"]
        return Reply(200, {"ok": True, "result": result})

    # -- the users' side: updates posted to the gateway ------------------------------------------

    def signed(self, body: bytes, query: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        return {"X-Telegram-Bot-Api-Secret-Token": self.secret_token}, {}

    def post_update(self, update: dict[str, Any], **forge: Any) -> int:
        """POST one update (an `update_id` is added when missing); returns the gateway's status."""
        update = {"update_id": next(self._update_ids), **update}
        return self.post_webhook(json.dumps(update).encode(), **forge)

    def user_message(self, chat_id: int | str, text: str, message_id: int | None = None, **forge: Any) -> int:
        """The user writes to the bot."""
        user = {"id": chat_id, "is_bot": False, "first_name": "Sim"}
        message = {
            "message_id": message_id or self.next_id(),
            "from": user,
            "chat": {"id": chat_id, "type": "private", "first_name": "Sim"},
            "date": int(time.time()),
            "text": text,
        }
        return self.post_update({"message": message}, **forge)

    def tap_button(self, chat_id: int | str, message: dict[str, Any], data: str) -> int:
        """The user taps an inline keyboard button of `message` (a recorded send): a `callback_query`."""
        chat = {"id": chat_id, "type": "private", "first_name": "Sim"}
        sent = {
            "message_id": message["id"],
            "from": BOT_USER,
            "chat": chat,
            "date": int(time.time()),
            "text": message.get("text"),
            "reply_markup": message.get("reply_markup"),
        }
        query = {
            "id": str(self.next_id() + 4_000_000),
            "from": {"id": chat_id, "is_bot": False, "first_name": "Sim"},
            "message": sent,
            "chat_instance": "-" + str(self.next_id()),
            "data": data,
        }
        return self.post_update({"callback_query": query})

    def press_start(self, chat_id: int | str, **forge: Any) -> int:
        """The user opens the bot and presses Start: the bot receives `/start`."""
        return self.user_message(chat_id, "/start", **forge)

    def block(self, chat_id: int | str, status: str = "kicked") -> int:
        """The user blocks the bot (`my_chat_member`, new status `kicked`; `member` unblocks)."""
        chat = {"id": chat_id, "type": "private", "first_name": "Sim"}
        update = {
            "my_chat_member": {
                "chat": chat,
                "from": {"id": chat_id, "is_bot": False, "first_name": "Sim"},
                "date": int(time.time()),
                "old_chat_member": {"user": BOT_USER, "status": "member" if status == "kicked" else "kicked"},
                "new_chat_member": {"user": BOT_USER, "status": status},
            }
        }
        return self.post_update(update)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Telegram Bot API simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8811)
    parser.add_argument("--bot-token", default=DEFAULT_BOT_TOKEN)
    parser.add_argument("--secret-token", default=DEFAULT_SECRET_TOKEN)
    parser.add_argument(
        "--webhook-url", help="where updates go, e.g. http://127.0.0.1:8000/webhooks/telegram"
    )
    args = parser.parse_args(argv)
    sim = TelegramSimulator(
        args.bot_token, args.secret_token, host=args.host, port=args.port, webhook_url=args.webhook_url
    )
    serve(sim)


if __name__ == "__main__":
    main()
