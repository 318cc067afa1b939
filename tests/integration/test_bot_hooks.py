"""Bot hooks over real sockets: a `respond` subscription answers `message.inbound` with the reply to send.

The bot is a real HTTP server whose answers (status, body, delay) the tests choose per call."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from sqlmodel import select

from gateway import store
from gateway.local import LocalGateway
from gateway.models import EventDelivery
from gateway.simulators.line import LineSimulator
from gateway.simulators.telegram import TelegramSimulator
from tests.conftest import Receiver, eventually

# HTTP status, JSON body (None: empty), and seconds to wait first or an event to wait for (at most 10 s).
Answer = tuple[int, Any, "float | threading.Event"]


class Bot:
    """A business system's bot: `decide(event, nth try of this event)` says how to answer."""

    def __init__(self, decide: Callable[[dict[str, Any], int], Answer]) -> None:
        self.decide = decide
        self.calls: list[tuple[dict[str, Any], float]] = []
        self.answered = 0  # calls answered (or given up on by the gateway)
        self._lock = threading.Lock()
        bot = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                event = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                with bot._lock:
                    bot.calls.append((event, time.monotonic()))
                    nth = sum(1 for e, _ in bot.calls if e["id"] == event["id"])
                status, body, wait = bot.decide(event, nth)
                if isinstance(wait, threading.Event):
                    wait.wait(10)
                else:
                    time.sleep(wait)
                payload = b"" if body is None else json.dumps(body).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                except OSError:  # the gateway stopped waiting
                    pass
                with bot._lock:
                    bot.answered += 1

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/bot"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def tries(self, text: str) -> int:
        with self._lock:
            return sum(1 for e, _ in self.calls if e["data"]["text"] == text)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def bots() -> Iterator[Callable[[Callable[[dict[str, Any], int], Answer]], Bot]]:
    started: list[Bot] = []

    def start(decide: Callable[[dict[str, Any], int], Answer]) -> Bot:
        started.append(Bot(decide))
        return started[-1]

    yield start
    for bot in started:
        bot.stop()


def subscribe(local: LocalGateway, url: str, respond: bool = True, events: list[str] | None = None) -> str:
    body: dict[str, Any] = {"url": url, "events": events or ["message.inbound"], "respond": respond}
    answer = local.call("POST", "/v1/webhooks", body)
    assert answer.status == 201, answer.body
    assert answer.body["respond"] is respond
    return str(answer.body["id"])


def contact_by(local: LocalGateway, query: str) -> str:
    found = eventually(lambda: local.call("GET", f"/v1/contacts?{query}").body["data"])
    return str(found[0]["id"])


def messages_of(local: LocalGateway, contact_id: str) -> list[dict[str, Any]]:
    return list(local.call("GET", f"/v1/messages?contact_id={contact_id}").body["data"])


def deliveries_to(local: LocalGateway, target: str) -> list[EventDelivery]:
    with store.transaction(local.gw.engine) as session:
        query = select(EventDelivery).where(EventDelivery.target == target).order_by(EventDelivery.id)
        return list(session.exec(query))


