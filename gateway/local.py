"""Run the whole gateway on this machine: simulators, a real WSGI server and a dispatcher.

`gateway demo` and the integration tests use it; it is also the quickest way to try the gateway
by hand (see README). Nothing here talks to a real provider.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from flask import Flask
from waitress.server import create_server

from gateway import create_app, store
from gateway.core import Gateway
from gateway.dispatch import Dispatcher
from gateway.inbound.email import InboundEmailServer
from gateway.scheduler import start_scheduler
from gateway.services.keys import create_key
from gateway.simulators.smtp import SmtpSimulator
from gateway.simulators.twilio import TwilioSimulator

log = logging.getLogger("gateway.local")
SENDER_NUMBER = "+14155550000"
SENDER_EMAIL = "gateway@demo.test"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def simulator_settings(twilio: TwilioSimulator, smtp: SmtpSimulator) -> dict[str, Any]:
    """Setting overrides that point SMS and email at local simulators."""
    return {
        "twilio_account_sid": twilio.account_sid,
        "twilio_auth_token": twilio.auth_token,
        "twilio_from": SENDER_NUMBER,
        "twilio_base_url": twilio.base_url,
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "smtp_tls": "none",
        "smtp_from": SENDER_EMAIL,
    }


@dataclass
class Answer:
    status: int
    body: Any
    headers: dict[str, str]


@dataclass
class LocalGateway:
    """A gateway served by waitress on a free port, with its dispatcher and scheduler running."""

    overrides: dict[str, Any] = field(default_factory=dict)
    with_dispatcher: bool = True
    app: Flask | None = None
    url: str = ""
    key: str = ""

    def __post_init__(self) -> None:
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.dispatcher: Dispatcher | None = None
        self._scheduler: Any = None
        self._stopping = False
        self.inbound_email: InboundEmailServer | None = None

    @property
    def gw(self) -> Gateway:
        assert self.app is not None
        found: Gateway = self.app.extensions["gateway"]
        return found

    def start(self) -> LocalGateway:
        port = free_port()
        self.url = f"http://127.0.0.1:{port}"
        self.app = create_app({"public_url": self.url, **self.overrides})
        if self.with_dispatcher:
            self.dispatcher = Dispatcher(self.gw)
            self.gw.nudge = self.dispatcher.nudge
            self.dispatcher.start()
            self._scheduler = start_scheduler(self.dispatcher)
        settings = self.gw.settings
        if settings.inbound_smtp_port is not None:
            self.inbound_email = InboundEmailServer(
                self.gw, settings.inbound_smtp_host, settings.inbound_smtp_port
            ).start()
        # waitress's loop waits up to 1 s for sockets; `stop()` wakes it. (Its `asyncore_loop_timeout` is
        # read as an int: 0.1 became 0, and the loop polled without waiting, a whole CPU for as long as
        # the gateway ran.)
        self._server = create_server(self.app, host="127.0.0.1", port=port, threads=8)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self.key = self.new_key("admin")
        return self

    def _serve(self) -> None:
        try:
            self._server.run()
        except OSError:
            if not self._stopping:  # closing the sockets from stop() ends the loop this way
                raise

    def new_key(self, *scopes: str) -> str:
        with store.transaction(self.gw.engine) as session:
            _, secret = create_key(session, self.gw, "local-" + "-".join(scopes), list(scopes))
        return secret

    def stop(self) -> None:
        """Stop everything started; calling it again does nothing."""
        if self._stopping:
            return
        self._stopping = True
        if self._scheduler is not None:
            self._scheduler.shutdown(wait=False)
        if self._server is not None:
            self._close_server()
            # Requests still being handled finish before the engine goes: a connection given back to a
            # disposed pool would never be closed. Their threads end too (up to 5 s).
            self._server.task_dispatcher.shutdown(timeout=5)
        if self.inbound_email is not None:
            self.inbound_email.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop(grace=2)
        if self._thread is not None:
            self._thread.join(5)
        self.gw.engine.dispose()

    def _close_server(self) -> None:
        """Close the listening socket and every connection (a browser's keep-alive connections would keep
        waitress's loop running) on the serving thread, woken for it, so its loop ends at once and no socket
        is closed under it. Should the loop be gone or unable to wake (its trigger closed), close from
        here."""
        server = self._server
        closed = threading.Event()

        def close_all() -> None:
            try:
                for channel in list(server._map.values()):
                    if channel is not server.trigger:
                        channel.close()
                server.close()  # the trigger too: the loop's map is empty and it returns
            finally:
                closed.set()

        try:
            server.trigger.pull_trigger(close_all)
            woken = self._thread is not None and self._thread.is_alive()
        except OSError:
            woken = False
        if woken and closed.wait(5):
            return
        log.warning("waitress's loop did not close its sockets; closing them from the stopping thread")
        try:
            close_all()
        except OSError as exc:
            log.warning("closing waitress's sockets failed: %r", exc)

    def __enter__(self) -> LocalGateway:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        key: str | None = None,
        headers: dict[str, str] | None = None,
        raw: bytes | None = None,
    ) -> Answer:
        """Make one HTTP request to the gateway, as a business system would."""
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        token = self.key if key is None else key
        if token:
            request.add_header("Authorization", f"Bearer {token}")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return _answer(response.status, response.read(), dict(response.headers))
        except urllib.error.HTTPError as error:
            return _answer(error.code, error.read(), dict(error.headers))


def _answer(status: int, payload: bytes, headers: dict[str, str]) -> Answer:
    try:
        body = json.loads(payload) if payload else None
    except ValueError:
        body = payload.decode(errors="replace")
    return Answer(status, body, headers)
