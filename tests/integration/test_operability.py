"""Operability, end to end: /metrics across processes, JSON logs of one message, /readyz, breakers."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from gateway import health
from gateway.breaker import Breakers, Policy
from gateway.errors import ChannelError, ErrorKind
from gateway.local import LocalGateway, free_port, simulator_settings
from gateway.simulators.smtp import SmtpSimulator
from gateway.simulators.twilio import Behaviour, TwilioSimulator
from tests.conftest import FAST, POSTGRES_URL, eventually, postgres_schema_url, wait_for

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "metrics-token-0123456789"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# -- helpers ---------------------------------------------------------------------------------------


def parse_metrics(body: str) -> Samples:
    """Every sample of a scrape, by (sample name, labels); parsed by prometheus_client's own parser."""
    samples: Samples = {}
    for family in text_string_to_metric_families(body):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def series(samples: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {labels: v for (n, labels), v in samples.items() if n == name and v}


def scrape(url: str, token: str | None = TOKEN) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url + "/metrics")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return (
                response.status,
                response.read().decode(),
                {k.lower(): v for k, v in response.headers.items()},
            )
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), {k.lower(): v for k, v in error.headers.items()}


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return (
                response.status,
                json.loads(response.read() or b"null"),
                {k.lower(): v for k, v in response.headers.items()},
            )
    except urllib.error.HTTPError as error:
        return (
            error.code,
            json.loads(error.read() or b"null"),
            {k.lower(): v for k, v in error.headers.items()},
        )


def journey(message: dict[str, Any]) -> list[tuple[str, str, str | None]]:
    return [(a["channel"], a["status"], (a["error"] or {}).get("kind")) for a in message["attempts"]]


class Processes:
    """Gateway processes started from the command line, as an operator runs them."""

    def __init__(self, tmp_path: Path, env: dict[str, str]) -> None:
        self.tmp_path = tmp_path
        self.env = env
        self.started: list[tuple[subprocess.Popen[bytes], Path]] = []

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", *args], env=self.env, cwd=self.tmp_path, capture_output=True, timeout=60
        )
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode().strip()

    def start(self, name: str, *args: str) -> Path:
        log = self.tmp_path / f"{name}.log"
        with log.open("wb") as out:  # the child keeps its own descriptor
            process = subprocess.Popen(
                [sys.executable, "-m", *args], env=self.env, cwd=self.tmp_path, stdout=out, stderr=out
            )
        self.started.append((process, log))
        return log

    def stop(self) -> None:
        for process, _ in self.started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, log in self.started:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                raise AssertionError(f"{log.name} did not stop on SIGTERM") from None


def process_env(
    tmp_path: Path, database_url: str, twilio: TwilioSimulator, smtp: SmtpSimulator, api_url: str
) -> dict[str, str]:
    (tmp_path / "empty.toml").write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GATEWAY_", "PROMETHEUS_"))}
    settings = simulator_settings(twilio, smtp) | FAST | {"database_url": database_url, "public_url": api_url}
    env |= {f"GATEWAY_{k.upper()}": str(v) for k, v in settings.items()}
    env |= {
        "PYTHONPATH": str(ROOT),
        "GATEWAY_CONFIG_FILE": str(tmp_path / "empty.toml"),
        "GATEWAY_METRICS_TOKEN": TOKEN,
    }
    return env


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Callable[[dict[str, str]], Processes]]:
    made: list[Processes] = []

    def make(env: dict[str, str]) -> Processes:
        made.append(Processes(tmp_path, env))
        return made[-1]

    yield make
    for group in made:
        group.stop()


def call(
    url: str, key: str, body: Any, headers: dict[str, str] | None = None
) -> tuple[int, Any, dict[str, str]]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header("Authorization", f"Bearer {key}")
    for name, val in (headers or {}).items():
        request.add_header(name, val)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return (
                response.status,
                json.loads(response.read()),
                {k.lower(): v for k, v in response.headers.items()},
            )
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read()), {k.lower(): v for k, v in error.headers.items()}


