"""What WhatsApp's Cloud API, Messenger and Instagram share: Meta's Graph API and Meta's webhooks.

- `GraphClient` posts JSON with an access token over one aiohttp session. A Graph error body
  (`{"error": {"code", "error_subcode", "message", ...}}`) becomes a `GraphCallError`, which each adapter
  classifies by code and subcode with its own table (`classify_graph_error`), never by HTTP status.
- `signature_valid` checks `X-Hub-Signature-256: sha256=<hex HMAC-SHA256(app secret, raw body)>`.
- `handshake` answers the `hub.challenge` subscription check when `hub.verify_token` is
  GATEWAY_META_VERIFY_TOKEN, and refuses it with 403 otherwise.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

import aiohttp

from gateway.channels.base import WebhookAnswer, WebhookRequest
from gateway.errors import ChannelError, ErrorKind

SIGNATURE_HEADER = "X-Hub-Signature-256"
log = logging.getLogger("gateway.channels.meta")


class Meaning(NamedTuple):
    """What a Graph error code means for the gateway."""

    kind: ErrorKind
    text: str
    # An operator must fix something (token, permissions, allowed numbers): logged as an alert.
    config: bool = False


# (code, subcode) -> meaning; a subcode of None matches any subcode of that code.
ErrorTable = Mapping[tuple[int, int | None], Meaning]


def classify_graph_error(
    table: ErrorTable,
    code: int | None,
    subcode: int | None,
    detail: str,
    http_status: int | None,
    channel: str,
) -> ChannelError:
    """Map a Graph error onto a ChannelError by code (and subcode); HTTP status only for unknown codes."""
    meaning = None
    if code is not None:
        meaning = table.get((code, subcode)) or table.get((code, None))
    code_text = None if code is None else (f"{code}/{subcode}" if subcode else str(code))
    if meaning is not None:
        if meaning.config:
            log.error("%s needs an operator: %s (code %s): %s", channel, meaning.text, code_text, detail)
        text = f"{meaning.text}: {detail}" if detail else meaning.text
        return ChannelError(meaning.kind, text, code=code_text)
    if http_status == 429:
        kind = ErrorKind.RATE_LIMITED
    elif http_status is None or http_status >= 500:
        # A status webhook's unknown failure, or an outage: worth retrying.
        kind = ErrorKind.TRANSIENT
    else:
        kind = ErrorKind.REJECTED
    return ChannelError(kind, detail or "Meta reported an error", code=code_text)


def as_int(value: Any) -> int | None:
    """An integer from JSON that may hold a number, a numeric string, or junk."""
    try:
        return int(value) if value is not None and value != "" else None
    except (TypeError, ValueError):
        return None


class GraphCallError(Exception):
    """The Graph API answered with an error object."""

    def __init__(self, code: int | None, subcode: int | None, message: str, http_status: int) -> None:
        super().__init__(f"Graph error {code}/{subcode} (HTTP {http_status}): {message}")
        self.code, self.subcode, self.message, self.http_status = code, subcode, message, http_status

    @classmethod
    def from_body(cls, error: Mapping[str, Any], http_status: int) -> GraphCallError:
        data = error.get("error_data")
        details = str(data.get("details") or "") if isinstance(data, Mapping) else ""
        message = str(error.get("message") or f"HTTP {http_status}")
        if details and details not in message:
            message = f"{message} ({details})"
        return cls(as_int(error.get("code")), as_int(error.get("error_subcode")), message, http_status)


class GraphClient:
    """POSTs to `{graph}/{path}` with a Bearer token; transport failures become transient ChannelErrors."""

    def __init__(self, base_url: str, token: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        # A zero timeout means none.
        timeout = aiohttp.ClientTimeout(total=self._timeout or None)
        self._session = aiohttp.ClientSession(timeout=timeout)

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def post(self, path: str, payload: Mapping[str, Any]) -> dict[str, Any]:
        """The JSON answer of a successful call; raise GraphCallError or a transient ChannelError."""
        if self._session is None:
            raise RuntimeError("GraphClient.post called before open()")
        url = f"{self.base_url}/{path.lstrip('/')}"
        headers = {"Authorization": f"Bearer {self._token}"}
        try:
            async with self._session.post(url, json=payload, headers=headers) as response:
                status, text = response.status, await response.text()
        except TimeoutError as exc:
            raise ChannelError(ErrorKind.TRANSIENT, f"Meta did not answer within {self._timeout:g}s") from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ChannelError(ErrorKind.TRANSIENT, f"cannot reach Meta at {self.base_url}: {exc}") from exc
        try:
            body = json.loads(text)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            # Not Graph's JSON: a proxy or an outage page.
            raise ChannelError(ErrorKind.TRANSIENT, f"unreadable answer from Meta (HTTP {status})")
        error = body.get("error")
        if isinstance(error, dict) or status >= 400:
            raise GraphCallError.from_body(error if isinstance(error, dict) else {}, status)
        return body


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Look a header up case-insensitively."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def sign(app_secret: str, body: bytes) -> str:
    """The X-Hub-Signature-256 value Meta sends with `body`."""
    return "sha256=" + hmac.new(app_secret.encode(), body, hashlib.sha256).hexdigest()


def signature_valid(app_secret: str | None, request: WebhookRequest) -> bool:
    """Whether X-Hub-Signature-256 signs the raw body with the app secret (constant-time compare)."""
    given = header(request.headers, SIGNATURE_HEADER)
    if not app_secret or not given:
        return False
    return hmac.compare_digest(sign(app_secret, request.body).encode(), given.strip().lower().encode())


def handshake(verify_token: str | None, request: WebhookRequest) -> WebhookAnswer:
    """Meta's subscription check: echo `hub.challenge` when `hub.verify_token` is ours, else 403."""
    query = request.query
    given = query.get("hub.verify_token", "")
    challenge = query.get("hub.challenge", "")
    if (
        verify_token
        and query.get("hub.mode") == "subscribe"
        and hmac.compare_digest(given.encode(), verify_token.encode())
        and challenge
    ):
        return WebhookAnswer(200, challenge, "text/plain")
    return WebhookAnswer(403, "verification failed", "text/plain")


def payload_of(request: WebhookRequest) -> dict[str, Any]:
    """The webhook's JSON object; anything else is a ValueError (answered 400)."""
    body = json.loads(request.body)
    if not isinstance(body, dict):
        raise ValueError("a Meta webhook is a JSON object")
    return body


def items(value: Any) -> list[dict[str, Any]]:
    """The objects of a JSON list that may be missing; a value of another type is a ValueError (400)."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValueError(f"expected a list, got {type(value).__name__}")
    return [item for item in value if isinstance(item, dict)]


def from_epoch(value: Any, millis: bool = False) -> datetime | None:
    """A webhook timestamp (seconds, or milliseconds for Messenger) as aware UTC."""
    number = as_int(value)
    if number is None:
        return None
    try:
        return datetime.fromtimestamp(number / 1000 if millis else number, UTC)
    except (OverflowError, OSError, ValueError):
        return None  # a nonsense timestamp: the gateway's clock will do
