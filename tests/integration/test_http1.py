"""fallbacks/http1.py against a real HTTP server on loopback whose answers each test writes byte by byte:
keep-alive, chunked and close-delimited bodies, servers that close, broken answers, timeouts, TLS."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import ssl
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fallbacks import http1
from fallbacks.http1 import MAX_HEAD, Http1Client, HttpError

LOOPBACK = "127.0.0.1"
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, int], Awaitable[None]]


def ok(body: bytes = b'{"sid":"SM1"}', extra: bytes = b"") -> bytes:
    return b"HTTP/1.1 201 Created\r\nContent-Type: application/json\r\n%sContent-Length: %d\r\n\r\n%s" % (
        extra,
        len(body),
        body,
    )


async def read_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    """One request's head and body (by its Content-Length)."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length)


def serve(
    handler: Handler,
    work: Callable[[Http1Client], Awaitable[None]],
    tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
) -> int:
    """Run `work` against a server calling `handler(reader, writer, n)` for its n-th connection (from 1);
    returns how many connections the client opened. With `tls` (the server's context, the client's), over
    https."""

    async def main() -> int:
        opened = 0

        async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal opened
            opened += 1
            try:
                await handler(reader, writer, opened)
            except (asyncio.IncompleteReadError, ConnectionError):
                pass  # the client went away: the end of this connection
            finally:
                writer.close()

        server = await asyncio.start_server(connected, LOOPBACK, 0, ssl=tls[0] if tls else None)
        port = server.sockets[0].getsockname()[1]
        client = Http1Client(f"{'https' if tls else 'http'}://{LOOPBACK}:{port}", tls[1] if tls else None)
        try:
            await work(client)
        finally:
            await client.close()
            server.close()
            await server.wait_closed()
        return opened

    return asyncio.run(main())


def keep_alive(answer: bytes) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            await read_request(reader)
            writer.write(answer)
            await writer.drain()

    return handler


def test_requests_share_one_kept_alive_connection_and_carry_the_body() -> None:
    heads: list[bytes] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        while True:
            head, body = await read_request(reader)
            heads.append(head + body)
            writer.write(ok())

    async def work(client: Http1Client) -> None:
        for i in range(3):
            answer = await client.request(
                "POST",
                f"/2010-04-01/Messages.json?n={i}",
                {"Authorization": "Basic eA=="},
                b"To=%2B1&Body=hi",
            )
            assert (answer.status, answer.body) == (201, b'{"sid":"SM1"}')
            assert answer.headers["content-type"] == "application/json"

    assert serve(handler, work) == 1
    assert heads[0].startswith(b"POST /2010-04-01/Messages.json?n=0 HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nAuthorization: Basic eA==\r\nContent-Length: 15\r\n\r\nTo=%2B1&Body=hi" in heads[0]
    assert heads[2].startswith(b"POST /2010-04-01/Messages.json?n=2 ")


def test_a_chunked_answer_is_joined_and_its_trailers_skipped() -> None:
    answer = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: yes\r\n\r\n"
    )

    async def work(client: Http1Client) -> None:
        for _round in range(2):
            got = await client.request("GET", "/", {})
            assert (got.status, got.body) == (200, b"hello, world")

    assert serve(keep_alive(answer), work) == 1  # the connection was left ready for the next answer


def test_an_answer_without_length_ends_when_the_server_closes_and_its_connection_is_not_reused() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it")
        await writer.drain()

    async def work(client: Http1Client) -> None:
        for _round in range(2):
            assert (await client.request("GET", "/", {})).body == b"all of it"

    assert serve(handler, work) == 2


def test_connection_close_is_honoured() -> None:
    async def work(client: Http1Client) -> None:
        for _round in range(2):
            assert (await client.request("POST", "/", {}, b"x")).status == 201

    assert serve(keep_alive(ok(extra=b"Connection: close\r\n")), work) == 2


def test_an_idle_connection_the_server_closed_is_not_used_again() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(ok())  # keep-alive promised, then closed while idle
        await writer.drain()

    async def work(client: Http1Client) -> None:
        assert (await client.request("POST", "/", {}, b"x")).status == 201
        await asyncio.sleep(0.1)  # the close reaches the client
        assert (await client.request("POST", "/", {}, b"x")).status == 201

    assert serve(handler, work) == 2


