"""The per-channel circuit breaker, on a fake clock, and the `fallback_now` decision it leads to."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.breaker import BREAKER_CODE, Breaker, Breakers, Policy, Snapshot, State
from gateway.channels.base import SendResult
from gateway.errors import ChannelError, ErrorKind
from gateway.progress import NextStep, Retry, decide_after_error
from gateway.routing import RetrySpec

FAIL = ChannelError(ErrorKind.TRANSIENT, "HTTP 503")
OK = SendResult("SM1")
NOW = datetime(2026, 1, 1, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock, changes: list[tuple[State, State]] | None = None, **policy: float) -> Breaker:
    def listen(snapshot: Snapshot, before: State) -> None:
        if changes is not None:
            changes.append((before, snapshot.state))

    values = {"window": 20, "min_calls": 10, "failure_ratio": 0.5, "cooldown": 30.0} | policy
    return Breaker("sms", Policy(**values), clock, listen)  # type: ignore[arg-type]


def test_stays_closed_below_the_minimum_number_of_calls(clock: Clock) -> None:
    b = breaker(clock)
    for _ in range(9):
        b.record(FAIL)
    assert b.state == State.CLOSED
    assert b.admit() is None
    b.record(FAIL)
    assert b.state == State.OPEN


def test_opens_at_half_of_the_last_twenty_calls_failing(clock: Clock) -> None:
    b = breaker(clock)
    for _ in range(11):
        b.record(OK)
    for _ in range(9):
        b.record(FAIL)
    assert b.state == State.CLOSED  # 9 of 20
    b.record(FAIL)  # the oldest success leaves the window: 10 of 20
    assert b.state == State.OPEN
    assert b.snapshot().failures == 10 and b.snapshot().calls == 20


def test_only_transient_failures_count(clock: Clock) -> None:
    b = breaker(clock)
    for kind in (ErrorKind.INVALID_ADDRESS, ErrorKind.RATE_LIMITED, ErrorKind.OPTED_OUT, ErrorKind.REJECTED):
        for _ in range(5):
            b.record(ChannelError(kind, "per-recipient answer"))
    assert b.state == State.CLOSED
    assert b.snapshot().failures == 0


def test_open_refuses_until_the_cooldown_then_lets_one_probe_through(clock: Clock) -> None:
    changes: list[tuple[State, State]] = []
    b = breaker(clock, changes, min_calls=2)
    b.record(FAIL)
    b.record(FAIL)
    assert b.admit() == pytest.approx(30.0)
    clock.now += 20
    assert b.admit() == pytest.approx(10.0)
    clock.now += 10
    assert b.admit() is None  # the probe
    assert b.state == State.HALF_OPEN
    assert b.admit() == pytest.approx(30.0)  # only one probe at a time
    b.record(OK)
    assert b.state == State.CLOSED
    assert b.admit() is None and b.admit() is None
    assert b.snapshot().calls == 0  # a fresh window after closing
    assert changes == [
        (State.CLOSED, State.OPEN),
        (State.OPEN, State.HALF_OPEN),
        (State.HALF_OPEN, State.CLOSED),
    ]


def test_a_failed_probe_opens_it_for_another_cooldown_and_open_time_adds_up(clock: Clock) -> None:
    b = breaker(clock, min_calls=2)
    b.record(FAIL)
    b.record(FAIL)
    clock.now += 30
    assert b.admit() is None
    b.record(FAIL)
    assert b.state == State.OPEN
    assert b.admit() == pytest.approx(30.0)
    clock.now += 5
    assert b.snapshot().open_for == pytest.approx(35.0)  # since the outage began, not the last probe
    clock.now += 25
    assert b.admit() is None
    b.record(OK)
    assert b.snapshot().open_for == 0.0


def test_a_probe_that_never_reports_frees_the_slot(clock: Clock) -> None:
    b = breaker(clock, min_calls=2, probe_timeout=60)
    b.record(FAIL)
    b.record(FAIL)
    clock.now += 30
    assert b.admit() is None  # a probe whose task is then cancelled
    clock.now += 59
    assert b.admit() is not None
    clock.now += 2
    assert b.admit() is None


def test_a_late_answer_while_open_changes_nothing(clock: Clock) -> None:
    b = breaker(clock, min_calls=2)
    b.record(FAIL)
    b.record(FAIL)
    b.record(OK)  # a call admitted before the breaker opened
    assert b.state == State.OPEN


def test_board_refuses_with_an_error_that_falls_back_now(clock: Clock) -> None:
    board = Breakers(["sms", "email"], Policy(window=4, min_calls=2, cooldown=10), clock)
    assert board.refuse("sms") is None
    board.record("sms", FAIL)
    board.record("sms", FAIL)
    refused = board.refuse("sms")
    assert refused is not None
    assert (refused.kind, refused.code, refused.fallback_now) == (ErrorKind.TRANSIENT, BREAKER_CODE, True)
    assert refused.retry_after == pytest.approx(10.0)
    assert board.refuse("email") is None  # channels are independent
    assert board.refuse("whatsapp") is None  # a channel without a breaker is never refused
    states = {s.channel: s.state for s in board.snapshots()}
    assert states == {"sms": State.OPEN, "email": State.CLOSED}


RETRY = RetrySpec(attempts=3, backoff=30.0, multiplier=2.0, max_backoff=1800.0)


def decide(step_index: int, steps: int, try_number: int = 1, fallback_now: bool = True) -> object:
    return decide_after_error(
        ErrorKind.TRANSIENT, 7.0, step_index, steps, try_number, RETRY, 0.0, NOW, 0.5,
        fallback_now=fallback_now,
    )  # fmt: skip


def test_fallback_now_moves_to_the_next_step_without_retrying() -> None:
    assert decide(0, 2) == NextStep(1)
    assert decide(0, 2, fallback_now=False) == Retry(NOW + timedelta(seconds=30), True)


def test_fallback_now_on_the_last_step_waits_for_the_cooldown_without_counting_a_try() -> None:
    assert decide(1, 2, try_number=3) == Retry(NOW + timedelta(seconds=7), counts_as_try=False)
    assert decide(0, 1) == Retry(NOW + timedelta(seconds=7), counts_as_try=False)


def test_fallback_now_never_bypasses_an_opt_out() -> None:
    decision = decide_after_error(
        ErrorKind.OPTED_OUT, None, 0, 2, 1, RETRY, 0.0, NOW, 0.5, False, fallback_now=True
    )
    assert decision.__class__.__name__ == "GiveUp"
