"""WeChat Official Account: customer-service messages inside the 48-hour window, template messages
outside it; one webhook (`/webhooks/wechat`, XML) for messages, (un)subscriptions and template receipts.

The core tracks the window (48 h after the person's last message, at most 5 messages in it) and tells
the adapter through `OutgoingMessage.window_open`. Inside it a text goes as a customer-service message;
outside it, or when WeChat answers 45015/45047 anyway, the request's `wechat` template goes instead.
Access tokens are fetched with the AppID and AppSecret, cached until shortly before they expire, and
refreshed once when WeChat calls them invalid (40001) or expired (42001).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any, ClassVar

from gateway.channels.base import (
    AddressKind,
    IdentityEvent,
    Inbound,
    OutgoingMessage,
    SendResult,
    StatusUpdate,
    WebhookAnswer,
    WebhookBatch,
    WebhookRequest,
)
from gateway.channels.http_base import HttpChannel, missing_settings, same
from gateway.errors import ChannelError, ErrorKind
from gateway.settings import Settings

TOKEN_ERRORS = frozenset({40001, 42001})  # invalid or expired access token: refresh once
WECHAT_ERROR_KINDS: dict[int, tuple[ErrorKind, str]] = {
    45015: (ErrorKind.WINDOW_CLOSED, "outside the 48-hour window"),
    45047: (ErrorKind.WINDOW_CLOSED, "the window's 5 messages are used up"),
    43004: (ErrorKind.BLOCKED, "the person does not follow the account"),
    40003: (ErrorKind.INVALID_ADDRESS, "invalid openid"),
    45009: (ErrorKind.RATE_LIMITED, "API call quota reached"),
    45011: (ErrorKind.RATE_LIMITED, "API calls too frequent"),
    -1: (ErrorKind.TRANSIENT, "system busy"),
    40001: (ErrorKind.REJECTED, "access token refused after a refresh (configuration)"),
    42001: (ErrorKind.REJECTED, "access token expired again after a refresh (configuration)"),
    40013: (ErrorKind.REJECTED, "invalid AppID (configuration)"),
    40125: (ErrorKind.REJECTED, "invalid AppSecret (configuration)"),
    40164: (ErrorKind.REJECTED, "this server's IP is not whitelisted (configuration)"),
    40037: (ErrorKind.REJECTED, "invalid template_id"),
}
# TEMPLATESENDJOBFINISH statuses other than "success".
_TEMPLATE_FAILURES = {"failed:user block": ErrorKind.BLOCKED}


def classify_wechat_error(errcode: int, errmsg: str = "") -> ChannelError:
    """Map a WeChat `errcode` (HTTP is always 200) onto a ChannelError."""
    kind, meaning = WECHAT_ERROR_KINDS.get(errcode, (ErrorKind.REJECTED, "WeChat refused the request"))
    return ChannelError(kind, f"{meaning}: {errmsg}" if errmsg else meaning, code=str(errcode))


REPLAY_WINDOW = 300.0  # seconds a signed WeChat call stays acceptable


def wechat_signature(token: str, timestamp: str, nonce: str) -> str:
    """sha1 of the token, timestamp and nonce, sorted and joined."""
    return hashlib.sha1("".join(sorted([token, timestamp, nonce])).encode()).hexdigest()


def template_body(openid: str, template: dict[str, Any]) -> dict[str, Any]:
    """A template message from the request's `{"template_id", "data", "url"?}`; plain values are wrapped."""
    data = {
        key: value if isinstance(value, dict) else {"value": str(value)}
        for key, value in (template.get("data") or {}).items()
    }
    body: dict[str, Any] = {"touser": openid, "template_id": template.get("template_id"), "data": data}
    if template.get("url"):
        body["url"] = template["url"]
    return body


