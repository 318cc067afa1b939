"""A local stand-in for the LINE Messaging API push endpoint that also plays the users: it posts their
messages, `follow` and `unfollow` events to the gateway, signed with `X-Line-Signature`.

Pushes are de-duplicated by `X-Line-Retry-Key` like LINE does: a key whose push was accepted answers
409 on every later try, and nothing is sent twice. Recipients by convention
(docs/simulators-social.md): `invalid-…` 400 on `to`, `rate_limited-…` 429, `quota-…` 429 monthly limit,
`server_error-…` 500 (nothing sent), `lost_answer-…` accepted and sent but answered 500, `blocked-…`
accepted with 200 but never shown (LINE hides blocks). Run it alone with
`python -m gateway.simulators.line --port 8812`.

The reply endpoint (`POST /v2/bot/message/reply`) takes the `replyToken` of a message, postback or follow
event this simulator posted: once, within `reply_token_validity` seconds (LINE: one minute) of the event's
timestamp.
A token that is unknown, used or expired answers 400 `{"message": "Invalid reply token"}` as LINE does.
Every accepted message records `via` ("push" or "reply").
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


def messages_problem(messages: list[dict[str, Any]]) -> str | None:
    """Why a push's or reply's `messages` are invalid (1-5 text or image messages; quick replies of
    at most 13 actions with labels of at most 20 characters), or None."""
    if not 1 <= len(messages) <= 5:
        return "messages takes 1 to 5 messages"
    for message in messages:
        kind = message.get("type")
        if kind == "text" and not message.get("text"):
            return "a text message needs a text"
        if kind == "image" and not all(
            str(message.get(url) or "").startswith("https://")
            for url in ("originalContentUrl", "previewImageUrl")
        ):
            return "an image needs HTTPS originalContentUrl and previewImageUrl"
        if kind not in ("text", "image"):
            return f"type {kind!r} is not simulated"
        items = (message.get("quickReply") or {}).get("items")
        if items is not None and (not isinstance(items, list) or not 1 <= len(items) <= 13):
            return "quickReply.items takes 1 to 13 items"
        for item in items or []:
            action = item.get("action") if isinstance(item, dict) else None
            if not isinstance(action, dict) or not action.get("label") or len(str(action["label"])) > 20:
                return "a quick reply action needs a label of at most 20 characters"
            if action.get("type") == "postback" and not action.get("data"):
                return "a postback action needs data"
    return None


def recorded(message: dict[str, Any]) -> dict[str, Any]:
    """What the simulator keeps of one accepted message."""
    return {
        "type": message.get("type"),
        "text": message.get("text"),
        "image": message.get("originalContentUrl"),
        "quick_reply": [i["action"] for i in (message.get("quickReply") or {}).get("items") or []],
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
        self.reply_token_validity = 60.0
        # replyToken -> (user id, unix time it expires); removed once used
        self.reply_tokens: dict[str, tuple[str, float]] = {}
        self.reply_calls: list[tuple[str, int]] = []  # (replyToken, HTTP status) of every reply request
        self.last_reply_token: str | None = None  # of the latest user message (tests use it up by hand)

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
            self.reply_tokens.clear()
            self.reply_calls.clear()

    def delivered(self) -> list[dict[str, Any]]:
        """Accepted pushes the person actually sees (not those to someone who blocked the account)."""
        return [m for m in self.snapshot() if m["shown"]]

    def route(self, request: Request) -> Reply:
        paths = ("/v2/bot/message/push", "/v2/bot/message/reply")
        if request.path not in paths or request.method != "POST":
            return Reply(404, {"message": "Not found"})
        if not hmac.compare_digest(bearer(request), self.channel_token):
            message = (
                "Authentication failed. Confirm that the access token in the authorization header is valid."
            )
            return Reply(401, {"message": message})
        if request.path == "/v2/bot/message/reply":
            return self._reply(request.json() or {})
        key = header_of(request, "X-Line-Retry-Key")
        if key and not _is_uuid(key):
            return Reply(400, {"message": "The value for the 'X-Line-Retry-Key' header is invalid"})
        body = request.json() or {}
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        if not body.get("to") or messages_problem(messages) is not None:
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
        return self._push(str(body["to"]), messages, key)

    def _push(self, to: str, messages: list[dict[str, Any]], key: str) -> Reply:
        behaviour = self.outcome(to)
        request_id = secrets.token_hex(8)
        error = behaviour.error if behaviour.kind == "error" else None
        if error in ERRORS and error != "lost_answer":
            status, answer = ERRORS[error]
            return Reply(status, answer, {"x-line-request-id": request_id})
        sent = []
        for message in messages:
            shown = not to.startswith("blocked-")
            entry = self.record(to=to, retry_key=key or None, shown=shown, via="push", **recorded(message))
            sent.append({"id": str(10**17 + entry["id"]), "quoteToken": secrets.token_urlsafe(12)})
        if key:
            with self.lock:
                self.retry_keys[key] = {"id": request_id, "sent": sent}
        if error == "lost_answer":  # accepted and sent, but the answer says otherwise
            return Reply(500, ERRORS[error][1], {"x-line-request-id": request_id})
        return Reply(200, {"sentMessages": sent}, {"x-line-request-id": request_id})

    def _reply(self, body: dict[str, Any]) -> Reply:
        """Answer an event with its reply token: once, while it is valid (free of charge at LINE)."""
        token = str(body.get("replyToken") or "")
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        if messages_problem(messages) is not None:
            return Reply(
                400, {"message": "The request body has 1 error(s)", "details": [{"property": "messages"}]}
            )
        request_id = secrets.token_hex(8)
        with self.lock:
            issued = self.reply_tokens.pop(token, None)
            valid = issued is not None and issued[1] > time.time()
            self.reply_calls.append((token, 200 if valid else 400))
        if issued is None or not valid:
            return Reply(400, {"message": "Invalid reply token"}, {"x-line-request-id": request_id})
        to = issued[0]
        sent = []
        for message in messages:
            shown = not to.startswith("blocked-")
            entry = self.record(to=to, retry_key=None, shown=shown, via="reply", **recorded(message))
            sent.append({"id": str(10**17 + entry["id"]), "quoteToken": secrets.token_urlsafe(12)})
        return Reply(200, {"sentMessages": sent}, {"x-line-request-id": request_id})

    def issue_reply_token(self, user_id: str, timestamp_ms: int) -> str:
        """A new reply token for an event of `user_id` at `timestamp_ms`, valid `reply_token_validity`."""
        token = secrets.token_hex(16)
        with self.lock:
            self.reply_tokens[token] = (user_id, timestamp_ms / 1000 + self.reply_token_validity)
        return token

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
        event = self.event("follow", user_id)
        event["replyToken"] = self.issue_reply_token(user_id, event["timestamp"])
        return self.post_events([event], **forge)

    def unfollow(self, user_id: str, **forge: Any) -> int:
        """The user blocks the account."""
        return self.post_events([self.event("unfollow", user_id)], **forge)

    def postback(self, user_id: str, data: str) -> int:
        """The user taps a postback action (a quick reply button): a `postback` event with its data."""
        event = self.event("postback", user_id, postback={"data": data})
        event["replyToken"] = self.issue_reply_token(user_id, event["timestamp"])
        return self.post_events([event])

    def user_message(self, user_id: str, text: str, age: float = 0.0, **forge: Any) -> int:
        """The user writes; `age` seconds back dates the event (its reply token expires that much sooner)."""
        message = {"type": "text", "id": str(self.next_id() + 5 * 10**17), "text": text}
        event = self.event("message", user_id, message=message)
        event["timestamp"] -= int(age * 1000)
        event["replyToken"] = self.issue_reply_token(user_id, event["timestamp"])
        self.last_reply_token = event["replyToken"]
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