def message_of(url: str, key: str, message_id: str) -> dict[str, Any]:
    status, body, _ = get(f"{url}/v1/messages/{message_id}", {"Authorization": f"Bearer {key}"})
    assert status == 200, body
    message: dict[str, Any] = body
    return message


# -- /metrics ---------------------------------------------------------------------------------------


def test_metrics_count_a_delivery_a_fallback_and_a_retry_across_processes(
    database_url: str,
    twilio: TwilioSimulator,
    smtp: SmtpSimulator,
    tmp_path: Path,
    processes: Callable[[dict[str, str]], Processes],
) -> None:
    """An API-only process (waitress, wsgi:app) and a `gateway worker` share PROMETHEUS_MULTIPROC_DIR:
    the API counts accepts and receipts (Twilio calls it back), the worker counts provider calls and
    fallbacks; one scrape of the API shows exactly the scenario's counts."""
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    env = process_env(tmp_path, database_url, twilio, smtp, api)
    (tmp_path / "prom").mkdir()
    env["PROMETHEUS_MULTIPROC_DIR"] = str(tmp_path / "prom")
    group = processes(env)
    key = group.run("gateway.cli", "keys", "create", "--scope", "admin", "--name", "ops")
    group.start("api", "waitress", "--host=127.0.0.1", f"--port={port}", "wsgi:app")
    group.start("worker", "gateway.cli", "worker")
    eventually(lambda: _up(api))

    twilio.set_behaviour("+14155550131", Behaviour("error", code=30008, fail_times=1))
    bodies = {
        "delivered": {"to": {"phone": "+14155550130"}, "content": {"text": "one"}},
        "fallback": {"to": {"phone": "+14155521211", "email": "fb@example.test"}, "content": {"text": "two"}},
        "retried": {"to": {"phone": "+14155550131"}, "content": {"text": "three"}},
    }
    ids = {}
    for name, body in bodies.items():
        status, answer, _ = call(f"{api}/v1/messages", key, body)
        assert status == 202, answer
        ids[name] = answer["id"]

    def final() -> bool:
        states = {name: message_of(api, key, mid) for name, mid in ids.items()}
        return (
            states["delivered"]["status"] == "delivered"
            and states["fallback"]["status"] == "sent"
            and states["retried"]["status"] == "delivered"
        )

    eventually(final, timeout=30)
    assert journey(message_of(api, key, ids["retried"])) == [
        ("sms", "failed", "transient"),
        ("sms", "delivered", None),
    ]

    def counted() -> Samples | None:
        status, body, headers = scrape(api)
        assert status == 200, body
        assert headers["content-type"].startswith("text/plain")
        samples = parse_metrics(body)
        done = value(samples, "gateway_receipts_total", channel="sms", status="delivered") == 2
        return samples if done and value(samples, "gateway_messages_accepted_total") == 3 else None

    samples = eventually(counted)
    assert value(samples, "gateway_messages_accepted_total") == 3
    assert series(samples, "gateway_attempts_total") == {
        frozenset({("channel", "sms"), ("outcome", "accepted")}): 3,
        frozenset({("channel", "sms"), ("outcome", "invalid_address")}): 1,
        frozenset({("channel", "email"), ("outcome", "accepted")}): 1,
    }
    assert series(samples, "gateway_fallbacks_total") == {
        frozenset({("from_channel", "sms"), ("to_channel", "email"), ("reason", "invalid_address")}): 1
    }
    assert series(samples, "gateway_retries_total") == {
        frozenset({("channel", "sms"), ("reason", "transient")}): 1
    }
    assert series(samples, "gateway_receipts_total") == {
        frozenset({("channel", "sms"), ("status", "sent")}): 2,
        frozenset({("channel", "sms"), ("status", "delivered")}): 2,
        frozenset({("channel", "sms"), ("status", "failed")}): 1,
    }
    assert value(samples, "gateway_time_to_first_attempt_seconds_count") == 3
    assert value(samples, "gateway_time_to_delivery_seconds_count", channel="sms") == 2
    assert value(samples, "gateway_provider_call_seconds_count", channel="sms") == 4
    assert value(samples, "gateway_provider_call_seconds_count", channel="email") == 1
    assert series(samples, "gateway_inbound_messages_total") == {}
    assert value(samples, "gateway_breaker_state", channel="sms") == 0
    assert value(samples, "gateway_database_up") == 1
    assert value(samples, "gateway_due_messages") == 0
    assert value(samples, "gateway_claimed_messages") == 0
    assert value(samples, "gateway_dispatcher_lag_seconds") == 0
    assert value(samples, "gateway_event_deliveries_pending") == 0
    assert len(list((tmp_path / "prom").glob("*.db"))) >= 2  # both processes wrote their own files


