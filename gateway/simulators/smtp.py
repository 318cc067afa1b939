"""A local SMTP server (aiosmtpd) whose answer depends on the recipient, for tests and demos.

The local part of a recipient picks the behaviour (`unknown…@` 550, `badaddr…@` 553, `reject…@` 554,
`busy…@` 451, `slow…@` accepted late, anything else accepted); `set_behaviour` overrides an address.
Run it in the foreground with `python -m gateway.simulators.smtp --port 2525`.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

RECORDED_HEADERS = ("Message-ID", "X-Gateway-Attempt", "Reply-To")


@dataclass(frozen=True)
class Behaviour:
    """How the simulator answers deliveries to one address."""

    # SMTP reply at RCPT, e.g. "451 4.3.0 busy" ("{address}" is replaced); None accepts.
    reply: str | None = None
    # Seconds the DATA command waits before accepting.
    latency: float = 0.0
    # Answer `reply` to the first N deliveries only, then accept; None answers it every time.
    fail_times: int | None = None


# First matching prefix of the recipient's local part wins.
_BUILTIN_REPLIES: tuple[tuple[str, str], ...] = (
    ("unknown", "550 5.1.1 <{address}>: User unknown"),
    ("badaddr", "553 5.1.3 Bad recipient address syntax"),
    ("reject", "554 5.7.1 Message refused"),
    ("busy", "451 4.3.0 Try again later"),
)


def _free_port(host: str) -> int:
    """Return a TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


