"""The processes a user runs: `gateway worker` beside an API-only server, and `gateway demo`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from gateway.local import LocalGateway
from gateway.simulators.smtp import SmtpSimulator
from gateway.simulators.twilio import TwilioSimulator

ROOT = Path(__file__).resolve().parents[2]


def _api_only_and_worker(
    database_url: str, twilio: TwilioSimulator, tmp_path: Path, interval: str
) -> tuple[LocalGateway, subprocess.Popen[str]]:
    """An API-only gateway (no dispatcher) in this process, and a `gateway worker` process on the same
    database and Twilio simulator, its scheduler waking it every `interval` (its output: text, piped)."""
    api = LocalGateway(
        {
            "database_url": database_url,
            "twilio_account_sid": twilio.account_sid,
            "twilio_auth_token": twilio.auth_token,
            "twilio_from": "+14155550000",
            "twilio_base_url": twilio.base_url,
        },
        with_dispatcher=False,
    ).start()
    (tmp_path / "empty.toml").write_text("")
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "GATEWAY_CONFIG_FILE": str(tmp_path / "empty.toml"),
        "GATEWAY_DATABASE_URL": database_url,
        "GATEWAY_PUBLIC_URL": api.url,
        "GATEWAY_TWILIO_ACCOUNT_SID": twilio.account_sid,
        "GATEWAY_TWILIO_AUTH_TOKEN": twilio.auth_token,
        "GATEWAY_TWILIO_FROM": "+14155550000",
        "GATEWAY_TWILIO_BASE_URL": twilio.base_url,
        "GATEWAY_DISPATCH_INTERVAL": interval,
    }
    worker = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "worker"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    return api, worker


def test_worker_sends_what_an_api_only_process_accepted(
    database_url: str, twilio: TwilioSimulator, smtp: SmtpSimulator, tmp_path: Path
) -> None:
    api, worker = _api_only_and_worker(database_url, twilio, tmp_path, "0.2s")
    try:
        accepted = api.call(
            "POST", "/v1/messages", {"to": {"phone": "+14155550120"}, "content": {"text": "w"}}
        )
        assert accepted.status == 202
        deadline = time.monotonic() + 60  # generous: a loaded CI machine starts workers slowly
        while True:
            message = api.call("GET", f"/v1/messages/{accepted.body['id']}").body
            # The worker sends; the API process receives the delivery callback.
            if message["status"] == "delivered":
                break
            assert time.monotonic() < deadline, message
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGTERM)
        output = worker.communicate(timeout=30)[0]
        api.stop()
    assert worker.returncode == 0, output
    assert "worker" in output
    assert twilio.sends_to("+14155550120") == 1


def test_an_idle_worker_sends_at_once_what_another_process_accepted(
    database_url: str, twilio: TwilioSimulator, tmp_path: Path
) -> None:
    """The worker's scheduler tick is an hour away and its loop sleeps up to a minute when idle, so only the
    accept's wake-up (NOTIFY on PostgreSQL, `gateway.wake` on an SQLite file) gets the message out within
    the test's 20 s."""
    api, worker = _api_only_and_worker(database_url, twilio, tmp_path, "1h")
    lines: list[str] = []
    running = threading.Event()

    def read() -> None:  # the worker's output, until it ends; `running` once it says it runs
        assert worker.stdout is not None
        for line in worker.stdout:
            lines.append(line)
            if "running" in line:
                running.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        assert running.wait(60), "".join(lines)  # its dispatcher and wake-up listener are up
        time.sleep(1.0)  # its first round has found nothing: it sleeps until woken
        accepted = api.call(
            "POST", "/v1/messages", {"to": {"phone": "+14155550121"}, "content": {"text": "wake"}}
        )
        assert accepted.status == 202
        deadline = time.monotonic() + 20
        while twilio.sends_to("+14155550121") == 0:
            assert time.monotonic() < deadline, "the idle worker was not woken by the accept"
            time.sleep(0.05)
    finally:
        worker.send_signal(signal.SIGTERM)
        worker.wait(30)
        reader.join(10)
        if worker.stdout is not None:
            worker.stdout.close()
        api.stop()
    assert worker.returncode == 0, "".join(lines)
    assert twilio.sends_to("+14155550121") == 1


def test_demo_runs_to_the_end_and_shows_every_journey(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "demo"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_CONFIG_FILE": str(ROOT / "config/gateway.toml")},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert out.count("DELIVERED via sms") == 3
    assert "error transient 30008" in out
    assert "error invalid_address 21211" in out
    assert "error timeout" in out
    assert out.count("SENT via email") == 2
    assert "FAILED (all-channels-failed) via email" in out
    assert "Created routing rule japan-line-first" in out
    assert "plan: line → sms (rule japan-line-first)" in out
    assert "SENT via line" in out
    assert "the LINE stand-in 1 push" in out
    assert "plan: whatsapp → sms" in out
    assert "error unreachable 131026" in out
    assert "Authorization: Bearer gw_" in out
    # The console hint it prints works on the database it kept.
    database = out.split("GATEWAY_DATABASE_URL=", 1)[1].split()[0]
    assert f"GATEWAY_DATABASE_URL={database} gateway admin create-user you" in out
    user = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "admin", "create-user", "you", "--password-stdin"],
        env={**os.environ, "PYTHONPATH": str(ROOT), "GATEWAY_DATABASE_URL": database},
        input="a demo passphrase\n",
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert user.returncode == 0 and user.stdout.strip() == "created you", user.stderr