def _up(url: str) -> bool:
    try:
        return get(url + "/healthz")[0] == 200
    except OSError:
        return False


def test_metrics_need_the_token_and_are_off_without_one(make_gateway: Callable[..., LocalGateway]) -> None:
    off = make_gateway()
    status, body, _ = scrape(off.url)
    assert status == 404
    assert json.loads(body)["type"] == "not-found"
    on = make_gateway(metrics_token=TOKEN)
    for token in (None, "wrong", TOKEN + "x"):
        status, body, headers = scrape(on.url, token)
        assert status == 401, token
        assert headers["content-type"] == "application/problem+json"
        assert headers["www-authenticate"].startswith("Bearer")
    status, body, _ = scrape(on.url)
    assert status == 200
    samples = parse_metrics(body)
    assert value(samples, "gateway_database_up") == 1
    assert ("gateway_breaker_state", frozenset({("channel", "sms")})) in samples


# -- logs -------------------------------------------------------------------------------------------


def test_json_logs_follow_one_message_without_bodies_or_addresses(
    database_url: str,
    twilio: TwilioSimulator,
    smtp: SmtpSimulator,
    tmp_path: Path,
    processes: Callable[[dict[str, str]], Processes],
) -> None:
    """`gateway serve` with GATEWAY_LOG_FORMAT=json: the message's id runs through accept, the failed
    email attempt, the fallback, the SMS attempt and its delivery receipt; no line holds its text,
    the phone number, the email address or a credential."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = process_env(tmp_path, database_url, twilio, smtp, url)
    env |= {"GATEWAY_LOG_FORMAT": "json", "GATEWAY_LOG_LEVEL": "info"}
    group = processes(env)
    key = group.run("gateway.cli", "keys", "create", "--scope", "admin", "--name", "ops")
    log_file = group.start("serve", "gateway.cli", "serve", "--port", str(port))
    eventually(lambda: _up(url))

    text_body = "Secret order 4242 for Ada Lovelace"
    phone, email = "+1 415 555 0132", "unknown-ada@example.test"
    status, accepted, headers = call(
        f"{url}/v1/messages",
        key,
        {
            "to": {"phone": phone, "email": email},
            "content": {"text": text_body},
            "channels": ["email", "sms"],
        },
        headers={"X-Request-Id": "ops-test-42"},
    )
    assert status == 202, accepted
    assert headers["x-request-id"] == "ops-test-42"
    message_id = accepted["id"]
    eventually(lambda: message_of(url, key, message_id)["status"] == "delivered", timeout=20)
    group.stop()

    raw_lines = log_file.read_text().splitlines()
    lines = [json.loads(line) for line in raw_lines if line.startswith("{")]
    assert [line for line in raw_lines if not line.startswith("{")] == [f"gateway: serving on {url}"]
    mine = [line for line in lines if line.get("message_id") == message_id]
    events = [line["event"] for line in mine]
    assert events[0] == "message.accepted"
    for expected in ("attempt.failed", "message.fallback", "attempt.sent", "attempt.receipt"):
        assert expected in events, events
    assert events.index("attempt.failed") < events.index("message.fallback") < events.index("attempt.sent")

    accept = mine[0]
    assert accept["request_id"] == "ops-test-42"
    assert accept["plan"] == ["email", "sms"]
    failed = next(line for line in mine if line["event"] == "attempt.failed")
    assert (failed["channel"], failed["outcome"], failed["error_code"]) == ("email", "unreachable", "550")
    fallback = next(line for line in mine if line["event"] == "message.fallback")
    assert (fallback["channel"], fallback["next_channel"], fallback["reason"]) == (
        "email",
        "sms",
        "unreachable",
    )
    sent = next(line for line in mine if line["event"] == "attempt.sent")
    assert sent["channel"] == "sms" and sent["provider_message_id"].startswith("SM")
    delivered = next(line for line in mine if line.get("status") == "delivered")
    assert delivered["event"] == "attempt.receipt"
    assert delivered["attempt_id"] == sent["attempt_id"]
    assert delivered["time_to_delivery_s"] > 0
    for line in (failed, sent):
        assert {"attempt_id", "contact_id", "duration_ms", "ts", "level"} <= set(line)
        assert line["contact_id"] == accepted["contact_id"]
    http = [line for line in lines if line.get("event") == "http.request"]
    assert {"ops-test-42"} == {line["request_id"] for line in http if line["path"] == "/v1/messages"}
    assert all(line.get("request_id") for line in http)

    everything = "\n".join(raw_lines)
    for secret in (
        text_body,
        "Secret order",
        "Lovelace",
        "4155550132",
        "415 555 0132",
        "+14155550132",
        email,
        "unknown-ada",
        key,
        twilio.auth_token,
        TOKEN,
    ):
        assert secret not in everything, secret


# -- /readyz ----------------------------------------------------------------------------------------


class TcpProxy:
    """A TCP proxy in front of PostgreSQL that the test stops (dropping every connection) and restarts."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    def start(self) -> TcpProxy:
        self._server = self._run(asyncio.start_server(self._handle, "127.0.0.1", self.port))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def stop() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            self._writers.clear()

        self._run(stop())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


