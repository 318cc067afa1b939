"""What the gateway counts and logs at each step of a message, and `GET /metrics`.

Every flow event has one function here that logs its line (gateway.logs) and updates its metrics; the
core calls it once where the event happens. Calls made inside a transaction take effect when it commits,
so a rolled-back change is neither counted nor logged.

Several processes (docs/operations.md):

- Counters, histograms and the breaker gauge are prometheus-client metrics of the process that saw the
  event. With `PROMETHEUS_MULTIPROC_DIR` set (an empty directory per host, shared by every gateway process
  of the host: gunicorn API workers, `gateway worker`s), each process writes them to files there and
  `/metrics` of any API process on the host adds them up; without it, `/metrics` shows its own process
  (right for `gateway serve`, which runs the API and the dispatcher in one process).
- Queue figures (due-but-unclaimed messages, dispatcher lag, claimed messages, event deliveries waiting)
  are read from the database at scrape time, so they are the same from every process and host.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from flask import Blueprint, Flask, Response, current_app, request
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from sqlalchemy import func, or_
from sqlmodel import Session, col, select

from gateway import logs
from gateway.errors import ChannelError, ProblemError
from gateway.models import Attempt, EventDelivery, Message
from gateway.store import after_commit

if TYPE_CHECKING:
    from gateway.breaker import Snapshot, State
    from gateway.channels.base import SendResult, StatusUpdate
    from gateway.core import Gateway
    from gateway.inbound.pipeline import Received
    from gateway.progress import Decision, SendJob
    from gateway.services.messages import Accepted

log = logging.getLogger("gateway.flow")
disable_created_metrics()  # type: ignore[no-untyped-call]

ACCEPTED = Counter("gateway_messages_accepted", "Messages accepted by the send endpoints (202)")
ATTEMPTS = Counter(
    "gateway_attempts",
    "Provider calls by channel and outcome: accepted, an error kind, or breaker_open (not called)",
    ["channel", "outcome"],
)
FALLBACKS = Counter(
    "gateway_fallbacks",
    "Moves to the next planned channel, by channel left, channel next and the reason",
    ["from_channel", "to_channel", "reason"],
)
RETRIES = Counter(
    "gateway_retries", "Retries on the same channel, by channel and reason", ["channel", "reason"]
)
RECEIPTS = Counter(
    "gateway_receipts",
    "Provider status reports applied to an attempt, by channel and status",
    ["channel", "status"],
)
EVENT_DELIVERIES = Counter(
    "gateway_event_deliveries",
    "Event deliveries to business systems' webhooks by result: delivered, failed (retried), given_up",
    ["result"],
)
INBOUND = Counter("gateway_inbound_messages", "Customers' messages stored, by channel", ["channel"])
FIRST_ATTEMPT = Histogram(
    "gateway_time_to_first_attempt_seconds",
    "From acceptance (or send_at) to the first provider call of a message",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600),
)
TIME_TO_DELIVERY = Histogram(
    "gateway_time_to_delivery_seconds",
    "From acceptance (or send_at) to the delivery receipt, by the channel that delivered",
    ["channel"],
    buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 7200, 21600, 86400),
)
PROVIDER_CALL = Histogram(
    "gateway_provider_call_seconds",
    "Duration of one provider call, by channel",
    ["channel"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BREAKER_STATE = Gauge(
    "gateway_breaker_state",
    "Circuit breaker of a channel: 0 closed, 1 half-open, 2 open (the worst of the live dispatchers)",
    ["channel"],
    multiprocess_mode="livemax",
)
BREAKER_OPENINGS = Counter(
    "gateway_breaker_openings", "Times a channel's circuit breaker opened", ["channel"]
)
CLAIMS_ABANDONED = Counter(
    "gateway_claims_abandoned",
    "Claims left to expire unsent because they waited for a call slot until their lease could run out",
)


def multiprocess() -> bool:
    return bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _start_of(message: Message) -> datetime:
    """When the message was meant to start: acceptance, or its send_at when later."""
    start = _aware(message.created_at)
    if message.send_at is not None:
        start = max(start, _aware(message.send_at))
    return start


def outcome_of(result: SendResult | ChannelError | None) -> str:
    from gateway.breaker import BREAKER_CODE

    if result is None:
        return "transient"
    if isinstance(result, ChannelError):
        return "breaker_open" if result.code == BREAKER_CODE else str(result.kind)
    return "accepted"


def _reason(attempt: Attempt) -> str:
    from gateway.breaker import BREAKER_CODE

    if attempt.error_code == BREAKER_CODE:
        return "breaker_open"
    return attempt.error_kind or "transient"


# -- the flow events ---------------------------------------------------------------------------------


def message_accepted(message: Accepted) -> None:
    """A send request was accepted (called after its transaction committed)."""
    ACCEPTED.inc()
    if not log.isEnabledFor(logging.INFO):
        return
    channels = [step["channel"] for step in message.plan or []]
    logs.event(
        log,
        "message.accepted",
        f"accepted {message.id} for {message.contact_id}: {message.status}, plan {','.join(channels) or '-'}",
        message_id=message.id,
        contact_id=message.contact_id,
        category=message.category,
        status=message.status,
        plan=channels,
        reason=message.reason,
    )


def attempt_recorded(
    session: Session,
    message: Message,
    attempt: Attempt,
    job: SendJob,
    result: SendResult | ChannelError,
    seconds: float,
    now: datetime,
) -> None:
    """The dispatcher recorded what a provider answered to one attempt."""
    outcome = outcome_of(result)
    first = None
    if attempt.sends == 1 and _aware(attempt.created_at) == _aware(message.created_at):
        first = max(0.0, (_aware(now) - _start_of(message)).total_seconds() - seconds)
    fields: dict[str, Any] = dict(
        message_id=job.message_id,
        attempt_id=job.attempt_id,
        contact_id=job.contact_id,
        channel=job.channel,
        provider_message_id=getattr(result, "provider_message_id", None) or attempt.provider_message_id,
        outcome=outcome,
        step=attempt.step_index,
        try_number=attempt.try_number,
        duration_ms=round(seconds * 1000, 1),
    )
    if isinstance(result, ChannelError):
        fields.update(error_code=result.code, detail=result.detail)

    def done() -> None:
        ATTEMPTS.labels(job.channel, outcome).inc()
        if first is not None:
            FIRST_ATTEMPT.observe(first)
        if isinstance(result, ChannelError):
            text = f"attempt {job.attempt_id} of {job.message_id} on {job.channel} failed: {outcome}"
            logs.event(log, "attempt.failed", text, **fields)
        else:
            text = f"attempt {job.attempt_id} of {job.message_id} on {job.channel} accepted"
            logs.event(log, "attempt.sent", text, **fields)

    after_commit(session, done)


def provider_call(channel: str, seconds: float) -> None:
    """One call to a provider took `seconds` (measured around the adapter's `send`)."""
    PROVIDER_CALL.labels(channel).observe(seconds)


def claim_abandoned() -> None:
    """A claim waited for a call slot too long to be used (gateway.dispatch `_call_slot`)."""
    CLAIMS_ABANDONED.inc()


def decision(session: Session, message: Message, attempt: Attempt, decided: Decision) -> None:
    """What follows a failed or timed-out attempt: retry, fall back, or give up."""
    from gateway.progress import GiveUp, NextStep, Retry

    reason = _reason(attempt)
    fields: dict[str, Any] = dict(
        message_id=message.id,
        attempt_id=attempt.id,
        contact_id=message.contact_id,
        channel=attempt.channel,
        reason=reason,
        step=attempt.step_index,
        try_number=attempt.try_number,
    )
    action: Callable[[], None]
    if isinstance(decided, Retry):
        delay = max(0.0, (_aware(decided.at) - _aware(message.updated_at)).total_seconds())
        fields.update(retry_in_s=round(delay, 3), counts_as_try=decided.counts_as_try)
        text = f"{message.id}: retrying {attempt.channel} in {delay:.1f} s after {reason}"

        def action() -> None:
            RETRIES.labels(attempt.channel, reason).inc()
            logs.event(log, "message.retry", text, **fields)

    elif isinstance(decided, NextStep):
        to = (message.plan or [])[decided.step_index]["channel"]
        fields.update(next_channel=to)
        text = f"{message.id}: falling back from {attempt.channel} to {to} after {reason}"

        def action() -> None:
            FALLBACKS.labels(attempt.channel, to, reason).inc()
            logs.event(log, "message.fallback", text, **fields)

    else:
        assert isinstance(decided, GiveUp)
        fields.update(outcome=decided.reason)
        text = f"{message.id}: no channel left after {reason} on {attempt.channel} ({decided.reason})"

        def action() -> None:
            logs.event(log, "message.gave_up", text, **fields)

    after_commit(session, action)


def receipt(session: Session, message: Message, attempt: Attempt, update: StatusUpdate) -> None:
    """A provider's status report is about to be applied to `attempt` (call before applying it)."""
    delivered_before = attempt.delivered_at is not None
    status_before = attempt.status

    def done() -> None:
        RECEIPTS.labels(attempt.channel, update.status).inc()
        fields: dict[str, Any] = dict(
            message_id=message.id,
            attempt_id=attempt.id,
            contact_id=message.contact_id,
            channel=attempt.channel,
            provider_message_id=update.provider_message_id,
            status=update.status,
            attempt_status=attempt.status,
            previous_status=status_before,
        )
        if update.error is not None:
            fields.update(outcome=str(update.error.kind), error_code=update.error.code)
        if not delivered_before and attempt.delivered_at is not None:
            took = max(0.0, (_aware(attempt.delivered_at) - _start_of(message)).total_seconds())
            TIME_TO_DELIVERY.labels(attempt.channel).observe(took)
            fields.update(time_to_delivery_s=round(took, 3))
        text = f"receipt {update.status} for attempt {attempt.id} of {message.id} on {attempt.channel}"
        logs.event(log, "attempt.receipt", text, **fields)

    after_commit(session, done)


def inbound_received(received: Received) -> None:
    """A customer's message was stored (or recognised as a redelivery); never its text."""
    if not received.duplicate:
        INBOUND.labels(received.channel).inc()
    logs.event(
        log,
        "inbound.received",
        f"inbound {received.id} from {received.contact_id} on {received.channel}"
        + (" (redelivery)" if received.duplicate else ""),
        inbound_id=received.id,
        contact_id=received.contact_id,
        channel=received.channel,
        duplicate=received.duplicate,
    )


def event_delivery(session: Session, delivery: EventDelivery) -> None:
    """An event delivery to a business system was tried (called after `events.record_delivery`)."""
    result = "delivered" if delivery.delivered else "given_up" if delivery.given_up else "failed"
    fields: dict[str, Any] = dict(
        delivery_id=delivery.id,
        event_id=delivery.event_id,
        target=delivery.target,
        result=result,
        tries=delivery.tries,
        error=delivery.last_error if result != "delivered" else None,
    )
    level = logging.INFO if result == "delivered" else logging.WARNING

    def done() -> None:
        EVENT_DELIVERIES.labels(result).inc()
        text = f"event {delivery.event_id} to {delivery.target}: {result} (try {delivery.tries})"
        logs.event(log, "event.delivery", text, level, **fields)

    after_commit(session, done)


def breakers_started(channels: list[str]) -> None:
    for channel in channels:
        BREAKER_STATE.labels(channel).set(0)


def breaker_changed(snapshot: Snapshot, before: State) -> None:
    from gateway.breaker import STATE_VALUE, State

    BREAKER_STATE.labels(snapshot.channel).set(STATE_VALUE[snapshot.state])
    if snapshot.state == State.OPEN and before == State.CLOSED:
        BREAKER_OPENINGS.labels(snapshot.channel).inc()
    level = logging.WARNING if snapshot.state == State.OPEN else logging.INFO
    logs.event(
        log,
        f"breaker.{snapshot.state}",
        f"{snapshot.channel} circuit breaker {before} -> {snapshot.state}"
        f" ({snapshot.failures} of the last {snapshot.calls} calls failed)",
        level,
        channel=snapshot.channel,
        state=str(snapshot.state),
        previous_state=str(before),
        failures=snapshot.failures,
        calls=snapshot.calls,
        open_for_s=round(snapshot.open_for, 3),
    )


def dispatcher_stopped(channels: list[str]) -> None:
    """A dispatcher ended: its breakers are no longer anyone's state."""
    if multiprocess():
        mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
        return
    for channel in channels:
        with contextlib.suppress(KeyError):  # never set in this process
            BREAKER_STATE.remove(channel)


# -- queue figures, from the database ----------------------------------------------------------------


@dataclass(frozen=True)
class QueueFigures:
    due: int  # messages whose work is due and that nobody holds a live claim on
    lag: float  # seconds the oldest of them has been due (0 when none)
    claimed: int  # messages under a live claim (being worked on)
    events_pending: int  # event deliveries neither delivered nor given up
    events_oldest: float  # seconds since the oldest of them was created


def queue_figures(session: Session, now: datetime) -> QueueFigures:
    now = _aware(now)
    free = or_(col(Message.claimed_until).is_(None), col(Message.claimed_until) < now)
    due_count, oldest_due = session.exec(
        select(func.count(), func.min(Message.due_at)).where(col(Message.due_at) <= now, free)
    ).one()
    claimed = session.exec(select(func.count()).where(col(Message.claimed_until) >= now)).one()
    pending, oldest_event = session.exec(
        select(func.count(), func.min(EventDelivery.created_at)).where(
            col(EventDelivery.delivered).is_(False), col(EventDelivery.given_up).is_(False)
        )
    ).one()

    def age(at: datetime | None) -> float:
        return max(0.0, (now - _aware(at)).total_seconds()) if at is not None else 0.0

    return QueueFigures(int(due_count), age(oldest_due), int(claimed), int(pending), age(oldest_event))


QUEUE_GAUGES: tuple[tuple[str, str, Callable[[QueueFigures], float]], ...] = (
    ("gateway_due_messages", "Messages due and not claimed by any dispatcher", lambda f: f.due),
    ("gateway_dispatcher_lag_seconds", "How long the oldest due, unclaimed message waited", lambda f: f.lag),
    ("gateway_claimed_messages", "Messages claimed by a dispatcher (being sent)", lambda f: f.claimed),
    (
        "gateway_event_deliveries_pending",
        "Event deliveries neither delivered nor given up",
        lambda f: f.events_pending,
    ),
    (
        "gateway_event_delivery_oldest_seconds",
        "Age of the oldest pending event delivery",
        lambda f: f.events_oldest,
    ),
)


class _QueueCollector:
    """Gauges computed from the database when scraped."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def collect(self) -> Iterator[Metric]:
        from gateway import store

        up = GaugeMetricFamily("gateway_database_up", "1 when the database answered this scrape's queries")
        try:
            with store.transaction(self.gw.engine) as session:
                figures = queue_figures(session, self.gw.clock())
        except Exception as exc:
            log.warning("queue figures unavailable: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        for name, doc, value in QUEUE_GAUGES:
            yield GaugeMetricFamily(name, doc, value=value(figures))


class _ProcessCollector:
    """This process's metrics, or those of every process on the host in multiprocess mode."""

    def collect(self) -> Iterator[Metric]:
        if multiprocess():
            yield from MultiProcessCollector(None).collect()  # type: ignore[no-untyped-call]
        else:
            yield from REGISTRY.collect()


# -- GET /metrics ------------------------------------------------------------------------------------

bp = Blueprint("metrics", __name__)


def install(app: Flask) -> None:
    """Serve `/metrics` from `app`, with the queue figures of its gateway's database."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_ProcessCollector())
    registry.register(_QueueCollector(app.extensions["gateway"]))
    app.extensions["gateway.metrics"] = registry
    app.register_blueprint(bp)


@bp.get("/metrics")
def scrape() -> Response:
    from gateway.api.http import problem_response

    gw: Gateway = current_app.extensions["gateway"]
    token = gw.settings.metrics_token
    if not token:
        return problem_response(ProblemError(404, "not-found", "Not Found", "metrics are not enabled"))
    given = request.headers.get("Authorization", "")
    if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
        problem = ProblemError(
            401,
            "unauthorized",
            "Unauthorized",
            "send Authorization: Bearer <GATEWAY_METRICS_TOKEN>",
            headers={"WWW-Authenticate": 'Bearer realm="metrics"'},
        )
        return problem_response(problem)
    registry: CollectorRegistry = current_app.extensions["gateway.metrics"]
    return Response(generate_latest(registry), mimetype=None, content_type=CONTENT_TYPE_LATEST)
