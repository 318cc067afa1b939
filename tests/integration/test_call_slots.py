"""GATEWAY_DISPATCH_CONCURRENCY bounds provider calls, not claims: a dispatcher claims a few times more ahead
(so it claims and records in bigger batches), fewer when its calls are slow, and a claim that waited for a
call slot until its lease could run out during the call is not used: it expires and is sent once, later.

The dispatcher's logic does not depend on the database, so these run on SQLite alone."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from gateway import metrics
from gateway.dispatch import CLAIM_AHEAD
from gateway.local import LocalGateway, simulator_settings
from gateway.simulators.smtp import SmtpSimulator
from gateway.simulators.twilio import Behaviour, TwilioSimulator
from tests.conftest import FAST, status_is, wait_for


@pytest.fixture
def start(tmp_path: Path, twilio: TwilioSimulator, smtp: SmtpSimulator) -> Iterator[Any]:
    started: list[LocalGateway] = []

    def run(**overrides: Any) -> LocalGateway:
        url = f"sqlite:///{tmp_path / 'slots.db'}"
        local = LocalGateway(simulator_settings(twilio, smtp) | {"database_url": url} | FAST | overrides)
        started.append(local.start())
        return local

    yield run
    for local in started:
        local.stop()


def send(local: LocalGateway, numbers: list[str]) -> list[str]:
    body = {"messages": [{"to": {"phone": n}, "content": {"text": "slots"}} for n in numbers]}
    answer = local.call("POST", "/v1/messages/batch", body)
    assert answer.status == 202, answer
    return [result["id"] for result in answer.body["results"]]


def claimed(local: LocalGateway) -> int:
    with local.gw.engine.connect() as connection:
        found: int = connection.execute(
            text("SELECT count(*) FROM message WHERE claimed_by IS NOT NULL")
        ).scalar_one()
        return found


@contextlib.contextmanager
def watching_claims(local: LocalGateway) -> Iterator[list[int]]:
    """The most messages claimed at once while the block ran (sampled every 20 ms), in a one-item list."""
    most, done = [0], threading.Event()

    def watch() -> None:
        while not done.is_set():
            most[0] = max(most[0], claimed(local))
            time.sleep(0.02)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        yield most
    finally:
        done.set()
        watcher.join()


def test_provider_calls_stay_within_the_limit_while_more_are_claimed_ahead(
    start: Any, twilio: TwilioSimulator
) -> None:
    limit = 4
    numbers = [f"+1415555{3000 + i:04d}" for i in range(6 * limit)]
    for number in numbers:
        twilio.set_behaviour(number, Behaviour("deliver", latency=0.15))
    local = start(dispatch_concurrency=str(limit))
    with watching_claims(local) as most:
        ids = send(local, numbers)
        for message_id in ids:
            wait_for(local, message_id, status_is("delivered"), timeout=20)
    assert twilio.peak_in_flight == limit  # the limit was reached and never passed
    assert limit < most[0] <= CLAIM_AHEAD * limit
    assert all(twilio.sends_to(n) == 1 for n in numbers)


def test_slow_calls_hold_fewer_claims_so_none_waits_too_long(start: Any, twilio: TwilioSimulator) -> None:
    # Two slots, 1 s calls and an 8 s lease, of which a claim may spend 4 s waiting for its slot: the
    # dispatcher holds its two calls and what they start in 2 s (four more), not CLAIM_AHEAD * 2 = 16.
    # Holding all twelve at once, the last would wait 5 s and be abandoned.
    numbers = [f"+1415555{3300 + i}" for i in range(12)]
    for number in numbers:
        twilio.set_behaviour(number, Behaviour("deliver", latency=1.0))
    local = start(dispatch_concurrency="2", dispatch_lease="8s")
    with watching_claims(local) as most:
        ids = send(local, numbers)
        for message_id in ids:
            wait_for(local, message_id, status_is("delivered"), timeout=30)
    assert local.dispatcher is not None and local.dispatcher.abandoned == 0
    assert 2 < most[0] <= 2 + 4
    assert [twilio.sends_to(n) for n in numbers] == [1] * len(numbers)
    assert twilio.peak_in_flight == 2


def test_a_claim_that_waited_too_long_for_a_slot_expires_and_is_sent_once(
    start: Any, twilio: TwilioSimulator
) -> None:
    # One call at a time and a 2 s lease, of which a claim may spend 1 s waiting for its call slot. The first
    # message's call takes 1.5 s; the others, sent once it is under way, 0.1 s. The dispatcher holds the
    # claim in the call and one more (the fewest it holds), which would start after its 1 s, so it waits for
    # it to expire; until it has, it still counts against the claims the dispatcher may hold. (With a lease
    # this short a claim that waited almost 1 s may still be used, and a 1.5 s call would then outlast its
    # lease, so only the message that never waits is slow.)
    slow, *fast = [f"+1415555{3100 + i}" for i in range(4)]
    twilio.set_behaviour(slow, Behaviour("deliver", latency=1.5))
    for number in fast:
        twilio.set_behaviour(number, Behaviour("deliver", latency=0.1))
    numbers = [slow, *fast]
    local = start(dispatch_concurrency="1", dispatch_lease="2s")
    counted = metrics.CLAIMS_ABANDONED._value.get()  # process-wide: earlier tests may have counted some
    with watching_claims(local) as most:
        ids = send(local, [slow])
        deadline = time.monotonic() + 10
        while twilio.in_flight == 0:  # the slow call is under way
            assert time.monotonic() < deadline, "the first message was not sent"
            time.sleep(0.005)
        ids += send(local, fast)
        for message_id in ids:
            wait_for(local, message_id, status_is("delivered"), timeout=40)
    assert local.dispatcher is not None and local.dispatcher.abandoned >= 1
    assert metrics.CLAIMS_ABANDONED._value.get() == counted + local.dispatcher.abandoned
    assert [twilio.sends_to(n) for n in numbers] == [1] * len(numbers)  # nothing was sent twice
    assert twilio.peak_in_flight == 1
    assert most[0] <= 2


def test_claims_waiting_for_a_slot_at_stop_are_given_back_unsent(start: Any, twilio: TwilioSimulator) -> None:
    numbers = [f"+1415555{3200 + i}" for i in range(3)]
    for number in numbers:
        twilio.set_behaviour(number, Behaviour("deliver", latency=1.0))
    # With a 5 s provider timeout a call is estimated to take 5 s until one has ended: the dispatcher holds
    # what one slot starts in half of the 105 s a claim may wait, so all three.
    local = start(dispatch_concurrency="1", provider_timeout="5s")
    send(local, numbers)
    deadline = time.monotonic() + 10
    while twilio.in_flight == 0:
        assert time.monotonic() < deadline, "the first send never started"
        time.sleep(0.01)
    assert claimed(local) == 3
    local.stop()  # waits for the send under way; the two behind it never start
    assert sum(twilio.sends_to(n) for n in numbers) == 1
    assert claimed(local) == 0  # given back at once, not left to expire