@pytest.fixture
def proxied_postgres() -> Iterator[tuple[str, TcpProxy]]:
    """A fresh schema on the test PostgreSQL server, reached through a TcpProxy."""
    if not POSTGRES_URL:
        pytest.skip("GATEWAY_TEST_POSTGRES_URL is not set (CI sets it)")
    url = make_url(POSTGRES_URL)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432).start()
    schema = f"t_ready_{os.getpid()}_{int(time.time() * 1000) % 100000}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    proxied = url.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        yield postgres_schema_url(proxied, schema), proxy
    finally:
        proxy.close()
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def test_readyz_turns_not_ready_when_postgresql_goes_away_and_ready_when_it_is_back(
    proxied_postgres: tuple[str, TcpProxy], twilio: TwilioSimulator, smtp: SmtpSimulator
) -> None:
    database_url, proxy = proxied_postgres
    local = LocalGateway(simulator_settings(twilio, smtp) | FAST | {"database_url": database_url}).start()
    try:
        status, body, _ = get(local.url + "/readyz")
        assert status == 200, body
        assert body["status"] == "ready"
        assert body["checks"]["database"]["ok"] is True
        assert body["checks"]["dispatcher"]["ok"] is True

        proxy.stop()  # PostgreSQL is gone, as far as the gateway can tell
        status, body, headers = eventually(lambda: _readyz_status(local, 503))
        assert headers["content-type"] == "application/problem+json"
        assert body["type"] == "not-ready"
        assert body["detail"].startswith("database: unreachable")
        assert body["checks"]["database"]["ok"] is False
        assert local.call("GET", "/healthz").status == 200  # the process itself is fine

        proxy.start()  # and back
        status, body, _ = eventually(lambda: _readyz_status(local, 200), timeout=30)
        assert body["checks"]["database"]["ok"] is True
        assert body["checks"]["dispatcher"]["ok"] is True  # the dispatcher lived through it
        accepted = local.call(
            "POST", "/v1/messages", {"to": {"phone": "+14155550133"}, "content": {"text": "x"}}
        )
        assert accepted.status == 202, accepted.body
        wait_for(local, accepted.body["id"], lambda m: m["status"] == "delivered", timeout=20)
    finally:
        local.stop()


