"""A small HTTP/1.1 client for one origin, with keep-alive: what the Twilio adapter's calls need and no more.

aiohttp spent about 100 µs of CPU a call more than this on request and answer objects, URL parsing and
payload lookup (135 against 37 µs a call, client and a trivial server together, measured on loopback); at a
thousand sends a second that is a tenth of a CPU in the one process that also accepts, claims and records.

What it does: requests with a small body (`Content-Length`), answers read by `Content-Length`, chunked
transfer coding or until the server closes; idle connections reused for up to `IDLE_SECONDS` and never once
the server has closed them; TLS for https origins with the system's certificate store and host name checks;
TCP_NODELAY (asyncio sets it on every TCP connection). What it does not do: redirects (a 3xx answer is
returned as it is), proxies, `Expect: 100-continue`, HTTP/2, compressed answers (it never asks for them).
At most `MAX_CONNECTIONS` are open to the origin; calls beyond wait for one (within the caller's time).
A call that fails on a connection is never sent again by the client: the caller decides (a send is retried
by the dispatcher, with its backoff). Every failure is an `OSError` (`HttpError` or the socket's own).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

IDLE_SECONDS = 15.0  # an idle connection older than this is closed rather than reused (aiohttp's default)
MAX_CONNECTIONS = 100  # open at once, in use or idle; a call waits for one beyond (aiohttp's default limit)
MAX_HEAD = 64 * 1024  # bytes of status line and headers at most
MAX_BODY = 10 * 1024 * 1024  # bytes of an answer's body at most


class HttpError(ConnectionError):
    """The server's answer could not be read (malformed, too large, or cut short)."""


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]  # names in lower case; a repeated header's values joined with ", "
    body: bytes


class _Connection:
    __slots__ = ("reader", "writer", "idle_since")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def usable(self, now: float) -> bool:
        return (
            now - self.idle_since < IDLE_SECONDS and not self.reader.at_eof() and not self.writer.is_closing()
        )

    def close(self) -> None:
        self.writer.close()


class Http1Client:
    """Calls to one origin (`http://host:port` or `https://host`), connections kept alive between calls."""

    def __init__(self, origin: str, ssl_context: ssl.SSLContext | None = None) -> None:
        """`ssl_context` for an https origin: the system's certificate store and host name checks unless
        given."""
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) origin: {origin!r}")
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self._host_header = parts.netloc.rpartition("@")[2].encode("idna")
        self._ssl = (ssl_context or ssl.create_default_context()) if parts.scheme == "https" else None
        self._idle: list[_Connection] = []
        self._in_use = asyncio.Semaphore(MAX_CONNECTIONS)

    async def request(
        self, method: str, target: str, headers: dict[str, str], body: bytes | None = None
    ) -> Answer:
        """Send one request (`target` is the path and query) and read its answer; the caller bounds the time
        it may take (asyncio.timeout). A connection is put back for reuse only after a complete answer."""
        head = _request_head(method, target, self._host_header, headers, body)
        async with self._in_use:  # a connection is opened only when none is idle: at most MAX_CONNECTIONS
            connection = self._take() or await self._connect()
            try:
                connection.writer.write(head + body if body else head)
                answer, keep = await _read_answer(connection.reader, method)
            except BaseException:
                connection.close()
                raise
            if keep:
                connection.idle_since = time.monotonic()
                self._idle.append(connection)
            else:
                connection.close()
        return answer

    async def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()
        for connection in idle:
            try:
                await connection.writer.wait_closed()
            except OSError:
                continue  # closed already, one way or the other

    def _take(self) -> _Connection | None:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()  # the most recently used: the least likely to have timed out
            if connection.usable(now):
                return connection
            connection.close()
        return None

    async def _connect(self) -> _Connection:
        reader, writer = await asyncio.open_connection(self.host, self.port, ssl=self._ssl, limit=MAX_HEAD)
        return _Connection(reader, writer)


def _request_head(
    method: str, target: str, host: bytes, headers: dict[str, str], body: bytes | None
) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: " + host.decode("ascii")]
    for name, value in headers.items():
        if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
            continue  # the client's own
        lines.append(f"{name}: {value}")
    if body is not None or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body or b'')}")
    if any("\r" in line or "\n" in line for line in lines):
        raise ValueError("a request line or header holds a line break")
    return "\r\n".join(lines).encode("latin-1") + b"\r\n\r\n"


async def _read_answer(reader: asyncio.StreamReader, method: str) -> tuple[Answer, bool]:
    """The answer and whether the connection may carry another request."""
    while True:
        status, version, headers = await _read_head(reader)
        if status >= 200 or status == 101:
            break  # 1xx answers other than 101 come before the real one
    connection = headers.get("connection", "").lower()
    keep = "close" not in connection and (version == "HTTP/1.1" or "keep-alive" in connection)
    if method == "HEAD" or status in (101, 204, 304):
        return Answer(status, headers, b""), keep and status != 101
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return Answer(status, headers, await _read_chunked(reader)), keep
    if "content-length" in headers:
        try:
            length = int(headers["content-length"])
        except ValueError:
            raise HttpError(f"bad Content-Length: {headers['content-length']!r}") from None
        if not 0 <= length <= MAX_BODY:
            raise HttpError(f"an answer of {length} bytes is over the {MAX_BODY} allowed")
        return Answer(status, headers, await _exactly(reader, length)), keep
    body = b""  # no length: the body ends when the server closes
    while len(body) <= MAX_BODY and (part := await reader.read(MAX_BODY + 1 - len(body))):
        body += part
    if len(body) > MAX_BODY:
        raise HttpError(f"an answer over the {MAX_BODY} bytes allowed")
    return Answer(status, headers, body), False


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, str, dict[str, str]]:
    try:
        raw = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        raise HttpError("the server closed the connection before answering") from exc
    except asyncio.LimitOverrunError as exc:
        raise HttpError(f"an answer's head is over the {MAX_HEAD} bytes allowed") from exc
    status_line, *lines = raw[:-4].decode("latin-1").split("\r\n")
    version, _, rest = status_line.partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise HttpError(f"not an HTTP/1.x answer: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, colon, value = line.partition(":")
        if not colon:
            raise HttpError(f"a malformed header line: {line[:80]!r}")
        key, value = name.strip().lower(), value.strip()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return int(code), version, headers


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        line = await _line(reader)
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise HttpError(f"a malformed chunk size: {line[:40]!r}") from None
        if size == 0:
            while await _line(reader):  # trailer fields, up to the empty line
                continue
            return bytes(body)
        if len(body) + size > MAX_BODY:
            raise HttpError(f"an answer over the {MAX_BODY} bytes allowed")
        body += await _exactly(reader, size)
        if await _exactly(reader, 2) != b"\r\n":
            raise HttpError("a chunk does not end with CRLF")


async def _line(reader: asyncio.StreamReader) -> bytes:
    try:
        return (await reader.readuntil(b"\r\n"))[:-2]
    except asyncio.IncompleteReadError as exc:
        raise HttpError("the answer was cut short") from exc
    except asyncio.LimitOverrunError as exc:
        raise HttpError("a chunk line is too long") from exc


async def _exactly(reader: asyncio.StreamReader, size: int) -> bytes:
    try:
        return await reader.readexactly(size)
    except asyncio.IncompleteReadError as exc:
        raise HttpError(f"the answer was cut short ({len(exc.partial)} of {size} bytes)") from exc
