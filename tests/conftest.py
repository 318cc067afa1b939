"""Shared fixtures: databases (SQLite always, PostgreSQL when GATEWAY_TEST_POSTGRES_URL is set),
provider simulators on loopback, and a gateway served by a real WSGI server."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from gateway.local import LocalGateway, simulator_settings
from gateway.simulators.line import LineSimulator
from gateway.simulators.meta import MetaSimulator
from gateway.simulators.smtp import SmtpSimulator
from gateway.simulators.telegram import TelegramSimulator
from gateway.simulators.twilio import TwilioSimulator
from gateway.simulators.viber import ViberSimulator

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL")

# Short durations so retry and fallback timing is exercised without long sleeps.
FAST = {
    "retry_backoff": "0.2s",
    "retry_max_backoff": "1s",
    "retry_jitter": 0,
    "dispatch_interval": "0.2s",
    "channel_rates": "sms=0",
}


def process_env(
    database_url: str, twilio: TwilioSimulator, smtp: SmtpSimulator, port: int, tmp: Path, **extra: str
) -> dict[str, str]:
    """Environment for a `gateway` command run as a child process: simulators, database, an empty
    config file, the given public port; `extra` maps GATEWAY_* names to values."""
    config = tmp / "gateway.toml"
    config.write_text("")
    settings = simulator_settings(twilio, smtp) | {
        "database_url": database_url,
        "public_url": f"http://127.0.0.1:{port}",
    }
    return {
        **os.environ,
        "PYTHONPATH": str(Path(__file__).resolve().parent.parent),
        "GATEWAY_CONFIG_FILE": str(config),
        **{f"GATEWAY_{name.upper()}": str(value) for name, value in settings.items()},
        **extra,
    }


def postgres_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty database: a SQLite file, or a new PostgreSQL schema dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/gateway.db"
        return
    if not POSTGRES_URL:
        pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set (CI sets it)")
    schema = "t_" + secrets.token_hex(6)
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield postgres_schema_url(POSTGRES_URL, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@pytest.fixture
def twilio() -> Iterator[TwilioSimulator]:
    with TwilioSimulator(callback_delay=0.05) as sim:
        yield sim


@pytest.fixture
def smtp() -> Iterator[SmtpSimulator]:
    with SmtpSimulator() as sim:
        yield sim


@pytest.fixture
def meta() -> Iterator[MetaSimulator]:
    with MetaSimulator(webhook_delay=0.1) as sim:
        yield sim


@pytest.fixture
def telegram() -> Iterator[TelegramSimulator]:
    with TelegramSimulator() as sim:
        yield sim


@pytest.fixture
def line() -> Iterator[LineSimulator]:
    with LineSimulator() as sim:
        yield sim


@pytest.fixture
def viber() -> Iterator[ViberSimulator]:
    with ViberSimulator() as sim:
        yield sim


@pytest.fixture
def make_gateway(
    database_url: str, twilio: TwilioSimulator, smtp: SmtpSimulator
) -> Iterator[Callable[..., LocalGateway]]:
    """Start a gateway (API + dispatcher on a real WSGI server) with extra setting overrides."""
    started: list[LocalGateway] = []

    def start(**overrides: Any) -> LocalGateway:
        settings = simulator_settings(twilio, smtp) | {"database_url": database_url} | FAST | overrides
        local = LocalGateway(settings).start()
        started.append(local)
        return local

    yield start
    for local in started:
        local.stop()


@pytest.fixture
def gateway(make_gateway: Callable[..., LocalGateway]) -> LocalGateway:
    return make_gateway()


def wait_for(
    local: LocalGateway,
    message_id: str,
    done: Callable[[dict[str, Any]], bool],
    timeout: float = 15.0,
) -> dict[str, Any]:
    """Poll GET /v1/messages/{id} until `done(message)`; fail with the last state otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        message = local.call("GET", f"/v1/messages/{message_id}").body
        if done(message):
            return message
        if time.monotonic() > deadline:
            raise AssertionError(f"message did not get there in {timeout}s: {message}")
        time.sleep(0.05)


def eventually(check: Callable[[], Any], timeout: float = 15.0, every: float = 0.05) -> Any:
    """Call `check` until it returns something truthy; fail with its last answer otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        assert time.monotonic() < deadline, f"not reached in {timeout}s: {found!r}"
        time.sleep(every)


def status_is(*statuses: str) -> Callable[[dict[str, Any]], bool]:
    return lambda m: m["status"] in statuses


class Receiver:
    """A business system's webhook endpoint: a real HTTP server recording what it is sent."""

    def __init__(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.calls: list[tuple[dict[str, str], bytes]] = []
        self.status = 200
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                status = receiver.status
                if status < 300:
                    with receiver._lock:
                        receiver.calls.append((dict(self.headers.items()), body))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def events(self, kind: str | None = None) -> list[dict[str, Any]]:
        import json

        with self._lock:
            found = [json.loads(body) for _, body in self.calls]
        return [e for e in found if kind is None or e["type"] == kind]

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.stop()


# -- the admin console ----------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "docs" / "screenshots"
ADMIN_PASSWORD = "correct horse battery staple"


@pytest.fixture
def admin_user(gateway: LocalGateway) -> str:
    """A console user `ada` with ADMIN_PASSWORD; returns the name."""
    from gateway import store
    from gateway.services import admin_users

    with store.transaction(gateway.gw.engine) as session:
        admin_users.create_user(session, "ada", ADMIN_PASSWORD, gateway.gw.clock())
    return "ada"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    """Debian's chromium driven by Playwright (never a downloaded browser); skips when it is missing.

    Module-scoped: Playwright's sync API keeps an event loop running in the main thread while it is
    open, which would break later tests that call asyncio.run()."""
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed (.ci/run installs Debian's chromium package)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
            ],
        )
        yield browser
        browser.close()


@pytest.fixture
def page(chromium: Any) -> Iterator[Any]:
    """A fresh browser context and page (own cookies), 1280 px wide."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(15_000)
    yield context.new_page()
    context.close()


def sign_in(page: Any, local: LocalGateway, name: str = "ada", password: str = ADMIN_PASSWORD) -> None:
    """Sign in through the form and land on the dashboard."""
    page.goto(f"{local.url}/admin/login")
    page.get_by_label("Name").fill(name)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{local.url}/admin/")


def screenshot(page: Any, name: str) -> None:
    """Save the page as docs/screenshots/<name>.png (embedded in the README)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