def _readyz_status(local: LocalGateway, wanted: int) -> tuple[int, Any, dict[str, str]] | None:
    found = get(local.url + "/readyz")
    return found if found[0] == wanted else None


class _FakeDispatcher:
    """Stands for a dispatcher of this process (what /readyz looks at), with controllable state."""

    def __init__(self, gw: Any) -> None:
        self.gw = gw
        self.worker = "test:1:abc"
        self.running = True
        self.heartbeat = time.monotonic()
        self.clock = 0.0
        policy = Policy(window=4, min_calls=2, failure_ratio=0.5, cooldown=60)
        self.breakers = Breakers(["sms", "email"], policy, clock=lambda: self.clock)


def test_readyz_reports_lag_a_stalled_dispatcher_and_a_breaker_open_too_long(
    database_url: str, twilio: TwilioSimulator, smtp: SmtpSimulator
) -> None:
    settings = simulator_settings(twilio, smtp) | FAST | {"database_url": database_url}
    local = LocalGateway(
        settings | {"ready_max_lag": "0.5s", "ready_max_breaker_open": "30s"}, with_dispatcher=False
    ).start()
    try:
        status, body, _ = get(local.url + "/readyz")
        assert status == 200
        assert body["checks"]["dispatcher"]["detail"] == "none in this process (API only)"
        accepted = local.call(
            "POST", "/v1/messages", {"to": {"phone": "+14155550134"}, "content": {"text": "x"}}
        )
        assert accepted.status == 202
        time.sleep(0.7)  # nobody sends it: it is late
        status, body, _ = get(local.url + "/readyz")
        assert status == 200, body  # an API-only process still accepts durably: it stays ready
        assert body["checks"]["lag"]["ok"] is False
        assert body["checks"]["lag"]["seconds"] >= 0.5

        fake = _FakeDispatcher(local.gw)
        health.register(fake)  # type: ignore[arg-type]
        try:
            status, body, _ = get(local.url + "/readyz")
            assert status == 503
            assert body["detail"].startswith("lag: oldest due message waited")
            local.call("POST", f"/v1/messages/{accepted.body['id']}/cancel")
            assert get(local.url + "/readyz")[0] == 200

            fake.heartbeat -= 60
            status, body, _ = get(local.url + "/readyz")
            assert status == 503
            assert "dispatcher: dispatcher loop idle" in body["detail"]
            fake.heartbeat = time.monotonic()

            failure = ChannelError(ErrorKind.TRANSIENT, "HTTP 503")
            for _ in range(2):
                fake.breakers.record("sms", failure)
            assert get(local.url + "/readyz")[0] == 200  # open, but not for long yet
            fake.clock += 31
            status, body, _ = get(local.url + "/readyz")
            assert status == 503
            assert "breakers: sms open for 31 s (limit 30 s)" in body["detail"]
            assert body["checks"]["breakers"]["channels"]["sms"]["state"] == "open"
            assert body["checks"]["breakers"]["channels"]["email"]["state"] == "closed"
        finally:
            health.unregister(fake)  # type: ignore[arg-type]
    finally:
        local.stop()


# -- circuit breaker --------------------------------------------------------------------------------