def parse_xml(body: bytes) -> dict[str, str]:
    """The flat XML WeChat posts, as tag -> text; DTDs (entity tricks) are refused."""
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise ValueError("XML with a DTD")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise ValueError(f"bad XML: {exc}") from None
    if root.tag != "xml":
        raise ValueError(f"WeChat posts <xml>, not <{root.tag}>")
    return {child.tag: (child.text or "").strip() for child in root}


class WeChatChannel(HttpChannel):
    """Messages from a WeChat Official Account to its followers."""

    name: ClassVar[str] = "wechat"
    address_kind: ClassVar[AddressKind] = "identity"
    window_seconds: ClassVar[float | None] = 48 * 3600.0
    window_message_limit: ClassVar[int | None] = 5
    supports_templates: ClassVar[bool] = True
    delivery_receipts: ClassVar[bool] = False
    max_text_length: ClassVar[int] = 2000
    default_rate: ClassVar[float] = 20.0
    status_webhook: ClassVar[str | None] = "wechat"
    inbound_webhook: ClassVar[str | None] = "wechat"
    webhook_ok: ClassVar[WebhookAnswer] = WebhookAnswer(200, "success")

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._token: str | None = None
        self._token_until = 0.0  # time.monotonic() after which the token is fetched again
        self._token_lock = asyncio.Lock()
        self.token_fetches = 0
        self._seen: dict[tuple[str, str], tuple[str, float]] = {}  # (timestamp, nonce) -> (body hash, when)
        self._seen_lock = threading.Lock()

    @classmethod
    def disabled_reason(cls, settings: Settings) -> str | None:
        return missing_settings(settings, "wechat_app_id", "wechat_app_secret", "wechat_token")

    def status_callback_url(self, attempt_id: str) -> str | None:
        return None  # template receipts go to the account's one server URL

    async def open(self) -> None:
        await super().open()
        self._token_lock = asyncio.Lock()  # bound to the dispatcher's loop

    async def send(self, message: OutgoingMessage) -> SendResult:
        if message.window_open and message.text:
            if len(message.text) > self.max_text_length:
                raise ChannelError(ErrorKind.REJECTED, f"text longer than {self.max_text_length} characters")
            body = {"touser": message.address, "msgtype": "text", "text": {"content": message.text}}
            try:
                await self._api("/cgi-bin/message/custom/send", body)
                # Customer-service sends return no id: the attempt's own id stands in for one.
                return SendResult(f"cs:{message.attempt_id}", "accepted")
            except ChannelError as exc:
                if exc.kind != ErrorKind.WINDOW_CLOSED or not message.template:
                    raise
        if message.template:
            data = await self._api(
                "/cgi-bin/message/template/send", template_body(message.address, message.template)
            )
            return SendResult(str(data.get("msgid") or f"tpl:{message.attempt_id}"), "accepted")
        raise ChannelError(ErrorKind.WINDOW_CLOSED, "outside the 48-hour window and no wechat template")

    async def _api(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST with the access token; a refused token is refreshed once and the call repeated."""
        token = await self._access_token(None)
        data = await self._post(path, token, body)
        if data.get("errcode") in TOKEN_ERRORS:
            token = await self._access_token(stale=token)
            data = await self._post(path, token, body)
        errcode = int(data.get("errcode") or 0)
        if errcode:
            raise classify_wechat_error(errcode, str(data.get("errmsg") or ""))
        return data

    async def _post(self, path: str, token: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"{self.settings.wechat_api_url}{path}"
        answer = await self.call("POST", url, json=body, params={"access_token": token})
        if answer.status >= 300 or not isinstance(answer.data, dict):
            raise ChannelError(ErrorKind.TRANSIENT, f"unexpected answer from WeChat (HTTP {answer.status})")
        return answer.data

    async def _access_token(self, stale: str | None) -> str:
        """The cached token; fetched when missing, about to expire, or equal to `stale` (refused)."""
        async with self._token_lock:
            if self._token and self._token != stale and time.monotonic() < self._token_until:
                return self._token
            answer = await self.call(
                "GET",
                f"{self.settings.wechat_api_url}/cgi-bin/token",
                params={
                    "grant_type": "client_credential",
                    "appid": self.settings.wechat_app_id or "",
                    "secret": self.settings.wechat_app_secret or "",
                },
            )
            data = answer.data if isinstance(answer.data, dict) else {}
            if not data.get("access_token"):
                errcode = int(data.get("errcode") or -1)
                raise classify_wechat_error(errcode, str(data.get("errmsg") or "no access token"))
            self.token_fetches += 1
            lifetime = float(data.get("expires_in") or 7200)
            self._token = str(data["access_token"])
            self._token_until = time.monotonic() + lifetime - min(300.0, lifetime / 10)
            return self._token

    def _signed(self, request: WebhookRequest) -> bool:
        token, query = self.settings.wechat_token, request.query
        if not token:
            return False
        expected = wechat_signature(token, query.get("timestamp", ""), query.get("nonce", ""))
        return same(expected, query.get("signature"))

    def handshake(self, hook: str, request: WebhookRequest) -> WebhookAnswer | None:
        """WeChat checks the server URL with a signed GET and expects `echostr` back."""
        if not self._signed(request):
            return WebhookAnswer(403, "signature mismatch")
        return WebhookAnswer(200, request.query.get("echostr", ""))

    def verify_webhook(self, request: WebhookRequest) -> bool:
        """The signature, a fresh timestamp, and a nonce not already used for another body.

        WeChat's plaintext-mode signature covers the token, timestamp and nonce but not the body, so a
        signature seen once could be reused on a forged body: only a fresh, unused (timestamp, nonce)
        pair is accepted with a body other than the one it first came with."""
        if not self._signed(request):
            return False
        try:
            stamp = int(request.query.get("timestamp", ""))
        except ValueError:
            return False
        now = time.time()
        if abs(now - stamp) > REPLAY_WINDOW:
            return False
        key = (request.query.get("timestamp", ""), request.query.get("nonce", ""))
        digest = hashlib.sha256(request.body).hexdigest()
        with self._seen_lock:
            self._seen = {k: v for k, v in self._seen.items() if now - v[1] <= REPLAY_WINDOW}
            first = self._seen.setdefault(key, (digest, now))
        return first[0] == digest

    def parse_webhook(self, hook: str, request: WebhookRequest) -> WebhookBatch:
        fields = parse_xml(request.body)
        batch = WebhookBatch()
        sender, kind = fields["FromUserName"], fields.get("MsgType")
        created = fields.get("CreateTime")
        at = datetime.fromtimestamp(int(created), UTC) if created else None
        if kind == "event":
            event = fields.get("Event", "")
            event_id = f"{sender}:{created}:{event}"
            if event == "subscribe":
                batch.identity.append(IdentityEvent(self.name, sender, "follow", event_id, "subscribed", at))
            elif event == "unsubscribe":
                batch.identity.append(IdentityEvent(self.name, sender, "block", event_id, "unsubscribed", at))
            elif event == "TEMPLATESENDJOBFINISH":
                batch.statuses.append(self._template_receipt(fields, at))
            return batch
        batch.inbound.append(
            Inbound(
                channel=self.name,
                sender=sender,
                text=fields.get("Content") if kind == "text" else None,
                provider_message_id=fields.get("MsgId") or f"{sender}:{created}",
                received_at=at,
                raw=dict(fields),
            )
        )
        return batch

    @staticmethod
    def _template_receipt(fields: dict[str, str], at: datetime | None) -> StatusUpdate:
        msg_id, status = fields.get("MsgID") or fields.get("MsgId") or "", fields.get("Status", "")
        if status == "success":
            return StatusUpdate(msg_id, "delivered", at=at)
        kind = _TEMPLATE_FAILURES.get(status, ErrorKind.TRANSIENT)
        return StatusUpdate(msg_id, "failed", error=ChannelError(kind, f"template message {status}"), at=at)
