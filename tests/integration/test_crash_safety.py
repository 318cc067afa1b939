"""Kill -9 a serving gateway mid-dispatch; after a restart every accepted message reaches a final state."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from gateway.dispatch import CLAIM_AHEAD
from gateway.local import LocalGateway, free_port
from gateway.simulators.smtp import SmtpSimulator
from gateway.simulators.twilio import Behaviour, TwilioSimulator
from tests.conftest import process_env

COUNT = 200
CONCURRENCY = 8
NUMBERS = [f"+1415555{2000 + i:04d}" for i in range(COUNT)]


def _env(
    database_url: str, twilio: TwilioSimulator, smtp: SmtpSimulator, port: int, tmp: Path
) -> dict[str, str]:
    extra = {
        "GATEWAY_DISPATCH_CONCURRENCY": str(CONCURRENCY),
        "GATEWAY_DISPATCH_LEASE": "2s",
        "GATEWAY_DISPATCH_INTERVAL": "0.2s",
        "GATEWAY_CHANNEL_RATES": "sms=0",
        "GATEWAY_API_RATE_LIMIT": "0",  # the test polls 200 messages as fast as it can
        "GATEWAY_LOG_LEVEL": "warning",
        # Receipts the simulator posted while the gateway was down are lost (as with Twilio); the
        # step's timer then ends those messages as `sent`.
        "GATEWAY_DEFAULT_AFTER": "3s",
    }
    return process_env(database_url, twilio, smtp, port, tmp, **extra)


def _serve(env: dict[str, str], port: int, tmp: Path) -> subprocess.Popen[bytes]:
    with (tmp / f"serve-{time.monotonic_ns()}.log").open("wb") as log:  # the child keeps its own copy
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)],
            env=env,
            cwd=tmp,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    client = LocalGateway()
    client.url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if client.call("GET", "/healthz", key="").status == 200:
                return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("gateway serve did not come up")


def _client(port: int, key: str) -> LocalGateway:
    client = LocalGateway()
    client.url = f"http://127.0.0.1:{port}"
    client.key = key
    return client


def _final_state(client: LocalGateway, message_id: str) -> str | None:
    """`delivered`, or `sent` once the last step's timer ran out; None while still in progress."""
    answer = client.call("GET", f"/v1/messages/{message_id}")
    assert answer.status == 200, answer.body
    message = answer.body
    if message["status"] == "delivered":
        return "delivered"
    last = message["attempts"][-1]
    if message["status"] == "sent" and (last["error"] or {}).get("kind") == "timeout":
        return "sent"
    return None


def test_kill_9_mid_dispatch_loses_nothing(
    database_url: str, twilio: TwilioSimulator, smtp: SmtpSimulator, tmp_path: Path
) -> None:
    for number in NUMBERS:
        twilio.set_behaviour(number, Behaviour(kind="deliver", latency=0.25))
    port = free_port()
    env = _env(database_url, twilio, smtp, port, tmp_path)
    key = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "keys", "create", "--scope", "admin", "--name", "crash"],
        env=env, cwd=tmp_path, check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    first = _serve(env, port, tmp_path)
    try:
        client = _client(port, key)
        batch = [{"to": {"phone": n}, "content": {"text": f"crash test {n}"}} for n in NUMBERS]
        answer = client.call("POST", "/v1/messages/batch", {"messages": batch})
        assert answer.status == 202
        ids = [r["id"] for r in answer.body["results"]]
        assert len(ids) == COUNT
        deadline = time.monotonic() + 30
        while len(twilio.messages) < COUNT // 4:
            assert time.monotonic() < deadline, "dispatch did not start"
            time.sleep(0.02)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    sent_before_restart = len(twilio.messages)
    assert sent_before_restart < COUNT, "the kill came too late to test anything"

    second = _serve(env, port, tmp_path)
    try:
        client = _client(port, key)
        deadline = time.monotonic() + 90
        pending = set(ids)
        finals: dict[str, str] = {}
        while pending:
            for message_id in list(pending):
                state = _final_state(client, message_id)
                if state is not None:
                    finals[message_id] = state
                    pending.discard(message_id)
            assert time.monotonic() < deadline, f"{len(pending)} messages not final"
            time.sleep(0.3)
    finally:
        second.send_signal(signal.SIGTERM)
        assert second.wait(30) == 0  # graceful stop on SIGTERM

    duplicates = sum(max(0, twilio.sends_to(n) - 1) for n in NUMBERS)
    delivered = sum(1 for s in finals.values() if s == "delivered")
    print(
        f"\ncrash test: {sent_before_restart}/{COUNT} sent before kill -9; after restart all final "
        f"({delivered} delivered, {COUNT - delivered} sent with receipts lost); {duplicates} duplicate sends"
    )
    assert all(twilio.sends_to(n) >= 1 for n in NUMBERS)
    # Only sends in flight at the kill, or made and not yet recorded, may be repeated: at most the messages
    # the dispatcher held claimed (CLAIM_AHEAD per call slot).
    assert duplicates <= CLAIM_AHEAD * CONCURRENCY


@pytest.fixture
def twilio() -> Any:
    with TwilioSimulator(callback_delay=0.05) as sim:
        yield sim
