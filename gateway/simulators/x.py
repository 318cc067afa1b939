"""A local stand-in for X API v2 direct messages (`POST /2/dm_conversations/with/{id}/messages`) that
also plays the Account Activity webhook: the CRC challenge and signed `direct_message_events`.

Recipients by convention (docs/simulators-social.md): `blocked-…` 403 (does not accept DMs from us),
`rate_limited-…` 429 with `x-rate-limit-reset` `rate_limit_delay` seconds ahead, `invalid-…` 400 on
`participant_id`, `server_error-…` 503. Run it alone with `python -m gateway.simulators.x --port 8814`.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import math
import re
import time
from typing import Any, ClassVar
from urllib.parse import urlencode

from gateway.simulators.http_stub import Reply, Request, bearer, post
from gateway.simulators.social import SocialSimulator, serve

DEFAULT_BEARER_TOKEN = "simulator-user-token"
DEFAULT_CONSUMER_SECRET = "simulator-consumer-secret"
BUSINESS_USER_ID = "1000000001"
_DM_PATH = re.compile(r"^/2/dm_conversations/with/(?P<participant>[^/]+)/messages$")


def problem(status: int, title: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"title": title, "type": "about:blank", "status": status, "detail": detail, **extra}


ERRORS: dict[str, tuple[int, dict[str, Any]]] = {
    "blocked": (
        403,
        problem(403, "Forbidden", "You are not permitted to send Direct Messages to this user."),
    ),
    "rate_limited": (429, problem(429, "Too Many Requests", "Too Many Requests")),
    "invalid": (
        400,
        {
            "title": "Invalid Request",
            "type": "https://api.twitter.com/2/problems/invalid-request",
            "detail": "One or more parameters to your request was invalid.",
            "errors": [{"parameters": {"participant_id": ["?"]}, "message": "participant_id is not valid"}],
        },
    ),
    "server_error": (503, problem(503, "Service Unavailable", "Service Unavailable")),
}


def x_signature(consumer_secret: str, payload: bytes) -> str:
    return (
        "sha256="
        + base64.b64encode(hmac.new(consumer_secret.encode(), payload, hashlib.sha256).digest()).decode()
    )


class XSimulator(SocialSimulator):
    name: ClassVar[str] = "x"
    errors: ClassVar[tuple[str, ...]] = tuple(ERRORS)

    def __init__(
        self,
        bearer_token: str = DEFAULT_BEARER_TOKEN,
        consumer_secret: str = DEFAULT_CONSUMER_SECRET,
        rate_limit_delay: float = 1.0,
        **options: Any,
    ) -> None:
        super().__init__(**options)
        self.bearer_token, self.consumer_secret = bearer_token, consumer_secret
        self.rate_limit_delay = rate_limit_delay
        self.rate_limit_resets: list[int] = []  # x-rate-limit-reset values handed out

    def gateway_settings(self) -> dict[str, Any]:
        """Setting overrides that point the gateway's X channel here."""
        return {
            "x_bearer_token": self.bearer_token,
            "x_consumer_secret": self.consumer_secret,
            "x_api_url": self.base_url,
        }

    def route(self, request: Request) -> Reply:
        match = _DM_PATH.match(request.path)
        if match is None or request.method != "POST":
            return Reply(404, problem(404, "Not Found Error", "Sorry, that page does not exist."))
        if not hmac.compare_digest(bearer(request), self.bearer_token):
            return Reply(401, problem(401, "Unauthorized", "Unauthorized"))
        text = (request.json() or {}).get("text")
        if not text:
            return Reply(400, problem(400, "Invalid Request", "text must be a non-empty string"))
        participant = match["participant"]
        behaviour = self.outcome(participant)
        limit = {"x-rate-limit-limit": "200", "x-rate-limit-remaining": "199"}
        if behaviour.kind == "error" and behaviour.error in ERRORS:
            status, body = ERRORS[behaviour.error]
            if status == 429:
                reset = math.ceil(time.time() + self.rate_limit_delay)
                with self.lock:
                    self.rate_limit_resets.append(reset)
                limit = {
                    "x-rate-limit-limit": "200",
                    "x-rate-limit-remaining": "0",
                    "x-rate-limit-reset": str(reset),
                }
            return Reply(status, body, limit, "application/problem+json")
        entry = self.record(participant_id=participant, text=text)
        data = {
            "dm_conversation_id": f"{BUSINESS_USER_ID}-{participant}",
            "dm_event_id": str(1_700_000 + entry["id"]),
        }
        return Reply(201, {"data": data}, limit)

    # -- the webhook side ------------------------------------------------------------------------

    def signed(self, body: bytes, query: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        return {"x-twitter-webhooks-signature": x_signature(self.consumer_secret, body)}, {}

    def crc_check(self, crc_token: str = "challenge-123") -> bool:
        """Make the CRC GET X makes; True when the gateway's `response_token` is right."""
        if not self.webhook_url:
            raise RuntimeError("no webhook_url (call connect())")
        status, body = post(f"{self.webhook_url}?{urlencode({'crc_token': crc_token})}", b"", {}, "GET")
        if status != 200:
            return False
        expected = x_signature(self.consumer_secret, crc_token.encode())
        return bool(json.loads(body).get("response_token") == expected)

    def user_message(self, sender_id: str, text: str, event_id: str | None = None, **forge: Any) -> int:
        """`sender_id` sends the business a DM."""
        event = {
            "type": "message_create",
            "id": event_id or str(9_000_000 + self.next_id()),
            "created_timestamp": str(int(time.time() * 1000)),
            "message_create": {
                "target": {"recipient_id": BUSINESS_USER_ID},
                "sender_id": sender_id,
                "message_data": {"text": text, "entities": {}},
            },
        }
        activity = {
            "for_user_id": BUSINESS_USER_ID,
            "direct_message_events": [event],
            "users": {sender_id: {"id": sender_id, "name": "Sim", "screen_name": "sim"}},
        }
        return self.post_webhook(json.dumps(activity).encode(), **forge)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Local X API v2 direct messages simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8814)
    parser.add_argument("--bearer-token", default=DEFAULT_BEARER_TOKEN)
    parser.add_argument("--consumer-secret", default=DEFAULT_CONSUMER_SECRET)
    parser.add_argument("--webhook-url", help="where activity goes, e.g. http://127.0.0.1:8000/webhooks/x")
    args = parser.parse_args(argv)
    sim = XSimulator(
        args.bearer_token, args.consumer_secret, host=args.host, port=args.port, webhook_url=args.webhook_url
    )
    serve(sim)


if __name__ == "__main__":
    main()