def test_an_idle_connection_past_its_time_is_not_used_again(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "IDLE_SECONDS", 0.05)

    async def work(client: Http1Client) -> None:
        for pause in (0, 0.1, 0):  # reused after no pause; replaced after one past IDLE_SECONDS
            await asyncio.sleep(pause)
            assert (await client.request("POST", "/", {}, b"x")).status == 201

    assert serve(keep_alive(ok()), work) == 2


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n0123456789a",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n6\r\n012345\r\n5\r\n6789a\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\n0123456789a",  # ended by the close
    ],
    ids=["content-length", "chunked", "close-delimited"],
)
def test_an_answer_over_the_body_limit_is_refused(monkeypatch: pytest.MonkeyPatch, answer: bytes) -> None:
    monkeypatch.setattr(http1, "MAX_BODY", 10)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(answer)
        await writer.drain()

    async def work(client: Http1Client) -> None:
        with pytest.raises(HttpError, match="over the 10"):
            await client.request("GET", "/", {})

    serve(handler, work)


def test_an_answer_at_the_body_limit_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "MAX_BODY", 10)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\n\r\n0123456789")
        await writer.drain()

    async def work(client: Http1Client) -> None:
        assert (await client.request("GET", "/", {})).body == b"0123456789"

    serve(handler, work)


def test_calls_beyond_the_connection_limit_wait_for_a_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(http1, "MAX_CONNECTIONS", 2)
    busy, most = 0, 0

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, _: int) -> None:
        nonlocal busy, most
        while True:
            await read_request(reader)
            busy += 1
            most = max(most, busy)
            await asyncio.sleep(0.05)
            busy -= 1
            writer.write(ok())

    async def work(client: Http1Client) -> None:
        answers = await asyncio.gather(*[client.request("POST", "/", {}, b"x") for _ in range(6)])
        assert [a.status for a in answers] == [201] * 6

    assert serve(handler, work) == 2
    assert most == 2


def test_1xx_answers_before_the_real_one_are_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\n" + ok()

    async def work(client: Http1Client) -> None:
        assert (await client.request("POST", "/", {}, b"x")).status == 201

    serve(keep_alive(answer), work)


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (b"HTTP/1.1 201 Created\r\nContent-Length: 100\r\n\r\nonly this", "cut short (9 of 100 bytes)"),
        (b"SMTP/1.0 250 OK\r\n\r\n", "not an HTTP/1.x answer"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: lots\r\n\r\n", "bad Content-Length"),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", "malformed chunk size"),
        (b"HTTP/1.1 200 OK\r\n" + b"X-Big: " + b"a" * MAX_HEAD + b"\r\n\r\n", "head is over"),
        (b"", "closed the connection before answering"),
    ],
)
def test_a_broken_answer_is_an_os_error_and_its_connection_is_dropped(answer: bytes, message: str) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        if n == 1:
            writer.write(answer)
            await writer.drain()
            return  # and close
        writer.write(ok())
        await writer.drain()

    async def work(client: Http1Client) -> None:
        with pytest.raises(HttpError, match=re.escape(message)) as raised:
            await client.request("POST", "/", {}, b"x")
        assert isinstance(raised.value, OSError)  # what the adapters catch
        assert (await client.request("POST", "/", {}, b"x")).status == 201  # on a new connection

    assert serve(handler, work) == 2


def test_a_call_out_of_time_is_dropped_with_its_connection() -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, n: int) -> None:
        await read_request(reader)
        await asyncio.sleep(0.5 if n == 1 else 0)
        writer.write(ok())
        await writer.drain()
        await reader.read()  # wait for the client to close

    async def work(client: Http1Client) -> None:
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.1):
                await client.request("POST", "/", {}, b"x")
        assert (await client.request("POST", "/", {}, b"x")).status == 201  # the late answer is not read

    assert serve(handler, work) == 2


def test_line_breaks_in_a_header_are_refused_before_anything_is_sent() -> None:
    async def work(client: Http1Client) -> None:
        with pytest.raises(ValueError, match="line break"):
            await client.request("POST", "/", {"X-Note": "a\r\nInjected: yes"}, b"x")

    assert serve(keep_alive(ok()), work) == 0


def certificate(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and its key, as PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_file, key_file


def test_https_checks_the_certificate_and_keeps_the_connection_alive(tmp_path: Path) -> None:
    cert_file, key_file = certificate(tmp_path)
    server_side = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_side.load_cert_chain(cert_file, key_file)

    async def work(client: Http1Client) -> None:
        for _round in range(2):
            assert (await client.request("POST", "/", {}, b"x")).body == b'{"sid":"SM1"}'
        stranger = Http1Client(f"https://{client.host}:{client.port}")  # the system's certificate store
        with pytest.raises(ssl.SSLCertVerificationError) as raised:
            await stranger.request("POST", "/", {}, b"x")
        assert isinstance(raised.value, OSError)
        await stranger.close()

    trusting = ssl.create_default_context(cafile=str(cert_file))
    # Both calls on one connection; the refused handshake never reaches the handler.
    assert serve(keep_alive(ok()), work, (server_side, trusting)) == 1


def test_only_http_origins_are_taken() -> None:
    with pytest.raises(ValueError, match="not an http"):
        Http1Client("ftp://example.com")