class _CountingController(Controller):
    """A Controller that reports every new SMTP session."""

    def __init__(self, on_session: Callable[[], None], *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_session = on_session

    def factory(self) -> SMTP:
        """Create the protocol object of one client connection."""
        self._on_session()
        return SMTP(self.handler, **self.SMTP_kwargs)


class SmtpSimulator:
    """A threaded SMTP server that records what it accepts; use as a context manager."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, slow_latency: float = 2.0) -> None:
        self.host = host
        self._port = port
        self.slow_latency = slow_latency
        self._lock = threading.Lock()
        self._messages: list[dict[str, Any]] = []
        self._behaviours: dict[str, Behaviour] = {}
        self._deliveries: Counter[str] = Counter()
        self._connections = 0
        self._controller: _CountingController | None = None

    @property
    def port(self) -> int:
        """The port the server listens on (chosen at the first start when 0 was asked for)."""
        return self._port

    @property
    def connections(self) -> int:
        """How many SMTP sessions clients have opened so far."""
        with self._lock:
            return self._connections

    @property
    def messages(self) -> list[dict[str, Any]]:
        """A copy of every accepted message, oldest first."""
        with self._lock:
            return list(self._messages)

    def received_for(self, address: str) -> list[dict[str, Any]]:
        """Return the accepted messages that had `address` among their recipients."""
        wanted = address.lower()
        return [m for m in self.messages if wanted in (r.lower() for r in m["rcpt_tos"])]

    def set_behaviour(self, address: str, behaviour: Behaviour) -> None:
        """Answer deliveries to `address` this way from now on (restarts its fail_times count)."""
        with self._lock:
            self._behaviours[address.lower()] = behaviour
            self._deliveries.pop(address.lower(), None)

    def start(self) -> None:
        """Listen in a background thread; the port stays the same across stop/start."""
        if self._controller is not None:
            return
        if self._port == 0:
            self._port = _free_port(self.host)
        # A stopped controller's event loop is closed, so every start needs a new controller.
        controller = _CountingController(
            self._count_session,
            _Handler(self),
            hostname=self.host,
            port=self._port,
            server_hostname="smtp-simulator.test",
        )
        with self._lock:
            before = self._connections
        controller.start()
        # Controller.start() opens one probe connection to check readiness; it is not a client.
        with self._lock:
            self._connections = before
        self._controller = controller

    def stop(self) -> None:
        """Stop listening and drop every open session."""
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def __enter__(self) -> SmtpSimulator:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _count_session(self) -> None:
        """Count one client connection (called from the controller's thread)."""
        with self._lock:
            self._connections += 1

    def _behaviour_for(self, address: str) -> Behaviour:
        """Pick the explicit behaviour of `address`, else the one its local part asks for."""
        explicit = self._behaviours.get(address.lower())
        if explicit is not None:
            return explicit
        local = address.partition("@")[0].lower()
        for prefix, reply in _BUILTIN_REPLIES:
            if local.startswith(prefix):
                return Behaviour(reply=reply)
        return Behaviour(latency=self.slow_latency if local.startswith("slow") else 0.0)

    def _rcpt_refusal(self, address: str) -> str | None:
        """Count one delivery to `address` and return the reply refusing it, or None to accept."""
        with self._lock:
            behaviour = self._behaviour_for(address)
            self._deliveries[address.lower()] += 1
            attempt = self._deliveries[address.lower()]
        if behaviour.reply is None:
            return None
        if behaviour.fail_times is not None and attempt > behaviour.fail_times:
            return None
        return behaviour.reply.replace("{address}", address)

    def _latency(self, addresses: list[str]) -> float:
        """Return how long DATA waits before accepting a message to these recipients."""
        with self._lock:
            return max((self._behaviour_for(a).latency for a in addresses), default=0.0)

    def _record(self, envelope: Envelope) -> None:
        """Keep what the client sent, parsed enough for assertions (call outside the lock)."""
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode("utf-8")
        parsed = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(parsed, EmailMessage)
        record: dict[str, Any] = {
            "mail_from": envelope.mail_from,
            "mail_options": list(envelope.mail_options),
            "size": len(raw),  # the message's bytes as sent after DATA, dot-stuffing undone
            "rcpt_tos": list(envelope.rcpt_tos),
            "subject": None if parsed["Subject"] is None else str(parsed["Subject"]),
            "text": _body(parsed, "plain"),
            "headers": {h: str(parsed[h]) for h in RECORDED_HEADERS if parsed[h] is not None},
            "received_at": datetime.now(UTC),
        }
        html = _body(parsed, "html")
        if html is not None:
            record["html"] = html
        # Attachments as received: file name, MIME type and the decoded bytes.
        record["attachments"] = [
            {
                "filename": part.get_filename(),
                "type": part.get_content_type(),
                "data": part.get_payload(decode=True),
            }
            for part in parsed.iter_attachments()
        ]
        with self._lock:
            self._messages.append(record)


def _body(message: EmailMessage, subtype: str) -> str | None:
    """Return the text/<subtype> body of the message, or None when it has none."""
    part = message.get_body(preferencelist=(subtype,))
    if part is None or part.get_content_subtype() != subtype:
        return None
    content: str = part.get_content()
    # SMTP carries CRLF line endings; callers compare against the text they sent.
    return content.replace("\r\n", "\n")


class _Handler:
    """aiosmtpd hooks; they run in the controller's thread."""

    def __init__(self, simulator: SmtpSimulator) -> None:
        self._simulator = simulator

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: list[str]
    ) -> str:
        """Refuse the recipient per its behaviour, or add it to the envelope."""
        refusal = self._simulator._rcpt_refusal(address)
        if refusal is not None:
            return refusal
        # The handler owns the envelope's recipient list once it implements this hook.
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Wait the recipients' latency, record the message and accept it."""
        latency = self._simulator._latency(envelope.rcpt_tos)
        if latency:
            await asyncio.sleep(latency)
        self._simulator._record(envelope)
        return "250 2.0.0 Message accepted for delivery"


def main(argv: list[str] | None = None) -> None:
    """Run the simulator in the foreground until Ctrl-C."""
    parser = argparse.ArgumentParser(description="Local SMTP server with per-address behaviours.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--slow-latency", type=float, default=2.0, help="seconds slow… waits")
    args = parser.parse_args(argv)
    simulator = SmtpSimulator(args.host, args.port, args.slow_latency)
    simulator.start()
    print(f"{simulator.host}:{simulator.port}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        print("stopping", flush=True)
    finally:
        simulator.stop()


if __name__ == "__main__":
    main()