def test_breaker_opens_on_failing_provider_falls_back_at_once_and_closes_after_recovery(
    make_gateway: Callable[..., LocalGateway], twilio: TwilioSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.flow")
    local = make_gateway(
        metrics_token=TOKEN,
        breaker_window=10,
        breaker_min_calls=4,
        breaker_cooldown="1.5s",
        ready_max_breaker_open="0.3s",
    )
    openings = value(parse_metrics(scrape(local.url)[1]), "gateway_breaker_openings_total", channel="sms")
    failing = [f"+1415555014{i}" for i in range(6)]
    for number in failing:  # Twilio answers every call with HTTP 503
        twilio.set_behaviour(number, Behaviour("error", code=503))

    first = []
    for number in failing[:4]:
        answer = local.call("POST", "/v1/messages", {"to": {"phone": number, "email": "a@example.test"},
                                                    "content": {"text": "x"}})  # fmt: skip
        assert answer.status == 202
        first.append(answer.body["id"])
    for message_id in first:  # each tried SMS (and failed), then fell back to email
        message = wait_for(
            local, message_id, lambda m: m["channel"] == "email" and m["status"] == "sent", timeout=45
        )
        assert journey(message)[0] == ("sms", "failed", "transient")
    assert sum(twilio.sends_to(n) for n in failing[:4]) >= 4

    status, body, _ = eventually(lambda: _readyz_status(local, 503))
    assert "breakers: sms open for" in body["detail"]
    samples = parse_metrics(scrape(local.url)[1])
    assert value(samples, "gateway_breaker_state", channel="sms") == 2
    # (a process-wide counter: earlier tests in this process may have opened breakers too)
    assert value(samples, "gateway_breaker_openings_total", channel="sms") == openings + 1

    # While open: a message that may fall back goes to email at once (no SMS retry is scheduled first),
    # and SMS is not called.
    later = local.call("POST", "/v1/messages", {"to": {"phone": failing[4], "email": "b@example.test"},
                                                "content": {"text": "y"}})  # fmt: skip
    message = wait_for(local, later.body["id"], lambda m: m["status"] == "sent")
    assert journey(message) == [("sms", "failed", "transient"), ("email", "sent", None)]
    assert message["attempts"][0]["error"]["code"] == "breaker-open"
    assert twilio.sends_to(failing[4]) == 0

    # A message with nowhere else to go waits for the cool-down instead of failing.
    twilio.set_behaviour(failing[5], Behaviour("deliver"))  # the provider recovers
    only_sms = local.call("POST", "/v1/messages", {"to": {"phone": failing[5]}, "content": {"text": "z"}})
    message = wait_for(local, only_sms.body["id"], lambda m: m["status"] == "delivered", timeout=20)
    assert journey(message)[0] == ("sms", "failed", "transient")
    assert message["attempts"][0]["error"]["code"] == "breaker-open"
    assert [a["try_number"] for a in message["attempts"]] == [1] * len(message["attempts"])
    assert twilio.sends_to(failing[5]) == 1  # the half-open probe, which closed the breaker

    eventually(lambda: _readyz_status(local, 200))
    samples = parse_metrics(scrape(local.url)[1])
    assert value(samples, "gateway_breaker_state", channel="sms") == 0
    events = [getattr(r, "event", None) for r in caplog.records if r.name == "gateway.flow"]
    transitions = [e for e in events if e and e.startswith("breaker.")]
    assert transitions == ["breaker.open", "breaker.half_open", "breaker.closed"]
    opened = next(r for r in caplog.records if getattr(r, "event", None) == "breaker.open")
    assert opened.levelno == logging.WARNING
    assert opened.channel == "sms"


# -- request ids ------------------------------------------------------------------------------------


def test_every_answer_carries_a_request_id_and_every_request_line_logs_it(
    gateway: LocalGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="gateway.http")
    given = gateway.call("GET", "/v1/messages?limit=1", headers={"X-Request-Id": "abc-123.x:y_z"})
    assert given.headers["X-Request-Id"] == "abc-123.x:y_z"
    made = gateway.call("GET", "/v1/messages/msg_nope")
    assert made.status == 404
    assert made.headers["X-Request-Id"].startswith("req_")
    for bad in ("has space", "x" * 200, "<script>", ""):
        answer = gateway.call("GET", "/healthz", headers={"X-Request-Id": bad})
        assert answer.headers["X-Request-Id"].startswith("req_"), bad
    lines = [r for r in caplog.records if r.name == "gateway.http"]
    ids = {getattr(r, "request_id", None) for r in lines}
    assert {"abc-123.x:y_z", made.headers["X-Request-Id"]} <= ids
    assert None not in ids
    by_path = {r.path: r for r in lines}
    assert by_path["/v1/messages"].levelno == logging.INFO
    assert by_path["/healthz"].levelno == logging.DEBUG  # probes stay out of INFO logs
    assert by_path["/v1/messages/msg_nope"].status == 404
