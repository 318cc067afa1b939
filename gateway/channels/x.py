"""X (Twitter) direct messages through API v2; DMs come in on the Account Activity webhook (`/webhooks/x`).

Errors are RFC 7807 problem objects. 403 means the person does not accept DMs from us (blocked); 429
carries `x-rate-limit-reset` (Unix seconds), from which the retry delay is computed. X answers the CRC
challenge (`GET /webhooks/x?crc_token=…`) with an HMAC of the token, keyed with the consumer secret.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

from gateway.channels.base import (
    AddressKind,
    Inbound,
    OutgoingMessage,
    SendResult,
    WebhookAnswer,
    WebhookBatch,
    WebhookRequest,
)
from gateway.channels.http_base import (
    HttpChannel,
    b64_hmac_sha256,
    check_shape,
    header,
    json_body,
    missing_settings,
    same,
)
from gateway.errors import ChannelError, ErrorKind
from gateway.settings import Settings

SIGNATURE_HEADER = "x-twitter-webhooks-signature"


def crc_response(consumer_secret: str, crc_token: str) -> str:
    """The `response_token` answering a CRC challenge."""
    return "sha256=" + b64_hmac_sha256(consumer_secret, crc_token.encode())


def seconds_until_reset(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds until `x-rate-limit-reset` (a Unix time); None without the header."""
    reset = header(headers, "x-rate-limit-reset")
    try:
        return max(0.0, float(reset) - (time.time() if now is None else now)) if reset else None
    except ValueError:
        return None


def classify_x_error(
    status: int, problem: dict[str, Any] | None, retry_after: float | None = None
) -> ChannelError:
    """Map an X API v2 error (`{"title", "type", "detail", "status"}`) onto a ChannelError."""
    problem = problem or {}
    detail = str(problem.get("detail") or problem.get("title") or f"HTTP {status}")
    code = str(status)
    if status == 403:
        return ChannelError(ErrorKind.BLOCKED, detail, code)
    if status == 429:
        return ChannelError(ErrorKind.RATE_LIMITED, detail, code, retry_after=retry_after)
    if status >= 500:
        return ChannelError(ErrorKind.TRANSIENT, detail, code)
    errors = problem.get("errors") or []
    if status == 404 or any(
        "participant_id" in (e.get("parameters") or {}) for e in errors if isinstance(e, dict)
    ):
        return ChannelError(ErrorKind.INVALID_ADDRESS, detail, code)
    return ChannelError(ErrorKind.REJECTED, detail, code)  # 400 bad request, 401 token refused


class XChannel(HttpChannel):
    """Direct messages from the business's X account."""

    name: ClassVar[str] = "x"
    address_kind: ClassVar[AddressKind] = "identity"
    delivery_receipts: ClassVar[bool] = False
    max_text_length: ClassVar[int] = 10000
    default_rate: ClassVar[float] = 1.0
    inbound_webhook: ClassVar[str | None] = "x"

    @classmethod
    def disabled_reason(cls, settings: Settings) -> str | None:
        return missing_settings(settings, "x_bearer_token", "x_consumer_secret")

    def default_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.x_bearer_token}"}

    async def send(self, message: OutgoingMessage) -> SendResult:
        if not message.text:
            raise ChannelError(ErrorKind.REJECTED, "an X direct message needs a text")
        if len(message.text) > self.max_text_length:
            raise ChannelError(ErrorKind.REJECTED, f"text longer than {self.max_text_length} characters")
        url = f"{self.settings.x_api_url}/2/dm_conversations/with/{message.address}/messages"
        answer = await self.call("POST", url, json={"text": message.text})
        data = answer.data if isinstance(answer.data, dict) else None
        if 200 <= answer.status < 300 and data and isinstance(data.get("data"), dict):
            return SendResult(str(data["data"]["dm_event_id"]), "accepted")
        if 200 <= answer.status < 300:
            raise ChannelError(ErrorKind.TRANSIENT, "X accepted the DM without saying its id")
        raise classify_x_error(answer.status, data, seconds_until_reset(answer.headers))

    def handshake(self, hook: str, request: WebhookRequest) -> WebhookAnswer | None:
        """The CRC check X makes when the webhook is registered, and hourly after that."""
        secret, token = self.settings.x_consumer_secret, request.query.get("crc_token")
        if not secret:
            return WebhookAnswer(403, "the X consumer secret is not configured")
        if not token:
            return WebhookAnswer(400, "crc_token is missing")
        body = json.dumps({"response_token": crc_response(secret, token)})
        return WebhookAnswer(200, body, "application/json")

    def verify_webhook(self, request: WebhookRequest) -> bool:
        secret = self.settings.x_consumer_secret
        given = header(request.headers, SIGNATURE_HEADER)
        return secret is not None and same("sha256=" + b64_hmac_sha256(secret, request.body), given)

    def parse_webhook(self, hook: str, request: WebhookRequest) -> WebhookBatch:
        """Direct messages received by the business's account; its own sent DMs are skipped."""
        activity = json_body(request.body)
        check_shape(activity, {"direct_message_events": list, "users": dict, "for_user_id": str})
        ours = str(activity.get("for_user_id", ""))
        batch = WebhookBatch()
        for event in activity.get("direct_message_events") or []:
            create = event.get("message_create") or {}
            sender = str(create.get("sender_id", ""))
            if event.get("type") != "message_create" or not sender or sender == ours:
                continue
            millis = event.get("created_timestamp")
            batch.inbound.append(
                Inbound(
                    channel=self.name,
                    sender=sender,
                    text=(create.get("message_data") or {}).get("text"),
                    provider_message_id=str(event["id"]),
                    received_at=datetime.fromtimestamp(int(millis) / 1000, UTC) if millis else None,
                    raw=event,
                )
            )
        return batch
