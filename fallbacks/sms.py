"""SMS through Twilio Programmable Messaging, with the official SDK's async client.

Twilio errors (synchronous `TwilioRestException`s and the `ErrorCode` of status callbacks) map onto
the gateway's error kinds through one table, `classify_twilio_error`, following PROVIDERS.md.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import ClassVar
from urllib.parse import urlencode, urlsplit, urlunsplit

from twilio.base import values
from twilio.base.exceptions import TwilioException
from twilio.http.async_http_client import AsyncTwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from fallbacks.http1 import Http1Client
from gateway.adapt import ContentSupport, TextPolicy, sms_segments
from gateway.channels.base import (
    AddressKind,
    Channel,
    Inbound,
    OutgoingMessage,
    ProviderStatus,
    SendResult,
    StatusUpdate,
    WebhookAnswer,
    WebhookRequest,
)
from gateway.errors import ChannelError, ErrorKind
from gateway.settings import Settings

# Twilio accepts ValidityPeriod between 1 second and 10 hours.
MIN_VALIDITY_PERIOD = 1
MAX_VALIDITY_PERIOD = 36000
SIGNATURE_HEADER = "X-Twilio-Signature"

# Twilio error code -> (kind, what it means), exactly as PROVIDERS.md's Twilio table.
TWILIO_ERROR_KINDS: dict[int, tuple[ErrorKind, str]] = {
    21211: (ErrorKind.INVALID_ADDRESS, "invalid To number"),
    21614: (ErrorKind.UNREACHABLE, "To is not a mobile number"),
    21408: (ErrorKind.REJECTED, "sending to this region is not enabled"),
    21610: (ErrorKind.OPTED_OUT, "recipient replied STOP and opted out of SMS from this sender"),
    30003: (ErrorKind.TRANSIENT, "unreachable handset"),
    30004: (ErrorKind.BLOCKED, "message blocked"),
    30005: (ErrorKind.UNREACHABLE, "unknown handset"),
    30006: (ErrorKind.UNREACHABLE, "landline or unreachable carrier"),
    30007: (ErrorKind.BLOCKED, "filtered by the carrier"),
    30008: (ErrorKind.TRANSIENT, "unknown error"),
    63003: (ErrorKind.UNREACHABLE, "channel could not find the To address"),
    63016: (ErrorKind.WINDOW_CLOSED, "outside the WhatsApp customer-care window"),
    63024: (ErrorKind.UNREACHABLE, "invalid recipient"),
    63014: (ErrorKind.BLOCKED, "blocked by the user"),
    20429: (ErrorKind.RATE_LIMITED, "too many requests"),
    63018: (ErrorKind.RATE_LIMITED, "rate limit exceeded"),
}

# MessageStatus values that mean progress, by the receipt they amount to.
_PROGRESS: dict[str, ProviderStatus] = {
    "queued": "accepted",
    "accepted": "accepted",
    "sending": "accepted",
    "scheduled": "accepted",
    "sent": "sent",
    "delivered": "delivered",
    "read": "read",
}


def classify_twilio_error(code: int | None, http_status: int | None, detail: str) -> ChannelError:
    """Map a Twilio error code (or, for unknown codes, the HTTP status) onto a ChannelError."""
    known = TWILIO_ERROR_KINDS.get(code) if code is not None else None
    code_text = str(code) if code is not None else None
    if known is not None:
        kind, meaning = known
        return ChannelError(kind, f"{meaning}: {detail}" if detail else meaning, code=code_text)
    if http_status == 429:
        kind = ErrorKind.RATE_LIMITED
    elif http_status is None or http_status >= 500:
        # No status means a callback's failure or a broken answer: worth retrying.
        kind = ErrorKind.TRANSIENT
    else:
        kind = ErrorKind.REJECTED
    return ChannelError(kind, detail or "Twilio reported an error", code=code_text)


def validity_period(expires_at: datetime | None, now: datetime | None = None) -> int | None:
    """Seconds Twilio may keep the message queued (clamped to 1..36000); None without expiry."""
    if expires_at is None:
        return None
    if expires_at.tzinfo is None:
        # Stored times are naive UTC.
        expires_at = expires_at.replace(tzinfo=UTC)
    seconds = (expires_at - (now or datetime.now(UTC))).total_seconds()
    return max(MIN_VALIDITY_PERIOD, min(MAX_VALIDITY_PERIOD, int(seconds)))


class _BaseUrlHttpClient(AsyncTwilioHttpClient):  # type: ignore[misc]  # twilio has no type hints
    """The SDK's async HTTP client, sending every request to the configured base URL over `Http1Client`.

    The SDK builds each request and reads each answer; this makes the call itself, on keep-alive connections
    of its own (fallbacks/http1.py: aiohttp cost about 100 µs of CPU a call more). The SDK's own `request`
    formatted a dozen log lines per call whether or not they were logged, built a timeout object per call, and
    kept copies of the last request and answer; and the form is encoded here.
    """

    def __init__(self, base_url: str, timeout: float | None) -> None:
        super().__init__(timeout=timeout, pool_connections=False)  # no aiohttp session: ours instead
        self._base = urlsplit(base_url)
        self._origin = Http1Client(urlunsplit((self._base.scheme, self._base.netloc, "", "", "")))
        self._authorization: dict[tuple[str, str], str] = {}

    async def request(
        self,
        method: str,
        url: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        """Send to the base URL with the client's timeout (or the call's) and Basic credentials; a redirect
        is answered as it is, never followed (Twilio's API does not redirect)."""
        headers = dict(headers or {})
        if auth is not None:
            headers["Authorization"] = self._basic(auth)
        if self.logger.isEnabledFor(logging.INFO):
            self.log_request({"method": method.upper(), "url": url, "params": params, "headers": headers})
        target = self.target(url, params)
        body = urlencode(_form_fields(data)).encode() if data is not None else None  # the SDK set its type
        async with asyncio.timeout(self.timeout if timeout is None else timeout):
            answer = await self._origin.request(method.upper(), target, headers, body)
        if self.logger.isEnabledFor(logging.INFO):
            self.log_response(answer.status, answer)
        return Response(answer.status, answer.body.decode("utf-8", "replace"), answer.headers)

    async def close(self) -> None:
        await self._origin.close()

    def _basic(self, auth: tuple[str, str]) -> str:
        value = self._authorization.get(auth)
        if value is None:
            value = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self._authorization = {auth: value}
        return value

    def target(self, url: str, params: dict[str, object] | None = None) -> str:
        """The request target (path and query) on the base URL for an SDK URL, whatever Twilio host, region
        or edge it names, and its query parameters."""
        parts = urlsplit(url)
        path = self._base.path.rstrip("/") + parts.path
        query = "&".join(q for q in (parts.query, urlencode(_form_fields(params or {}))) if q)
        return (path or "/") + (f"?{query}" if query else "")


def _form_fields(data: dict[str, object]) -> list[tuple[str, object]]:
    """The form as (name, value) pairs: a list value (MediaUrl) repeats its name, as Twilio expects."""
    pairs: list[tuple[str, object]] = []
    for name, value in data.items():
        pairs += [(name, item) for item in value] if isinstance(value, list) else [(name, value)]
    return pairs


# Images an MMS carries on every US and Canadian carrier (Twilio: "accepted content types").
MMS_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif"})


def _header(headers: dict[str, str], name: str) -> str | None:
    """Look a header up case-insensitively."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def _int_or_none(text: str | None) -> int | None:
    """Parse a form's ErrorCode; empty, zero or garbage means no code."""
    try:
        return int(text or "0") or None
    except ValueError:
        return None


def _error_from_exception(exc: TwilioException) -> ChannelError:
    """Classify a TwilioRestException (or the SDK's RFC 9457 TwilioServiceException)."""
    status = getattr(exc, "status", None)
    code = getattr(exc, "code", None)
    if code == status:
        # Without a code in the body the SDK uses the HTTP status as the code; it is no Twilio code.
        code = None
    detail = getattr(exc, "msg", None) or getattr(exc, "detail", None) or type(exc).__name__
    return classify_twilio_error(code, status, str(detail))


class SmsChannel(Channel):
    """Text messages to mobile numbers through Twilio."""

    name: ClassVar[str] = "sms"
    address_kind: ClassVar[AddressKind] = "phone"
    delivery_receipts: ClassVar[bool] = True
    read_receipts: ClassVar[bool] = False
    # Twilio's limit for one message's Body; longer texts are cut (links and numbered lists kept).
    max_text_length: ClassVar[int] = 1600
    text_policy: ClassVar[TextPolicy] = "truncate"
    default_rate: ClassVar[float] = 10.0
    status_webhook: ClassVar[str | None] = "twilio/status"
    inbound_webhook: ClassVar[str | None] = "twilio/inbound"
    webhook_ok: ClassVar[WebhookAnswer] = WebhookAnswer(200, "<Response/>", "text/xml")  # empty TwiML
    # The carrier-standard keywords (CTIA); Twilio honours the same words on its side.
    opt_out_keywords: ClassVar[frozenset[str]] = frozenset(
        {"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT", "REVOKE", "OPTOUT"}
    )
    opt_in_keywords: ClassVar[frozenset[str]] = frozenset({"START", "UNSTOP", "YES"})

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._http: _BaseUrlHttpClient | None = None
        self._client: Client | None = None

    @classmethod
    def disabled_reason(cls, settings: Settings) -> str | None:
        """Name the missing GATEWAY_TWILIO_* variables, or None when SMS can be sent."""
        missing = [
            Settings.env_name(name)
            for name in ("twilio_account_sid", "twilio_auth_token")
            if not getattr(settings, name)
        ]
        if not (settings.twilio_from or settings.twilio_messaging_service_sid):
            missing.append("GATEWAY_TWILIO_FROM (or GATEWAY_TWILIO_MESSAGING_SERVICE_SID)")
        if not missing:
            return None
        return ", ".join(missing) + (" is not set" if len(missing) == 1 else " are not set")

    def content_support(self) -> ContentSupport:
        """Plain SMS shows no media; with GATEWAY_TWILIO_MMS=on images go as MMS (MediaUrl)."""
        support = super().content_support()
        if self.settings.twilio_mms == "on":
            return replace(support, media_types=MMS_IMAGE_TYPES)
        return support

    async def open(self) -> None:
        """Create the SDK client and its HTTP client in the running loop."""
        # A zero timeout means none; the SDK rejects a timeout of 0.
        timeout = self.settings.provider_timeout or None
        self._http = _BaseUrlHttpClient(self.settings.twilio_base_url, timeout)
        # The SDK reads os.environ when given an empty environment (TWILIO_REGION/EDGE move hosts);
        # _BaseUrlHttpClient.target undoes any such host change.
        self._client = Client(
            self.settings.twilio_account_sid,
            self.settings.twilio_auth_token,
            http_client=self._http,
            environment={},
        )
        # The SDK loads its Messages resource on first use, blocking the event loop for ~0.1 s; do it now.
        assert self._client.messages is not None

    async def close(self) -> None:
        """Close the HTTP client's connections."""
        http, self._http, self._client = self._http, None, None
        if http is not None:
            await http.close()

    async def send(self, message: OutgoingMessage) -> SendResult:
        """Create a Twilio Message; raise ChannelError for every failure."""
        if self._client is None:
            raise RuntimeError("SmsChannel.send called before open()")
        if not message.text:
            raise ChannelError(ErrorKind.REJECTED, "an SMS needs a text")
        # A configured From wins; the messaging service is the alternative, never both.
        service_sid = None if self.settings.twilio_from else self.settings.twilio_messaging_service_sid
        try:
            created = await self._client.messages.create_async(
                to=message.address,
                from_=self.settings.twilio_from,
                messaging_service_sid=service_sid,
                body=message.text,
                media_url=[m.url for m in message.media] or values.unset,
                status_callback=message.status_callback_url,
                validity_period=validity_period(message.expires_at),
            )
        except TwilioException as exc:
            raise _error_from_exception(exc) from exc
        except TimeoutError as exc:
            detail = f"Twilio did not answer within {self.settings.provider_timeout:g}s"
            raise ChannelError(ErrorKind.TRANSIENT, detail) from exc
        except OSError as exc:  # fallbacks/http1.py raises OSErrors
            detail = f"cannot reach Twilio at {self.settings.twilio_base_url}: {exc}"
            raise ChannelError(ErrorKind.TRANSIENT, detail) from exc
        except ValueError as exc:
            # The SDK could not decode the answer (not JSON): a proxy or an outage page.
            detail = f"unreadable answer from Twilio: {exc}"
            raise ChannelError(ErrorKind.TRANSIENT, detail) from exc
        segments = sms_segments(message.text).count
        return SendResult(provider_message_id=str(created.sid), status="accepted", segments=segments)

    def verify_webhook(self, request: WebhookRequest) -> bool:
        """Check X-Twilio-Signature against the public URL and the form."""
        token = self.settings.twilio_auth_token
        signature = _header(request.headers, SIGNATURE_HEADER)
        if not token or not signature:
            return False
        return bool(RequestValidator(token).validate(request.url, request.form, signature))

    def parse_inbound_webhook(self, request: WebhookRequest) -> list[Inbound]:
        """An incoming SMS (or WhatsApp message through Twilio, from `whatsapp:+…`)."""
        sid = request.form.get("MessageSid") or request.form.get("SmsSid")
        sender = request.form.get("From")
        if not sid or not sender:
            raise ValueError("a Twilio inbound message names its MessageSid and From")
        channel = "sms"
        if sender.startswith("whatsapp:"):
            channel, sender = "whatsapp", sender.removeprefix("whatsapp:")
        media = [
            request.form[f"MediaUrl{i}"]
            for i in range(_int_or_none(request.form.get("NumMedia")) or 0)
            if f"MediaUrl{i}" in request.form
        ]
        return [
            Inbound(
                channel=channel,
                sender=sender,
                text=request.form.get("Body"),
                provider_message_id=sid,
                raw={**request.form, "media": media},
            )
        ]

    def parse_status_webhook(self, request: WebhookRequest) -> list[StatusUpdate]:
        """Turn a status callback into at most one update; unknown statuses give none."""
        sid = request.form.get("MessageSid")
        status = (request.form.get("MessageStatus") or "").lower()
        attempt_id = request.query.get("attempt")
        if not sid:
            raise ValueError("a Twilio status callback names its MessageSid")
        if status in _PROGRESS:
            return [StatusUpdate(sid, _PROGRESS[status], attempt_id=attempt_id)]
        if status == "canceled":
            error = ChannelError(ErrorKind.REJECTED, "Twilio canceled the message before sending it")
        elif status in ("undelivered", "failed"):
            code = _int_or_none(request.form.get("ErrorCode"))
            error = classify_twilio_error(code, None, f"message {status}")
        else:
            return []
        return [StatusUpdate(sid, "failed", error=error, attempt_id=attempt_id)]
