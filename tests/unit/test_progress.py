"""`decide_after_error` and `backoff_seconds`: what follows a failed try."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from gateway.errors import ErrorKind
from gateway.progress import GiveUp, NextStep, Retry, backoff_seconds, decide_after_error
from gateway.routing import RetrySpec

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
RETRY = RetrySpec(attempts=3, backoff=30.0, multiplier=2.0, max_backoff=1800.0)

FALL_BACK_AT_ONCE = [
    ErrorKind.UNREACHABLE,
    ErrorKind.BLOCKED,
    ErrorKind.INVALID_ADDRESS,
    ErrorKind.REJECTED,
    ErrorKind.OPTED_OUT,
    ErrorKind.WINDOW_CLOSED,
]


def decide(
    kind: str,
    *,
    retry_after: float | None = None,
    step_index: int = 0,
    steps: int = 3,
    try_number: int = 1,
    retry: RetrySpec = RETRY,
    jitter: float = 0.0,
    rand: float = 0.5,
) -> Retry | NextStep | GiveUp:
    return decide_after_error(kind, retry_after, step_index, steps, try_number, retry, jitter, NOW, rand)


# -- rate_limited ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("try_number", "step_index"), [(1, 0), (3, 0), (7, 2)])
def test_rate_limited_retries_after_retry_after_without_counting_a_try(
    try_number: int, step_index: int
) -> None:
    decision = decide(ErrorKind.RATE_LIMITED, retry_after=12.5, try_number=try_number, step_index=step_index)
    assert decision == Retry(NOW + timedelta(seconds=12.5), counts_as_try=False)


def test_rate_limited_without_retry_after_waits_the_backoff() -> None:
    assert decide(ErrorKind.RATE_LIMITED) == Retry(NOW + timedelta(seconds=30), counts_as_try=False)


def test_rate_limited_retry_after_zero_is_now() -> None:
    assert decide(ErrorKind.RATE_LIMITED, retry_after=0.0) == Retry(NOW, counts_as_try=False)


# -- transient ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("try_number", "delay"), [(1, 30.0), (2, 60.0)])
def test_transient_retries_with_backoff_while_tries_remain(try_number: int, delay: float) -> None:
    decision = decide(ErrorKind.TRANSIENT, try_number=try_number)
    assert decision == Retry(NOW + timedelta(seconds=delay), counts_as_try=True)


def test_transient_retry_is_spread_by_jitter() -> None:
    low = decide(ErrorKind.TRANSIENT, jitter=0.2, rand=0.0)
    high = decide(ErrorKind.TRANSIENT, jitter=0.2, rand=1.0)
    assert low == Retry(NOW + timedelta(seconds=24), counts_as_try=True)
    assert high == Retry(NOW + timedelta(seconds=36), counts_as_try=True)


def test_transient_moves_to_the_next_step_when_tries_run_out() -> None:
    assert decide(ErrorKind.TRANSIENT, try_number=3, step_index=0, steps=3) == NextStep(1)
    assert decide(ErrorKind.TRANSIENT, try_number=3, step_index=1, steps=3) == NextStep(2)


def test_transient_on_the_last_step_gives_up_when_tries_run_out() -> None:
    assert decide(ErrorKind.TRANSIENT, try_number=3, step_index=2, steps=3) == GiveUp("all-channels-failed")


def test_transient_with_a_single_attempt_never_retries() -> None:
    one_try = RetrySpec(attempts=1, backoff=30.0, multiplier=2.0, max_backoff=1800.0)
    assert decide(ErrorKind.TRANSIENT, retry=one_try, steps=2) == NextStep(1)


# -- kinds that fall back at once -----------------------------------------------------------------


@pytest.mark.parametrize("kind", FALL_BACK_AT_ONCE)
@pytest.mark.parametrize(("step_index", "steps"), [(0, 2), (1, 3), (3, 5)])
def test_fall_back_at_once(kind: ErrorKind, step_index: int, steps: int) -> None:
    assert decide(kind, step_index=step_index, steps=steps, try_number=1) == NextStep(step_index + 1)


@pytest.mark.parametrize("kind", FALL_BACK_AT_ONCE)
def test_fall_back_at_once_ignores_retry_after(kind: ErrorKind) -> None:
    assert decide(kind, retry_after=60.0, steps=2) == NextStep(1)


@pytest.mark.parametrize("kind", FALL_BACK_AT_ONCE)
@pytest.mark.parametrize(("step_index", "steps"), [(0, 1), (2, 3)])
def test_failure_on_the_last_step_gives_up(kind: ErrorKind, step_index: int, steps: int) -> None:
    decision = decide(kind, step_index=step_index, steps=steps)
    assert decision == GiveUp("all-channels-failed")


# -- backoff_seconds ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("try_number", "seconds"),
    [(1, 30.0), (2, 60.0), (3, 120.0), (4, 240.0), (5, 480.0), (6, 960.0), (7, 1800.0), (20, 1800.0)],
)
def test_backoff_grows_exponentially_up_to_the_cap(try_number: int, seconds: float) -> None:
    assert backoff_seconds(try_number, RETRY, jitter=0.0, rand=0.9) == seconds


def test_backoff_with_multiplier_one_is_constant() -> None:
    flat = RetrySpec(attempts=5, backoff=10.0, multiplier=1.0, max_backoff=1800.0)
    assert [backoff_seconds(n, flat, 0.0, 0.0) for n in range(1, 5)] == [10.0, 10.0, 10.0, 10.0]


def test_backoff_with_other_multiplier() -> None:
    triple = RetrySpec(attempts=5, backoff=5.0, multiplier=3.0, max_backoff=100.0)
    assert [backoff_seconds(n, triple, 0.0, 0.0) for n in range(1, 5)] == [5.0, 15.0, 45.0, 100.0]


@pytest.mark.parametrize(
    ("jitter", "rand", "seconds"),
    [
        (0.2, 0.0, 48.0),
        (0.2, 0.5, 60.0),
        (0.2, 1.0, 72.0),
        (0.5, 0.0, 30.0),
        (0.5, 1.0, 90.0),
        (1.0, 0.0, 0.0),
        (1.0, 1.0, 120.0),
    ],
)
def test_backoff_jitter_bounds(jitter: float, rand: float, seconds: float) -> None:
    assert backoff_seconds(2, RETRY, jitter, rand) == pytest.approx(seconds)


@pytest.mark.parametrize("rand", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_backoff_is_never_negative(rand: float) -> None:
    assert backoff_seconds(1, RETRY, jitter=1.5, rand=rand) >= 0.0


@pytest.mark.parametrize("rand", [0.0, 0.5, 1.0])
def test_jittered_backoff_never_exceeds_max_backoff(rand: float) -> None:
    # `retry_max_backoff` is documented as "longest delay between retries".
    assert backoff_seconds(20, RETRY, jitter=0.2, rand=rand) <= RETRY.max_backoff
