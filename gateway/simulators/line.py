"""A local stand-in for the LINE Messaging API push endpoint that also plays the users: it posts their
messages, `follow` and `unfollow` events to the gateway, signed with `X-Line-Signature`.

Pushes are de-duplicated by `X-Line-Retry-Key` like LINE does: a key whose push was accepted answers
409 on every later try, and nothing is sent twice. Recipients by convention
(docs/simulators-social.md): `invalid-…` 400 on `to`, `rate_limited-…` 429, `quota-…` 429 monthly limit,
`server_error-…` 500 (nothing sent), `lost_answer-…` accepted and sent but answered 500, `blocked-…`
accepted with 200 but never shown (LINE hides blocks). Run it alone with
`python -m gateway.simulators.line --port 8812`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from typing import Any, ClassVar

from gateway.simulators.http_stub import Reply, Request, bearer, header_of
from gateway.simulators.social import SocialSimulator, serve

DEFAULT_CHANNEL_TOKEN = "simulator-channel-token"
DEFAULT_CHANNEL_SECRET = "simulator-channel-secret"
BOT_USER_ID = "U0000000000000000000000000000b0t"
ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "invalid": (
        400,
        {
            "message": "The request body has 1 error(s)",
            "details": [{"message": "invalid user ID", "property": "to"}],
        },
    ),
    "rate_limited": (429, {"message": "The API rate limit has been exceeded. Try again later."}),
    "quota": (429, {"message": "You have reached your monthly limit."}),
    "server_error": (500, {"message": "An error occurred in the server"}),
    "lost_answer": (500, {"message": "An error occurred in the server"}),
}


def line_signature(channel_secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(channel_secret.encode(), body, hashlib.sha256).digest()).decode()


def _is_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)) == text.lower()
    except ValueError:
        return False


class LineSimulator(SocialSimulator):
    name: ClassVar[str] = "line"
    errors: ClassVar[tuple[str, ...]] = tuple(ERRORS)

    def __init__(
        self,
        channel_token: str = DEFAULT_CHANNEL_TOKEN,
        channel_secret: str = DEFAULT_CHANNEL_SECRET,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.channel_token, self.channel_secret = channel_token, channel_secret
        self.retry_keys: dict[str, dict[str, Any]] = {}  # accepted key -> request id and sent messages
        self.pushes: list[tuple[str, str]] = []  # (to, X-Line-Retry-Key) of every authenticated push

    def gateway_settings(self) -> dict[str, Any]:
        """Setting overrides that point the gateway's LINE channel here."""
        return {
            "line_channel_token": self.channel_token,
            "line_channel_secret": self.channel_secret,
            "line_api_url": self.base_url,
        }

    def reset(self) -> None:
        super().reset()
        with self.lock:
            self.retry_keys.clear()
            self.pushes.clear()

    def delivered(self) -> list[dict[str, Any]]:
        """Accepted pushes the person actually sees (not those to someone who blocked the account)."""
        return [m for m in self.snapshot() if m["shown"]]

    def route(self, request: Request) -> Reply:
        if request.path != "/v2/bot/message/push" or request.method != "POST":
            return Reply(404, {"message": "Not found"})
        if not hmac.compare_digest(bearer(request), self.channel_token):
            message = (
                "Authentication failed. Confirm that the access token in the authorization header is valid."
            )
            return Reply(401, {"message": message})
        key = header_of(request, "X-Line-Retry-Key")
        if key and not _is_uuid(key):
            return Reply(400, {"message": "The value for the 'X-Line-Retry-Key' header is invalid"})
        body = request.json() or {}
        texts = [str(m.get("text") or "") for m in body.get("messages") or [] if isinstance(m, dict)]
        if not body.get("to") or not texts or not all(texts):
            return Reply(
                400, {"message": "The request body has 1 error(s)", "details": [{"property": "messages"}]}
            )
        with self.lock:
            self.pushes.append((str(body["to"]), key))
            accepted = self.retry_keys.get(key) if key else None
        if accepted is not None:
            headers = {
                "x-line-request-id": secrets.token_hex(8),
                "x-line-accepted-request-id": accepted["id"],
            }
            answer = {"message": "The retry key is already accepted", "sentMessages": accepted["sent"]}
            return Reply(409, answer, headers)
        return self._push(str(body["to"]), texts, key)

    def _push(self, to: str, texts: list[str], key: str) -> Reply:
        behaviour = self.outcome(to)
        request_id = secrets.token_hex(8)
        error = behaviour.error if behaviour.kind == "error" else None
        if error in ERRORS and error != "lost_answer":
            status, answer = ERRORS[error]
            return Reply(status, answer, {"x-line-request-id": request_id})
        sent = []
        for text in texts:
            entry = self.record(to=to, text=text, retry_key=key or None, shown=not to.startswith("blocked-"))
            sent.append({"id": str(10**17 + entry["id"]), "quoteToken": secrets.token_urlsafe(12)})
        if key:
            with self.lock:
                self.retry_keys[key] = {"id": request_id, "sent": sent}
        if error == "lost_answer":  # accepted and sent, but the answer says otherwise
            return Reply(500, ERRORS[error][1], {"x-line-request-id": request_id})
        return Reply(200, {"sentMessages": sent}, {"x-line-request-id": request_id})

    # -- the users' side: webhook events ---------------------------------------------------------

    def signed(self, body: bytes, query: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        return {"X-Line-Signature": line_signature(self.channel_secret, body)}, {}

    def post_events(self, events: list[dict[str, Any]], **forge: Any) -> int:
        body = json.dumps({"destination": BOT_USER_ID, "events": events}).encode()
        return self.post_webhook(body, **forge)

    def event(self, kind: str, user_id: str, **fields: Any) -> dict[str, Any]:
        """One webhook event from `user_id`, with LINE's common fields."""
        return {
            "type": kind,
            "mode": "active",
            "timestamp": int(time.time() * 1000),
            "source": {"type": "user", "userId": user_id},
            "webhookEventId": "01" + secrets.token_hex(12).upper(),
            "deliveryContext": {"isRedelivery": False},
            **fields,
        }

    def follow(self, user_id: str, **forge: Any) -> int:
        """The user adds the account as a friend (or unblocks it)."""
        return self.post_events([self.event("follow", user_id, replyToken=secrets.token_hex(16))], **forge)

    def unfollow(self, user_id: str, **forge: Any) -> int:
        """The user blocks the account."""
        return self.post_events([self.event("unfollow", user_id)], **forge)

    def user_message(self, user_id: str, text: str, **forge: Any) -> int:
        message = {"type": "text", "id": str(self.next_id() + 5 * 10**17), "text": text}
        event = self.event("message", user_id, message=message, replyToken=secrets.token_hex(16))
        return self.post_events([event], **forge)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local LINE Messaging API simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8812)
    parser.add_argument("--channel-token", default=DEFAULT_CHANNEL_TOKEN)
    parser.add_argument("--channel-secret", default=DEFAULT_CHANNEL_SECRET)
    parser.add_argument("--webhook-url", help="where events go, e.g. http://127.0.0.1:8000/webhooks/line")
    args = parser.parse_args(argv)
    sim = LineSimulator(
        args.channel_token, args.channel_secret, host=args.host, port=args.port, webhook_url=args.webhook_url
    )
    serve(sim)


if __name__ == "__main__":
    main()
