"""A local stand-in for the Viber REST bot API (`send_message`, `set_webhook`) with signed callbacks:
`delivered` (and `seen`) receipts after a send, and the users' `subscribed`, `unsubscribed`,
`conversation_started` and `message` events, all with `X-Viber-Content-Signature`.

HTTP is always 200; the body's `status` says what happened. Recipients by convention
(docs/simulators-social.md): `not_registered-…` 5, `not_subscribed-…` 6, `no_device-…` 11,
`rate_limited-…` 12, `bad_data-…` 3, `undelivered-…` accepted then a `failed` callback, `silent-…`
accepted without receipts, `reader-…` delivered then seen. Run it alone with
`python -m gateway.simulators.viber --port 8813`.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import time
from typing import Any, ClassVar

from gateway.simulators.http_stub import Reply, Request, header_of
from gateway.simulators.social import SocialSimulator, serve

DEFAULT_AUTH_TOKEN = "445da6az1s345z78-dazcczb2542zv51a-e0vc5fva17480im9"
ERRORS: dict[str, tuple[int, str]] = {
    "bad_data": (3, "badData"),
    "not_registered": (5, "receiverNotRegistered"),
    "not_subscribed": (6, "notSubscribed"),
    "no_device": (11, "receiverNoSuitableDevice"),
    "rate_limited": (12, "tooManyRequests"),
}
ASYNC_ERRORS = ("undelivered",)
_TOKEN_BASE = 4_000_000_000_000_000_000  # message tokens are 64-bit integers
_EVENT_BASE, _INBOUND_BASE = _TOKEN_BASE + 5 * 10**17, _TOKEN_BASE + 9 * 10**17


def message_problem(body: dict[str, Any]) -> str | None:
    """Why a send_message body is bad data (Viber answers status 3), or None."""
    kind = body.get("type")
    if kind == "text" and not body.get("text"):
        return "text is required"
    if kind == "picture":
        if not str(body.get("media") or "").startswith(("http://", "https://")):
            return "media must be a URL"
        if len(str(body.get("text") or "")) > 120:
            return "a picture's text is at most 120 characters"
    elif kind != "text":
        return f"type {kind!r} is not simulated"
    board = body.get("keyboard")
    if board is not None:
        buttons = board.get("Buttons") if isinstance(board, dict) else None
        if board.get("Type") != "keyboard" or not isinstance(buttons, list) or not 1 <= len(buttons) <= 24:
            return "a keyboard has Type keyboard and 1 to 24 Buttons"
        if not all(isinstance(b, dict) and b.get("ActionType") and b.get("ActionBody") for b in buttons):
            return "each button needs ActionType and ActionBody"
    if len(str(body.get("tracking_data") or "")) > 4096:
        return "tracking_data is at most 4096 characters"
    return None


def viber_signature(auth_token: str, body: bytes) -> str:
    return hmac.new(auth_token.encode(), body, hashlib.sha256).hexdigest()


class ViberSimulator(SocialSimulator):
    name: ClassVar[str] = "viber"
    errors: ClassVar[tuple[str, ...]] = (*ERRORS, *ASYNC_ERRORS)

    def __init__(self, auth_token: str = DEFAULT_AUTH_TOKEN, **options: Any) -> None:
        super().__init__(**options)
        self.auth_token = auth_token

    def gateway_settings(self) -> dict[str, Any]:
        """Setting overrides that point the gateway's Viber channel here."""
        return {
            "viber_auth_token": self.auth_token,
            "viber_sender_name": "Simulator",
            "viber_api_url": self.base_url,
        }

    def route(self, request: Request) -> Reply:
        if request.method != "POST":
            return Reply(405, {"status": 1, "status_message": "invalidUrl"})
        if not hmac.compare_digest(header_of(request, "X-Viber-Auth-Token"), self.auth_token):
            return Reply(200, {"status": 2, "status_message": "invalidAuthToken"})
        body = request.json() or {}
        if request.path == "/set_webhook":
            self.webhook_url = body.get("url") or None
            return Reply(200, {"status": 0, "status_message": "ok", "event_types": ["delivered", "seen"]})
        if request.path != "/send_message":
            return Reply(404, {"status": 1, "status_message": "invalidUrl"})
        if not body.get("receiver") or not (body.get("sender") or {}).get("name"):
            return Reply(200, {"status": 4, "status_message": "missingData"})
        if message_problem(body) is not None:
            return Reply(200, {"status": 3, "status_message": "badData"})
        receiver = str(body["receiver"])
        behaviour = self.outcome(receiver)
        if behaviour.kind == "error" and behaviour.error in ERRORS:
            status, message = ERRORS[behaviour.error]
            return Reply(200, {"status": status, "status_message": message, "chat_hostname": "SN-CHAT-01_"})
        entry = self.record(
            receiver=receiver,
            type=body["type"],
            text=body.get("text"),
            media=body.get("media"),
            keyboard=body.get("keyboard"),
            tracking_data=body.get("tracking_data"),
            sender=body["sender"]["name"],
        )
        token = _TOKEN_BASE + entry["id"]
        if behaviour.kind == "error":  # undelivered: accepted, then a failed callback
            self._receipt("failed", token, receiver, desc="the message could not be delivered to the device")
        elif behaviour.kind in ("deliver", "read"):
            self._receipt("delivered", token, receiver)
            if behaviour.kind == "read":
                self._receipt("seen", token, receiver)
        return Reply(
            200, {"status": 0, "status_message": "ok", "message_token": token, "chat_hostname": "SN-1"}
        )

    def _receipt(self, event: str, token: int, user_id: str, **extra: Any) -> None:
        payload = {"event": event, "timestamp": int(time.time() * 1000), "chat_hostname": "SN-1"}
        payload |= {"message_token": token, "user_id": user_id, **extra}
        if self.webhook_url:
            self.later(lambda: self.post_event(payload))

    # -- the users' side -------------------------------------------------------------------------

    def signed(self, body: bytes, query: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        return {"X-Viber-Content-Signature": viber_signature(self.auth_token, body)}, {}

    def post_event(self, payload: dict[str, Any], **forge: Any) -> int:
        return self.post_webhook(json.dumps(payload).encode(), **forge)

    def _user_event(self, event: str, **fields: Any) -> int:
        token = _EVENT_BASE + self.next_id()
        payload = {"event": event, "timestamp": int(time.time() * 1000), "message_token": token}
        return self.post_event({**payload, **fields})

    def subscribed(self, user_id: str) -> int:
        return self._user_event("subscribed", user={"id": user_id, "name": "Sim", "api_version": 10})

    def conversation_started(self, user_id: str) -> int:
        user = {"id": user_id, "name": "Sim", "api_version": 10}
        return self._user_event("conversation_started", type="open", user=user, subscribed=False)

    def unsubscribed(self, user_id: str) -> int:
        return self._user_event("unsubscribed", user_id=user_id)

    def user_message(self, user_id: str, text: str, tracking_data: str | None = None, **forge: Any) -> int:
        """The user writes; the `tracking_data` of the message they answer comes back with it."""
        message: dict[str, Any] = {"type": "text", "text": text}
        if tracking_data is not None:
            message["tracking_data"] = tracking_data
        payload = {
            "event": "message",
            "timestamp": int(time.time() * 1000),
            "message_token": _INBOUND_BASE + self.next_id(),
            "sender": {"id": user_id, "name": "Sim", "api_version": 10},
            "message": message,
        }
        return self.post_event(payload, **forge)

    def tap_button(self, user_id: str, sent: dict[str, Any], action_body: str) -> int:
        """The user taps a `reply` keyboard button of `sent` (a recorded send): its ActionBody is sent as
        their text, with the message's tracking_data."""
        buttons = (sent.get("keyboard") or {}).get("Buttons") or []
        if action_body not in [b.get("ActionBody") for b in buttons]:
            raise ValueError(f"no button with ActionBody {action_body!r}")
        return self.user_message(user_id, action_body, tracking_data=sent.get("tracking_data"))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local Viber REST bot API simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8813)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    parser.add_argument("--webhook-url", help="where callbacks go, e.g. http://127.0.0.1:8000/webhooks/viber")
    args = parser.parse_args(argv)
    serve(ViberSimulator(args.auth_token, host=args.host, port=args.port, webhook_url=args.webhook_url))


if __name__ == "__main__":
    main()
