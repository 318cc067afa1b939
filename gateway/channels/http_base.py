"""What the JSON-over-HTTP adapters (Telegram, LINE, Viber, X, WeChat, Discord) share.

Each adapter owns one aiohttp session, opened in `open()` in the dispatcher's loop and closed in
`close()`. Its connector keeps connections alive between sends (HTTP keep-alive, and SO_KEEPALIVE on
the sockets so idle ones behind NAT are noticed). Connection errors, timeouts and unreadable answers
become `transient` ChannelErrors here, so adapters only classify what the provider actually said.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.channels.base import Channel
from gateway.errors import ChannelError, ErrorKind

KEEPALIVE_SECONDS = 60.0
CONNECTIONS_PER_ADAPTER = 100


@dataclass(frozen=True)
class HttpAnswer:
    """A provider's answer: status, headers (lower-case names), the JSON body (or None), the raw text."""

    status: int
    headers: Mapping[str, str]
    data: Any
    text: str

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


def _keepalive_socket(addr_info: tuple[Any, ...]) -> socket.socket:
    """A client socket with TCP keep-alive probes switched on."""
    family, kind, proto = addr_info[0], addr_info[1], addr_info[2]
    sock = socket.socket(family=family, type=kind, proto=proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    return sock


def missing_settings(settings: Any, *names: str) -> str | None:
    """`disabled_reason` for settings that must all be set: which GATEWAY_* variables are not."""
    missing = [f"GATEWAY_{name.upper()}" for name in names if not getattr(settings, name)]
    if not missing:
        return None
    return ", ".join(missing) + (" is not set" if len(missing) == 1 else " are not set")


def header(headers: Mapping[str, str], name: str) -> str | None:
    """Look a header up case-insensitively."""
    wanted = name.lower()
    return next((value for key, value in headers.items() if key.lower() == wanted), None)


def hmac_sha256(secret: str, payload: bytes) -> bytes:
    return hmac.new(secret.encode(), payload, hashlib.sha256).digest()


def b64_hmac_sha256(secret: str, payload: bytes) -> str:
    """base64(HMAC-SHA256(secret, payload)): LINE's and X's signature encoding."""
    return base64.b64encode(hmac_sha256(secret, payload)).decode()


def same(expected: str, given: str | None) -> bool:
    """Constant-time comparison of a signature or secret; a missing one never matches."""
    return bool(given) and hmac.compare_digest(expected.encode(), (given or "").encode())


def json_body(body: bytes) -> Any:
    """A webhook's JSON object; ValueError (a 400 for the provider) when it is not a JSON object."""
    data = json.loads(body.decode("utf-8"))
    if not isinstance(data, dict):
        raise ValueError("the payload is not a JSON object")
    return data


def check_shape(payload: dict[str, Any], shape: dict[str, type]) -> None:
    """A ValueError (400) when a field the provider documents is present with the wrong type."""
    for key, kind in shape.items():
        if key in payload and payload[key] is not None and not isinstance(payload[key], kind):
            raise ValueError(f"{key} should be a {kind.__name__}")


class HttpChannel(Channel):
    """A channel spoken over HTTP with one long-lived aiohttp session."""

    def __init__(self, settings: Any) -> None:
        super().__init__(settings)
        self._session: aiohttp.ClientSession | None = None

    @property
    def provider(self) -> str:
        """The provider's name in error details."""
        return {"line": "LINE", "wechat": "WeChat", "x": "X"}.get(self.name, self.name.capitalize())

    def default_headers(self) -> dict[str, str]:
        """Headers on every request (credentials); adapters override."""
        return {}

    async def open(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=CONNECTIONS_PER_ADAPTER,
            keepalive_timeout=KEEPALIVE_SECONDS,
            socket_factory=_keepalive_socket,
        )
        timeout = aiohttp.ClientTimeout(total=self.settings.provider_timeout or None)
        self._session = aiohttp.ClientSession(
            connector=connector, timeout=timeout, headers=self.default_headers()
        )

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    async def call(
        self,
        method: str,
        url: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        """Make one request; network failures and non-JSON 5xx answers raise a transient ChannelError."""
        if self._session is None:
            raise RuntimeError(f"{type(self).__name__} used before open()")
        try:
            async with self._session.request(
                method, url, json=json, params=params, headers=headers
            ) as response:
                text = await response.text()
                answer_headers = {k.lower(): v for k, v in response.headers.items()}
                status = response.status
        except TimeoutError as exc:
            detail = f"{self.provider} did not answer within {self.settings.provider_timeout:g}s"
            raise ChannelError(ErrorKind.TRANSIENT, detail) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise ChannelError(ErrorKind.TRANSIENT, f"cannot reach {self.provider}: {exc}") from exc
        try:
            data = _loads(text) if text else None
        except ValueError:
            data = None
        if data is None and status >= 300 and status < 500 and status not in (409, 429):
            # An error page instead of the provider's JSON: a proxy or an outage in between.
            raise ChannelError(ErrorKind.TRANSIENT, f"unreadable answer from {self.provider} (HTTP {status})")
        return HttpAnswer(status, answer_headers, data, text)


def _loads(text: str) -> Any:
    return json.loads(text)
