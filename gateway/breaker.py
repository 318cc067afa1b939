"""Circuit breakers: one per channel, in each dispatcher process.

    closed ──most recent calls failed transiently──▶ open ──cool-down──▶ half-open ──probe ok──▶ closed
                                                       ▲                     │
                                                       └────probe failed─────┘

Closed, every call goes to the provider and its outcome is remembered (the last `window` calls). When at
least `min_calls` are remembered and `failure_ratio` of them failed transiently (5xx, timeouts, broken
connections: `ErrorKind.TRANSIENT`), the breaker opens: the dispatcher stops calling that provider and
answers each send itself with a `ChannelError(TRANSIENT, code="breaker-open", fallback_now=True)`, so a
message that has another planned channel falls back at once, and one on its last step is retried after
the remaining cool-down (not counted as a try). After `cooldown` one probe call is let through (half-open);
its success closes the breaker, its failure opens it for another cool-down. Other answers (invalid number,
opt-out, rate limiting) say the provider is up and count as successes.

Each dispatcher process decides alone from its own calls; state changes are logged and exported as the
`gateway_breaker_state` gauge, and `/readyz` of a process with a dispatcher reports them.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum

from gateway.channels.base import SendResult
from gateway.errors import ChannelError, ErrorKind
from gateway.settings import Settings

BREAKER_CODE = "breaker-open"


class State(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


STATE_VALUE = {State.CLOSED: 0, State.HALF_OPEN: 1, State.OPEN: 2}


@dataclass(frozen=True)
class Policy:
    window: int = 20
    min_calls: int = 10
    failure_ratio: float = 0.5
    cooldown: float = 30.0
    # A probe whose outcome never came back (its task was cancelled) frees the probe slot after this.
    probe_timeout: float = 60.0

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls(
            window=settings.breaker_window,
            min_calls=min(settings.breaker_min_calls, settings.breaker_window),
            failure_ratio=settings.breaker_failure_ratio,
            cooldown=settings.breaker_cooldown,
            probe_timeout=settings.provider_timeout + 30,
        )


@dataclass(frozen=True)
class Snapshot:
    channel: str
    state: State
    calls: int  # outcomes remembered
    failures: int
    open_for: float  # seconds since the breaker first opened in this outage (0 when closed)


Listener = Callable[[Snapshot, State], None]  # (new snapshot, previous state)


def is_failure(result: SendResult | ChannelError) -> bool:
    """Whether an outcome says the provider itself is failing."""
    return isinstance(result, ChannelError) and result.kind == ErrorKind.TRANSIENT


class Breaker:
    """The breaker of one channel; thread-safe, with an injectable monotonic clock."""

    def __init__(
        self,
        channel: str,
        policy: Policy,
        clock: Callable[[], float] = time.monotonic,
        listener: Listener | None = None,
    ) -> None:
        self.channel = channel
        self.policy = policy
        self.clock = clock
        self.listener = listener
        self.state = State.CLOSED
        self._outcomes: deque[bool] = deque(maxlen=policy.window)
        self._opened_at = 0.0  # when it last (re)opened: the cool-down runs from here
        self._open_since: float | None = None  # when it first opened in this outage
        self._probe_started: float | None = None
        self._lock = threading.Lock()

    def admit(self) -> float | None:
        """None when a call may go to the provider now; else seconds until a probe may go."""
        changed: tuple[Snapshot, State] | None = None
        with self._lock:
            now = self.clock()
            wait: float | None = None
            if self.state == State.OPEN:
                remaining = self.policy.cooldown - (now - self._opened_at)
                if remaining > 0:
                    wait = remaining
                else:
                    self._probe_started = now
                    changed = self._move(State.HALF_OPEN, now)
            elif self.state == State.HALF_OPEN:
                probe = self._probe_started
                if probe is not None and now - probe < self.policy.probe_timeout:
                    wait = self.policy.cooldown  # one probe at a time; its outcome decides
                else:
                    self._probe_started = now
        self._tell(changed)
        return wait

    def record(self, result: SendResult | ChannelError) -> None:
        """Remember the outcome of a call that `admit` let through."""
        failed = is_failure(result)
        changed: tuple[Snapshot, State] | None = None
        with self._lock:
            now = self.clock()
            if self.state == State.HALF_OPEN:
                self._probe_started = None
                if failed:
                    self._opened_at = now
                    changed = self._move(State.OPEN, now)
                else:
                    self._outcomes.clear()
                    self._open_since = None
                    changed = self._move(State.CLOSED, now)
            elif self.state == State.CLOSED:
                self._outcomes.append(failed)
                calls, failures = len(self._outcomes), sum(self._outcomes)
                if calls >= self.policy.min_calls and failures >= self.policy.failure_ratio * calls:
                    self._opened_at = now
                    self._open_since = now
                    changed = self._move(State.OPEN, now)
            # Open: a call admitted before the breaker opened finished late; it changes nothing.
        self._tell(changed)

    def snapshot(self) -> Snapshot:
        with self._lock:
            return self._snapshot(self.clock())

    def _snapshot(self, now: float) -> Snapshot:
        open_for = now - self._open_since if self._open_since is not None else 0.0
        return Snapshot(self.channel, self.state, len(self._outcomes), sum(self._outcomes), open_for)

    def _move(self, state: State, now: float) -> tuple[Snapshot, State]:
        before, self.state = self.state, state
        return self._snapshot(now), before

    def _tell(self, changed: tuple[Snapshot, State] | None) -> None:
        if changed is not None and self.listener is not None:
            self.listener(*changed)


class Breakers:
    """The breakers of one dispatcher, by channel."""

    def __init__(
        self,
        channels: Iterable[str],
        policy: Policy,
        clock: Callable[[], float] = time.monotonic,
        listener: Listener | None = None,
    ) -> None:
        self.policy = policy
        self.by_channel = {name: Breaker(name, policy, clock, listener) for name in channels}

    @classmethod
    def for_dispatcher(cls, settings: Settings, channels: Iterable[str]) -> Breakers:
        from gateway import metrics

        names = list(channels)
        board = cls(names, Policy.from_settings(settings), listener=metrics.breaker_changed)
        metrics.breakers_started(names)
        return board

    def refuse(self, channel: str) -> ChannelError | None:
        """The error to record instead of calling the provider, or None when the call may go."""
        breaker = self.by_channel.get(channel)
        wait = breaker.admit() if breaker is not None else None
        if wait is None:
            return None
        return ChannelError(
            ErrorKind.TRANSIENT,
            f"the {channel} circuit breaker is open; the provider was not called",
            code=BREAKER_CODE,
            retry_after=wait,
            fallback_now=True,
        )

    def record(self, channel: str, result: SendResult | ChannelError) -> None:
        breaker = self.by_channel.get(channel)
        if breaker is not None:
            breaker.record(result)

    def snapshots(self) -> list[Snapshot]:
        return [b.snapshot() for b in self.by_channel.values()]
