"""Fetch a file a business named in `content.media` (email attaches it): size and time limits, and
no private addresses unless allowed.

The URL comes from whoever holds an API key, so by default the gateway will not fetch from loopback,
private, link-local or other non-public addresses (GATEWAY_MEDIA_FETCH_PRIVATE=on allows them, for a
file server on the same network). The check is made on every address a name resolves to and again on
every redirect (at most MAX_REDIRECTS), so neither a DNS answer nor a redirect can lead inside.
"""

from __future__ import annotations

import errno
import ipaddress
import socket
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver

MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)


class FetchError(Exception):
    """Why a file could not be fetched (the caller names the file)."""


def is_public(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class PublicResolver(AbstractResolver):
    """Resolves like aiohttp's default resolver, keeping only public addresses."""

    def __init__(self) -> None:
        self._inner = DefaultResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        found = await self._inner.resolve(host, port, family)
        public = [entry for entry in found if is_public(entry["host"])]
        if not public:
            reason = f"{host} resolves only to non-public addresses (GATEWAY_MEDIA_FETCH_PRIVATE is off)"
            raise OSError(errno.EACCES, reason)  # aiohttp reports the strerror
        return public

    async def close(self) -> None:
        await self._inner.close()


def client_session(timeout: float, allow_private: bool) -> aiohttp.ClientSession:
    connector: Any = (
        aiohttp.TCPConnector() if allow_private else aiohttp.TCPConnector(resolver=PublicResolver())
    )
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=timeout or None))


def _check_literal(url: str, allow_private: bool) -> None:
    host = urlsplit(url).hostname or ""
    try:
        public = is_public(host)
    except ValueError:
        return  # a name: the resolver checks what it resolves to
    if not public and not allow_private:
        raise FetchError(f"{host} is not a public address (GATEWAY_MEDIA_FETCH_PRIVATE is off)")


async def fetch(http: aiohttp.ClientSession, url: str, limit: int, allow_private: bool) -> bytes:
    """The body of `url` (HTTP 200 only, at most `limit` bytes), following up to MAX_REDIRECTS redirects.

    Raises FetchError with a reason; network errors and timeouts pass through as aiohttp/OS errors.
    """
    for _ in range(MAX_REDIRECTS + 1):
        if urlsplit(url).scheme not in ("http", "https"):
            raise FetchError(f"redirected to a URL that is not http(s): {url}")
        _check_literal(url, allow_private)
        async with http.get(url, allow_redirects=False) as response:
            if response.status in REDIRECTS and "Location" in response.headers:
                url = urljoin(url, response.headers["Location"])
                continue
            if response.status != 200:
                raise FetchError(f"the server answered HTTP {response.status}")
            too_large = f"it is larger than {limit} bytes (GATEWAY_MEDIA_FETCH_MAX_BYTES)"
            if response.content_length is not None and response.content_length > limit:
                raise FetchError(too_large)
            data = bytearray()
            async for chunk in response.content.iter_chunked(64 * 1024):
                data += chunk
                if len(data) > limit:
                    raise FetchError(too_large)
            return bytes(data)
    raise FetchError(f"more than {MAX_REDIRECTS} redirects")
