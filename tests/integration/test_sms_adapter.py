"""The SMS channel against the Twilio simulator over real sockets, status callbacks included."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import socket
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest

from fallbacks.sms import SmsChannel
from gateway.channels.base import OutgoingMessage, SendResult, StatusUpdate, WebhookRequest
from gateway.errors import ChannelError, ErrorKind
from gateway.settings import Settings, load_settings
from gateway.simulators.twilio import Behaviour, TwilioSimulator

DELIVERS = "+14155550100"
ROOT = Path(__file__).resolve().parents[2]


class Receiver:
    """A local HTTP endpoint standing in for the gateway's status webhook."""

    def __init__(self) -> None:
        self.requests: queue.Queue[WebhookRequest] = queue.Queue()
        received = self.requests

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                url = f"http://{self.headers['Host']}{self.path}"
                received.put(
                    WebhookRequest(
                        url=url,
                        method="POST",
                        headers=dict(self.headers.items()),
                        body=body,
                        form=dict(parse_qsl(body.decode(), keep_blank_values=True)),
                        query=dict(parse_qsl(urlsplit(url).query)),
                    )
                )
                self.send_response(204)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Keep test output clean."""

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def callback_url(self, attempt_id: str) -> str:
        return f"{self.url}/webhooks/twilio/status?attempt={attempt_id}"

    def next(self, timeout: float = 5.0) -> WebhookRequest:
        return self.requests.get(timeout=timeout)


@pytest.fixture
def sim() -> Iterator[TwilioSimulator]:
    with TwilioSimulator(callback_delay=0.02, slow_latency=1.0) as simulator:
        yield simulator


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    endpoint = Receiver()
    endpoint.thread.start()
    yield endpoint
    endpoint.server.shutdown()
    endpoint.server.server_close()


def settings_for(sim: TwilioSimulator, **overrides: Any) -> Settings:
    """Settings pointing the SMS channel at the simulator."""
    values = {
        "twilio_account_sid": sim.account_sid,
        "twilio_auth_token": sim.auth_token,
        "twilio_from": "+15005550006",
        "twilio_base_url": sim.base_url,
        "provider_timeout": 5,
    }
    return load_settings(environ={}, overrides={**values, **overrides})


def message(to: str, attempt_id: str = "att_1", **fields: Any) -> OutgoingMessage:
    return OutgoingMessage(attempt_id=attempt_id, message_id="msg_1", address=to, text="Hi", **fields)


def send_all(settings: Settings, *messages: OutgoingMessage) -> list[SendResult | ChannelError]:
    """Open a channel in a fresh loop, send each message, close; errors are returned, not raised."""

    async def run() -> list[SendResult | ChannelError]:
        channel = SmsChannel(settings)
        await channel.open()
        results: list[SendResult | ChannelError] = []
        try:
            for outgoing in messages:
                try:
                    results.append(await channel.send(outgoing))
                except ChannelError as exc:
                    results.append(exc)
        finally:
            await channel.close()
        return results

    return asyncio.run(run())


def send_one(settings: Settings, outgoing: OutgoingMessage) -> SendResult:
    [result] = send_all(settings, outgoing)
    assert isinstance(result, SendResult), result
    return result


def send_error(settings: Settings, outgoing: OutgoingMessage) -> ChannelError:
    [result] = send_all(settings, outgoing)
    assert isinstance(result, ChannelError), result
    return result


def parsed(channel: SmsChannel, request: WebhookRequest) -> StatusUpdate:
    assert channel.verify_webhook(request)
    [update] = channel.parse_status_webhook(request)
    return update


def test_delivered_message_reports_sent_then_delivered(sim: TwilioSimulator, receiver: Receiver) -> None:
    settings = settings_for(sim)
    result = send_one(settings, message(DELIVERS, status_callback_url=receiver.callback_url("a1")))
    assert result.status == "accepted"
    assert result.provider_message_id.startswith("SM") and len(result.provider_message_id) == 34

    channel = SmsChannel(settings)
    sent, delivered = receiver.next(), receiver.next()
    assert [parsed(channel, sent).status, parsed(channel, delivered).status] == [
        "sent",
        "delivered",
    ]
    update = parsed(channel, delivered)
    assert (update.provider_message_id, update.attempt_id) == (result.provider_message_id, "a1")
    assert sim.messages[0]["body"] == "Hi" and sim.sends_to(DELIVERS) == 1


def test_tampered_or_misaddressed_callbacks_are_refused(sim: TwilioSimulator, receiver: Receiver) -> None:
    settings = settings_for(sim)
    send_one(settings, message(DELIVERS, status_callback_url=receiver.callback_url("a2")))
    request = receiver.next()
    channel = SmsChannel(settings)
    assert channel.verify_webhook(request)
    status = "delivered" if request.form["MessageStatus"] == "sent" else "sent"
    tampered = {**request.form, "MessageStatus": status}
    assert not channel.verify_webhook(WebhookRequest(**{**vars(request), "form": tampered}))
    other_url = request.url.replace("attempt=a2", "attempt=a3")
    assert not channel.verify_webhook(WebhookRequest(**{**vars(request), "url": other_url}))
    lower = {key.lower(): value for key, value in request.headers.items()}
    assert channel.verify_webhook(WebhookRequest(**{**vars(request), "headers": lower}))
    wrong_token = SmsChannel(settings_for(sim, twilio_auth_token="another-token"))
    assert not wrong_token.verify_webhook(request)


@pytest.mark.parametrize(
    ("to", "kind"),
    [
        ("+14155521211", ErrorKind.INVALID_ADDRESS),
        ("+14155521614", ErrorKind.UNREACHABLE),
        ("+14155521408", ErrorKind.REJECTED),
        ("+14155521610", ErrorKind.OPTED_OUT),
        ("+14155520429", ErrorKind.RATE_LIMITED),
    ],
)
def test_synchronous_errors_raise_classified_channel_errors(
    sim: TwilioSimulator, to: str, kind: ErrorKind
) -> None:
    error = send_error(settings_for(sim), message(to))
    assert (error.kind, error.code) == (kind, to[-5:])
    assert isinstance(error.__cause__, Exception)
    assert sim.messages == [] and sim.sends_to(to) == 1


@pytest.mark.parametrize(
    ("to", "status", "kind"),
    [
        ("+14155530005", "undelivered", ErrorKind.UNREACHABLE),
        ("+14155530007", "failed", ErrorKind.BLOCKED),
    ],
)
def test_asynchronous_errors_arrive_as_failed_callbacks(
    sim: TwilioSimulator, receiver: Receiver, to: str, status: str, kind: ErrorKind
) -> None:
    settings = settings_for(sim)
    result = send_one(settings, message(to, status_callback_url=receiver.callback_url("a4")))
    request = receiver.next()
    assert request.form["MessageStatus"] == status and request.form["ErrorCode"] == to[-5:]
    update = parsed(SmsChannel(settings), request)
    assert update.status == "failed" and update.provider_message_id == result.provider_message_id
    assert update.error is not None and (update.error.kind, update.error.code) == (kind, to[-5:])


def test_fail_times_fails_first_then_delivers(sim: TwilioSimulator) -> None:
    number = "+14155550111"
    sim.set_behaviour(number, Behaviour("error", 20429, fail_times=1))
    first, second = send_all(settings_for(sim), message(number), message(number))
    assert isinstance(first, ChannelError) and first.kind == ErrorKind.RATE_LIMITED
    assert isinstance(second, SendResult)
    assert sim.sends_to(number) == 2 and len(sim.messages) == 1


def post_json(url: str, payload: object) -> Any:
    request = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def test_control_api_sets_behaviours_lists_and_resets(sim: TwilioSimulator, receiver: Receiver) -> None:
    number = "+14155550123"
    spec = {number: {"kind": "error", "code": 30008, "fail_times": 1}}
    assert post_json(f"{sim.base_url}/_sim/behaviours", spec)["ok"] is True
    settings = settings_for(sim)
    callback = receiver.callback_url("a5")
    first, second = send_all(
        settings,
        message(number, status_callback_url=callback),
        message(number, status_callback_url=callback),
    )
    assert isinstance(first, SendResult) and isinstance(second, SendResult)
    channel = SmsChannel(settings)
    updates: dict[str, list[StatusUpdate]] = {}
    for _ in range(3):
        update = parsed(channel, receiver.next())
        updates.setdefault(update.provider_message_id, []).append(update)
    [failed] = updates[first.provider_message_id]
    assert failed.status == "failed" and failed.error is not None
    assert (failed.error.kind, failed.error.code) == (ErrorKind.TRANSIENT, "30008")
    assert [u.status for u in updates[second.provider_message_id]] == ["sent", "delivered"]

    with urllib.request.urlopen(f"{sim.base_url}/_sim/messages", timeout=5) as response:
        listed = json.load(response)
    assert [m["sid"] for m in listed] == [first.provider_message_id, second.provider_message_id]
    assert post_json(f"{sim.base_url}/_sim/reset", {})["ok"] is True
    assert sim.messages == [] and sim.sends_to(number) == 0


def test_silent_number_never_calls_back(sim: TwilioSimulator, receiver: Receiver) -> None:
    settings = settings_for(sim)
    silent, delivered = send_all(
        settings,
        message("+14155599999", status_callback_url=receiver.callback_url("silent")),
        message(DELIVERS, status_callback_url=receiver.callback_url("loud")),
    )
    assert isinstance(silent, SendResult) and isinstance(delivered, SendResult)
    sids = {receiver.next().form["MessageSid"], receiver.next().form["MessageSid"]}
    assert sids == {delivered.provider_message_id}
    with pytest.raises(queue.Empty):
        receiver.next(timeout=0.3)


def test_slow_answer_beyond_the_timeout_is_transient(sim: TwilioSimulator) -> None:
    error = send_error(settings_for(sim, provider_timeout=0.2), message("+14155599998"))
    assert error.kind == ErrorKind.TRANSIENT and error.code is None


def test_refused_connection_is_transient(sim: TwilioSimulator) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    error = send_error(settings_for(sim, twilio_base_url=f"http://127.0.0.1:{port}"), message(DELIVERS))
    assert error.kind == ErrorKind.TRANSIENT


def test_wrong_credentials_are_rejected(sim: TwilioSimulator) -> None:
    error = send_error(settings_for(sim, twilio_auth_token="wrong"), message(DELIVERS))
    assert (error.kind, error.code) == (ErrorKind.REJECTED, "20003")


def test_messaging_service_and_validity_period_are_sent(sim: TwilioSimulator) -> None:
    settings = settings_for(sim, twilio_from=None, twilio_messaging_service_sid="MG" + "1" * 32)
    expires_at = datetime.now(UTC) + timedelta(minutes=10)
    send_one(settings, message(DELIVERS, expires_at=expires_at))
    [record] = sim.messages
    assert record["from"] is None and record["messaging_service_sid"] == "MG" + "1" * 32
    assert 590 <= int(record["validity_period"]) <= 600


def test_twilio_region_in_the_environment_does_not_move_the_host(
    sim: TwilioSimulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TWILIO_REGION", "au1")
    monkeypatch.setenv("TWILIO_EDGE", "sydney")
    send_one(settings_for(sim), message(DELIVERS))
    assert sim.sends_to(DELIVERS) == 1


def test_command_line_prints_its_base_url() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "gateway.simulators.twilio", "--port", "0"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT) as proc:
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
        finally:
            proc.terminate()
    assert line.startswith("http://127.0.0.1:") and not line.endswith(":0")
