"""Readiness: can this process do its job now? (`GET /readyz`; `/healthz` only says it is up.)

Checks, each reported by name in the answer:

- `database`: a `SELECT 1` answers within DB_TIMEOUT seconds.
- `dispatcher` (processes that run one: `gateway serve`, `gateway worker`): its loop is running and has
  gone round within max(5 × GATEWAY_DISPATCH_INTERVAL, 10 s). The scheduler wakes the loop every interval,
  so a stale loop means the loop or the scheduler stopped.
- `lag`: the oldest due, unclaimed message has waited less than GATEWAY_READY_MAX_LAG (0: not checked).
  It is a figure of the whole system (from the database); it fails readiness only in a process that runs
  a dispatcher. An API-only process reports it but stays ready: it can still accept messages durably, and
  taking every API replica out of rotation because workers are behind would turn a backlog into an outage.
- `breakers` (processes with a dispatcher): no enabled channel's circuit breaker has been open longer than
  GATEWAY_READY_MAX_BREAKER_OPEN (0: not checked).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from gateway import metrics, store

if TYPE_CHECKING:
    from gateway.core import Gateway
    from gateway.dispatch import Dispatcher

DB_TIMEOUT = 3.0
_dispatchers: list[Dispatcher] = []
_lock = threading.Lock()


def register(dispatcher: Dispatcher) -> None:
    """A dispatcher started in this process (called from its loop)."""
    with _lock:
        _dispatchers.append(dispatcher)


def unregister(dispatcher: Dispatcher) -> None:
    with _lock:
        if dispatcher in _dispatchers:
            _dispatchers.remove(dispatcher)


def dispatchers_of(gw: Gateway) -> list[Dispatcher]:
    with _lock:
        return [d for d in _dispatchers if d.gw is gw]


@dataclass
class Readiness:
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.reasons

    def add(self, name: str, ok: bool, detail: str, counts: bool = True, **facts: Any) -> None:
        self.checks[name] = {"ok": ok, "detail": detail, **facts}
        if not ok and counts:
            self.reasons.append(f"{name}: {detail}")


class _Probe:
    """One database check in a daemon thread (a database that never answers must not hold up exit)."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.started = time.monotonic()
        self.done = threading.Event()
        self.figures: metrics.QueueFigures | None = None
        self.error: Exception | None = None
        threading.Thread(target=self._run, name="readiness-probe", daemon=True).start()

    def _run(self) -> None:
        try:
            with store.transaction(self.gw.engine) as session:
                session.execute(text("SELECT 1"))
                self.figures = metrics.queue_figures(session, self.gw.clock())
        except Exception as exc:
            self.error = exc
        finally:
            self.done.set()


_probes: dict[int, _Probe] = {}  # by id(gateway): at most one check in flight per gateway


def _probe_database(gw: Gateway) -> _Probe:
    with _lock:
        probe = _probes.get(id(gw))
        if probe is None or probe.done.is_set():
            probe = _probes[id(gw)] = _Probe(gw)
    if probe.done.wait(DB_TIMEOUT):
        with _lock:
            if _probes.get(id(gw)) is probe:
                del _probes[id(gw)]
    return probe


def readiness(gw: Gateway) -> Readiness:
    report = Readiness()
    dispatchers = dispatchers_of(gw)
    settings = gw.settings
    probe = _probe_database(gw)
    figures = probe.figures
    if not probe.done.is_set():
        waited = time.monotonic() - probe.started
        report.add("database", False, f"no answer for {waited:.0f} s")
    elif probe.error is not None:
        report.add("database", False, f"unreachable ({type(probe.error).__name__})")
    else:
        report.add("database", True, "reachable")

    if dispatchers:
        stale_after = max(5 * settings.dispatch_interval, 10.0)
        for d in dispatchers:
            age = time.monotonic() - d.heartbeat
            if not d.running:
                report.add("dispatcher", False, f"dispatcher {d.worker} is not running")
            elif age > stale_after:
                detail = f"dispatcher loop idle for {age:.0f} s (limit {stale_after:g} s)"
                report.add("dispatcher", False, detail)
            else:
                report.add("dispatcher", True, "running", worker=d.worker, last_round_s=round(age, 3))
    else:
        report.add("dispatcher", True, "none in this process (API only)")

    limit = settings.ready_max_lag
    if figures is not None:
        late = limit > 0 and figures.lag > limit
        detail = f"oldest due message waited {figures.lag:.1f} s" + (f" (limit {limit:g} s)" if limit else "")
        report.add("lag", not late, detail, counts=bool(dispatchers), seconds=round(figures.lag, 3))

    if dispatchers:
        bound = settings.ready_max_breaker_open
        states: dict[str, Any] = {}
        too_long = []
        for d in dispatchers:
            for snap in d.breakers.snapshots():
                states[snap.channel] = {"state": str(snap.state), "open_for_s": round(snap.open_for, 3)}
                if bound > 0 and snap.state != "closed" and snap.open_for > bound:
                    too_long.append(f"{snap.channel} open for {snap.open_for:.0f} s")
        detail = "; ".join(too_long) if too_long else "no breaker open too long"
        if bound > 0 and too_long:
            detail += f" (limit {bound:g} s)"
        report.add("breakers", not too_long, detail, channels=states)
    return report