def test_a_bot_hook_reply_goes_back_on_the_inbound_channel_threaded(
    make_gateway: Callable[..., LocalGateway],
    line: LineSimulator,
    bots: Callable[..., Bot],
    receiver: Receiver,
) -> None:
    local = make_gateway(**line.gateway_settings(), channel_rates="line=0")
    line.connect(local.url)
    bot = bots(lambda event, nth: (200, {"reply": {"text": f"You said: {event['data']['text']}"}}, 0.0))
    hook = subscribe(local, bot.url)
    plain = subscribe(local, receiver.url, respond=False)
    assert local.call("GET", f"/v1/webhooks/{hook}").body["respond"] is True
    assert {w["id"]: w["respond"] for w in local.call("GET", "/v1/webhooks").body["data"]} == {
        hook: True,
        plain: False,
    }

    assert line.user_message("U-bot-1", "opening hours?") == 200
    eventually(lambda: line.snapshot())
    assert [(m["to"], m["text"], m["via"]) for m in line.snapshot()] == [
        ("U-bot-1", "You said: opening hours?", "reply")  # one round trip, on LINE's free reply API
    ]
    contact = contact_by(local, "identity=line:U-bot-1")
    [inbound_event] = [e for e, _ in bot.calls]
    inbound = inbound_event["data"]["id"]
    [message] = eventually(lambda: [m for m in messages_of(local, contact) if m["status"] == "sent"])
    assert (message["channel"], message["metadata"]) == ("line", {"bot_hook": hook})
    entries = local.call("GET", f"/v1/contacts/{contact}/timeline").body["data"]
    assert [(e["direction"], e["id"], e["in_reply_to"]) for e in entries][-1] == (
        "outbound",
        message["id"],
        inbound,
    )
    assert [e["data"]["id"] for e in eventually(lambda: receiver.events("message.inbound"))] == [inbound]
    [delivery] = deliveries_to(local, hook)
    assert (delivery.delivered, delivery.reply_message_id, delivery.reply_error) == (
        True,
        message["id"],
        None,
    )


def test_a_slow_or_failing_bot_hook_changes_nothing_and_blocks_nothing(
    make_gateway: Callable[..., LocalGateway],
    telegram: TelegramSimulator,
    bots: Callable[..., Bot],
    receiver: Receiver,
) -> None:
    local = make_gateway(
        **telegram.gateway_settings(),
        channel_rates="telegram=0",
        bot_hook_timeout="0.4s",
        event_backoff="30s",
    )
    telegram.connect(local.url)
    # The slow bot answers only when the test lets it: long after the gateway (0.4 s) stopped waiting.
    release = threading.Event()
    slow = bots(lambda event, nth: (200, {"reply": {"text": "too slow"}}, release))
    failing = bots(lambda event, nth: (500, {"reply": {"text": "broken"}}, 0.0))
    slow_hook, failing_hook = subscribe(local, slow.url), subscribe(local, failing.url)
    subscribe(local, receiver.url, respond=False)

    assert telegram.user_message("7401", "anyone there?") == 200  # answered while the slow bot holds on
    contact = contact_by(local, "identity=telegram:7401")
    [event] = eventually(lambda: receiver.events("message.inbound"), timeout=3)
    assert event["data"]["text"] == "anyone there?"
    entries = local.call("GET", f"/v1/contacts/{contact}/timeline").body["data"]
    assert [(e["direction"], e["id"]) for e in entries] == [("inbound", event["data"]["id"])]
    eventually(lambda: slow.tries("anyone there?") and failing.tries("anyone there?"))
    assert telegram.user_message("7402", "second person") == 200  # another contact is not held up
    eventually(lambda: len(receiver.events("message.inbound")) == 2, timeout=3)

    eventually(lambda: len([d for d in deliveries_to(local, slow_hook) if d.tries]) == 2)
    assert slow.answered == 0  # the gateway gave up on both while the bot held its answers
    [slow_delivery] = [d for d in deliveries_to(local, slow_hook) if d.contact_id == contact]
    release.set()
    eventually(lambda: slow.answered == 2)
    time.sleep(0.3)  # what the late answer could have started has had time to happen
    assert messages_of(local, contact) == [] and telegram.snapshot() == []
    assert not slow_delivery.delivered and "Timeout" in (slow_delivery.last_error or "")
    assert slow_delivery.due_at is not None  # retried like any event
    [failed_delivery] = [d for d in deliveries_to(local, failing_hook) if d.contact_id == contact]
    assert (failed_delivery.delivered, failed_delivery.last_error) == (False, "HTTP 500")
    assert failed_delivery.reply_message_id is None and slow_delivery.reply_message_id is None


