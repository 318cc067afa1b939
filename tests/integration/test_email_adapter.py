"""EmailChannel against the SMTP simulator over real loopback sockets."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import aiosmtplib
import pytest

from fallbacks.email import EmailChannel
from gateway.channels.base import OutgoingMessage, SendResult
from gateway.errors import ChannelError, ErrorKind
from gateway.ids import new_id
from gateway.settings import Settings, load_settings
from gateway.simulators.smtp import Behaviour, SmtpSimulator

SENDER = "gateway@example.test"


@pytest.fixture
def sim() -> Iterator[SmtpSimulator]:
    with SmtpSimulator(slow_latency=1.0) as simulator:
        yield simulator


def make_settings(port: int, **overrides: Any) -> Settings:
    return load_settings(
        environ={},
        overrides={
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "smtp_tls": "none",
            "smtp_from": SENDER,
            **overrides,
        },
    )


def make_message(address: str, **fields: Any) -> OutgoingMessage:
    values: dict[str, Any] = {"text": "Your code is 123456.\nIt expires in 10 minutes."}
    values.update(fields)
    return OutgoingMessage(attempt_id=new_id("att"), message_id=new_id("msg"), address=address, **values)


@asynccontextmanager
async def opened(settings: Settings) -> AsyncIterator[EmailChannel]:
    channel = EmailChannel(settings)
    await channel.open()
    try:
        yield channel
    finally:
        await channel.close()


async def send_error(channel: EmailChannel, address: str) -> ChannelError:
    with pytest.raises(ChannelError) as caught:
        await channel.send(make_message(address))
    return caught.value


def unused_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_send_delivers_text_html_and_headers(sim: SmtpSimulator) -> None:
    message = make_message("alice@example.test", subject="Your code", html="<p>123456</p>")

    async def scenario() -> SendResult:
        async with opened(make_settings(sim.port)) as channel:
            return await channel.send(message)

    result = asyncio.run(scenario())

    assert result.status == "sent"
    assert result.provider_message_id.endswith("@example.test")
    assert message.attempt_id in result.provider_message_id
    [received] = sim.received_for("alice@example.test")
    assert received["mail_from"] == SENDER
    assert received["rcpt_tos"] == ["alice@example.test"]
    assert received["subject"] == "Your code"
    assert received["text"].strip() == message.text
    assert received["html"].strip() == "<p>123456</p>"
    assert received["headers"]["Message-ID"] == f"<{result.provider_message_id}>"
    assert received["headers"]["X-Gateway-Attempt"] == message.attempt_id


def test_subject_defaults_to_first_line(sim: SmtpSimulator) -> None:
    long_line = "word " * 40

    async def scenario() -> None:
        async with opened(make_settings(sim.port)) as channel:
            await channel.send(make_message("a@example.test", text="\n  Hello   there \nmore"))
            await channel.send(make_message("b@example.test", text=long_line))

    asyncio.run(scenario())

    assert sim.received_for("a@example.test")[0]["subject"] == "Hello there"
    subject = sim.received_for("b@example.test")[0]["subject"]
    assert len(subject) == 78
    assert subject.endswith("…")
    assert "html" not in sim.received_for("a@example.test")[0]


def test_sequential_sends_reuse_one_connection(sim: SmtpSimulator) -> None:
    async def scenario() -> None:
        async with opened(make_settings(sim.port)) as channel:
            for i in range(20):
                await channel.send(make_message(f"user{i}@example.test"))

    asyncio.run(scenario())

    assert len(sim.messages) == 20
    assert sim.connections == 1


def test_concurrent_sends_stay_within_pool(sim: SmtpSimulator) -> None:
    settings = make_settings(sim.port, smtp_pool_size=3)

    async def scenario() -> list[SendResult]:
        async with opened(settings) as channel:
            sends = [channel.send(make_message(f"user{i}@example.test")) for i in range(20)]
            return await asyncio.gather(*sends)

    results = asyncio.run(scenario())

    assert all(result.status == "sent" for result in results)
    assert len(sim.messages) == 20
    assert 1 <= sim.connections <= settings.smtp_pool_size


def test_messages_on_a_greeted_connection_go_out_as_the_first_did(sim: SmtpSimulator) -> None:
    # The first message on a connection goes through aiosmtplib's sendmail (which greets the server); the
    # next ones through the channel's own MAIL, RCPT and DATA: the same envelope, SIZE and content.
    texts = ["Your code is 123456.", "line\n.starts with a dot\nend", "Third one."]

    async def scenario() -> None:
        async with opened(make_settings(sim.port)) as channel:
            for i, text in enumerate(texts):
                await channel.send(make_message(f"user{i}@example.test", text=text))

    asyncio.run(scenario())

    assert sim.connections == 1
    for i, text in enumerate(texts):
        [received] = sim.received_for(f"user{i}@example.test")
        assert received["mail_from"] == SENDER
        assert received["rcpt_tos"] == [f"user{i}@example.test"]
        assert received["mail_options"] == [f"SIZE={received['size']}"]
        assert received["text"].strip() == text


@pytest.mark.parametrize("greeted", [False, True], ids=["new-connection", "greeted-connection"])
@pytest.mark.parametrize(
    ("address", "kind", "code"),
    [
        ("unknown@example.test", ErrorKind.UNREACHABLE, "550"),
        ("badaddr@example.test", ErrorKind.INVALID_ADDRESS, "553"),
        ("reject@example.test", ErrorKind.REJECTED, "554"),
        ("busy@example.test", ErrorKind.TRANSIENT, "451"),
    ],
)
def test_refusals_are_classified(
    sim: SmtpSimulator, address: str, kind: ErrorKind, code: str, greeted: bool
) -> None:
    async def scenario() -> ChannelError:
        async with opened(make_settings(sim.port)) as channel:
            if greeted:  # the refusal comes in the channel's own mail transaction, not sendmail's
                await channel.send(make_message("before@example.test"))
            error = await send_error(channel, address)
            # A refused recipient leaves the connection usable for the next message.
            await channel.send(make_message("after@example.test"))
            return error

    error = asyncio.run(scenario())

    assert (error.kind, error.code) == (kind, code)
    assert isinstance(error.__cause__, aiosmtplib.SMTPException)
    assert sim.received_for(address) == []
    assert sim.connections == 1


def test_fail_times_fails_then_accepts(sim: SmtpSimulator) -> None:
    address = "flaky@example.test"
    sim.set_behaviour(address, Behaviour(reply="451 4.3.0 busy", fail_times=1))

    async def scenario() -> tuple[ChannelError, SendResult]:
        async with opened(make_settings(sim.port)) as channel:
            error = await send_error(channel, address)
            return error, await channel.send(make_message(address))

    error, result = asyncio.run(scenario())

    assert error.kind is ErrorKind.TRANSIENT
    assert result.status == "sent"
    assert len(sim.received_for(address)) == 1


@pytest.mark.parametrize("greeted", [False, True], ids=["new-connection", "greeted-connection"])
def test_421_discards_the_connection(sim: SmtpSimulator, greeted: bool) -> None:
    sim.set_behaviour("closing@example.test", Behaviour(reply="421 4.3.2 Shutting down"))

    async def scenario() -> ChannelError:
        async with opened(make_settings(sim.port)) as channel:
            if greeted:  # the 421 comes in the channel's own mail transaction, not sendmail's
                await channel.send(make_message("before@example.test"))
            error = await send_error(channel, "closing@example.test")
            await channel.send(make_message("next@example.test"))
            return error

    error = asyncio.run(scenario())

    assert (error.kind, error.code) == (ErrorKind.TRANSIENT, "421")
    assert sim.connections == 2


def test_timeout_is_transient_and_discards_the_connection(sim: SmtpSimulator) -> None:
    settings = make_settings(sim.port, provider_timeout=0.2)

    async def scenario() -> ChannelError:
        async with opened(settings) as channel:
            error = await send_error(channel, "slow@example.test")
            await channel.send(make_message("next@example.test"))
            return error

    error = asyncio.run(scenario())

    assert error.kind is ErrorKind.TRANSIENT
    assert sim.received_for("next@example.test")
    assert sim.connections == 2


def test_server_restart_replaces_stale_pooled_connection(sim: SmtpSimulator) -> None:
    async def scenario() -> SendResult:
        async with opened(make_settings(sim.port)) as channel:
            await channel.send(make_message("before@example.test"))
            # Restarting closes the pooled connection server-side; the event loop has not
            # noticed yet, so the channel finds out on first use and reconnects once.
            sim.stop()
            sim.start()
            return await channel.send(make_message("after@example.test"))

    result = asyncio.run(scenario())

    assert result.status == "sent"
    assert sim.received_for("after@example.test")
    assert sim.connections == 2


def test_nobody_listening_is_transient() -> None:
    async def scenario() -> ChannelError:
        async with opened(make_settings(unused_port())) as channel:
            return await send_error(channel, "alice@example.test")

    error = asyncio.run(scenario())

    assert error.kind is ErrorKind.TRANSIENT
    assert isinstance(error.__cause__, OSError)


def test_unencodable_content_is_rejected(sim: SmtpSimulator) -> None:
    bad_text = make_message("a@example.test", text="lone surrogate \ud800")
    bad_subject = make_message("b@example.test", subject="lone surrogate \ud800")

    async def scenario() -> list[ChannelError]:
        errors = []
        async with opened(make_settings(sim.port)) as channel:
            for message in (bad_text, bad_subject):
                with pytest.raises(ChannelError) as caught:
                    await channel.send(message)
                errors.append(caught.value)
        return errors

    errors = asyncio.run(scenario())

    assert [error.kind for error in errors] == [ErrorKind.REJECTED, ErrorKind.REJECTED]
    assert sim.messages == []


def test_malformed_address_fails_without_connecting(sim: SmtpSimulator) -> None:
    async def scenario() -> list[ChannelError]:
        async with opened(make_settings(sim.port)) as channel:
            return [
                await send_error(channel, address)
                for address in ("not an address", "bob@", "a@b.test\r\nRCPT TO:<x@y.test>")
            ]

    errors = asyncio.run(scenario())

    assert {error.kind for error in errors} == {ErrorKind.INVALID_ADDRESS}
    assert sim.connections == 0