def test_a_retried_bot_hook_replies_only_within_the_maximum_age(
    make_gateway: Callable[..., LocalGateway], telegram: TelegramSimulator, bots: Callable[..., Bot]
) -> None:
    local = make_gateway(
        **telegram.gateway_settings(),
        channel_rates="telegram=0",
        bot_hook_timeout="0.3s",
        bot_hook_max_age="3s",
        event_backoff="0.2s",
    )
    telegram.connect(local.url)
    slow_tries = {"quick retry": 1, "late retry": 4}  # tries that time out before the bot answers in time

    def decide(event: dict[str, Any], nth: int) -> Answer:
        text = event["data"]["text"]
        delay = 1.0 if nth <= slow_tries[text] else 0.0
        return 200, {"reply": {"text": f"re: {text}"}}, delay

    bot = bots(decide)
    hook = subscribe(local, bot.url)
    assert telegram.user_message("7501", "quick retry") == 200
    assert telegram.user_message("7502", "late retry") == 200

    eventually(lambda: telegram.snapshot())
    assert [(m["chat_id"], m["text"]) for m in telegram.snapshot()] == [("7501", "re: quick retry")]
    late = contact_by(local, "identity=telegram:7502")
    [dropped] = eventually(
        lambda: [d for d in deliveries_to(local, hook) if d.contact_id == late and d.delivered]
    )
    assert dropped.tries == 5 and dropped.reply_message_id is None
    assert "later than GATEWAY_BOT_HOOK_MAX_AGE (3s)" in (dropped.reply_error or "")
    assert messages_of(local, late) == [] and len(telegram.snapshot()) == 1


def test_a_malformed_reply_is_recorded_and_sends_nothing(
    make_gateway: Callable[..., LocalGateway],
    telegram: TelegramSimulator,
    bots: Callable[..., Bot],
    caplog: pytest.LogCaptureFixture,
) -> None:
    local = make_gateway(**telegram.gateway_settings(), channel_rates="telegram=0")
    telegram.connect(local.url)
    malformed = bots(lambda event, nth: (200, {"reply": {"text": 5, "colour": "red"}}, 0.0))
    not_asking = bots(lambda event, nth: (200, {"ok": True}, 0.0))
    bad_hook, quiet_hook = subscribe(local, malformed.url), subscribe(local, not_asking.url)

    with caplog.at_level(logging.WARNING, logger="gateway.bot_hooks"):
        assert telegram.user_message("7601", "hello") == 200
        [bad] = eventually(lambda: [d for d in deliveries_to(local, bad_hook) if d.delivered])
        [quiet] = eventually(lambda: [d for d in deliveries_to(local, quiet_hook) if d.delivered])
    assert bad.reply_message_id is None
    assert (
        bad.reply_error
        == "reply.text: Input should be a valid string; reply.colour: Extra inputs are not permitted"
    )
    assert (quiet.reply_message_id, quiet.reply_error) == (None, None)
    warnings = [r.getMessage() for r in caplog.records if r.name == "gateway.bot_hooks"]
    assert len(warnings) == 1 and bad_hook in warnings[0] and "reply.text" in warnings[0]
    contact = contact_by(local, "identity=telegram:7601")
    time.sleep(0.3)
    assert messages_of(local, contact) == [] and telegram.snapshot() == []


def test_respond_is_a_boolean_and_needs_message_inbound(gateway: LocalGateway) -> None:
    plain = gateway.call(
        "POST", "/v1/webhooks", {"url": "http://127.0.0.1:9/x", "events": ["message.status"]}
    )
    assert plain.status == 201 and plain.body["respond"] is False
    for body in (
        {"url": "http://127.0.0.1:9/x", "events": ["message.inbound"], "respond": "yes"},
        {"url": "http://127.0.0.1:9/x", "events": ["message.inbound"], "respond": 1},
        {"url": "http://127.0.0.1:9/x", "events": ["message.status"], "respond": True},
    ):
        answer = gateway.call("POST", "/v1/webhooks", body)
        assert answer.status == 422, answer.body
        assert [e["field"] for e in answer.body["errors"]] == ["respond"], answer.body
    assert [w["id"] for w in gateway.call("GET", "/v1/webhooks").body["data"]] == [plain.body["id"]]
