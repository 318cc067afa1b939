"""The dispatcher: claim due messages, send through the adapters concurrently, record outcomes.

It runs an asyncio loop in its own thread. Every send starts from a claim (a lease on the message
row), so a killed process loses nothing: its claims expire and any dispatcher takes the work again.
It sleeps until woken (an accept, a finished send, the APScheduler tick) or until the next due time.

Database work is per batch, not per message, and runs on one dedicated thread so a slow commit never
stalls the sends in flight: one transaction per round claims due messages and starts their attempts
(`_claim_round`), and finished sends are recorded many to a transaction (`_finish_batch`, fed by
`gateway.writebehind`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import threading
import time as clock
from collections import Counter
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar, cast

import aiohttp
from sqlmodel import Session

from gateway import bot_hooks, events, health, metrics, rows, store
from gateway.breaker import Breakers
from gateway.channels import build_channels
from gateway.channels.base import Channel, SendResult
from gateway.content import outgoing_for
from gateway.core import Gateway
from gateway.errors import ChannelError, ErrorKind
from gateway.models import Attempt, ChannelState, Event, EventDelivery, Message
from gateway.notify import listener_for
from gateway.pacing import SharedPacer
from gateway.progress import Progress, SendJob
from gateway.services.provider_webhooks import apply_early_statuses
from gateway.writebehind import WriteBehind

log = logging.getLogger("gateway.dispatch")
IDLE_WAIT = 60.0  # longest sleep when nothing is due; the scheduler tick wakes it sooner
EVENT_TIMEOUT = 10.0  # seconds a business system has to answer an event delivery
RECORD_BATCH = 200  # outcomes recorded in one transaction at most
RECORD_WAIT = 0.005  # seconds an outcome may wait for others to share its transaction
WAKE_GATHER = 0.002  # seconds a woken loop waits for more nudges before it claims
PACED_AHEAD = 1.0  # a paced channel's claims reach this many seconds of its rate ahead, no further
# A dispatcher holds up to this many times GATEWAY_DISPATCH_CONCURRENCY claimed (sending, waiting for a
# call slot, waiting to be recorded), so it claims and records in batches several times larger than its
# provider calls alone would allow; each transaction's fixed cost is then shared by more messages. Fewer
# when its calls are slow: no more wait for a slot than its calls start in half a claim's freshness.
CLAIM_AHEAD = 8
CALL_SECONDS_WEIGHT = 0.1  # weight of the latest call in the running estimate of a call's duration
CALL_MARGIN = 5.0  # seconds a provider call may overrun GATEWAY_PROVIDER_TIMEOUT before it is abandoned
T = TypeVar("T")


@dataclass(frozen=True)
class Outcome:
    """What the provider answered to one send, waiting to be recorded."""

    job: SendJob
    result: SendResult | ChannelError
    seconds: float


class Dispatcher:
    """Claims and sends due work; `start()` runs it in a background thread, `stop()` ends it."""

    def __init__(self, gw: Gateway, channels: dict[str, Channel] | None = None) -> None:
        self.gw = gw
        self.channels = channels if channels is not None else build_channels(gw.settings)
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.pacers = {
            name: SharedPacer(gw, name, gw.settings.rate_for(name, ch.default_rate))
            for name, ch in self.channels.items()
        }
        self._listener = listener_for(gw.engine, self.nudge)  # other processes' accepts wake it
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._nudge_pending = False  # a wake-up was scheduled on the loop and has not run yet
        self._stopping = False
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._saturated = False  # every send slot was taken at the last round: wake when one frees
        self._busy: Counter[str] = Counter()  # sends under way (pacing included) by channel
        self._calls: asyncio.Semaphore | None = None  # GATEWAY_DISPATCH_CONCURRENCY outbound calls at once
        # A claim is used only if a call started now ends before its lease does (with a margin); a lease
        # shorter than a call may last (a setting for tests) allows half of it.
        s = gw.settings
        call = max(s.provider_timeout + CALL_MARGIN, EVENT_TIMEOUT, s.bot_hook_timeout)
        self._claim_fresh_for = max(s.dispatch_lease - call - CALL_MARGIN, s.dispatch_lease / 2)
        self._call_seconds = s.provider_timeout  # running estimate; the first call to end replaces it
        self._calls_ended = 0
        self.abandoned = 0  # claims left to expire because they waited too long for a call slot
        self._abandoned_until: list[float] = []  # when those still held run out (monotonic)
        self._db_thread = ThreadPoolExecutor(1, thread_name_prefix="dispatcher-db")
        self._outcomes: WriteBehind[Outcome] | None = None
        self._http: aiohttp.ClientSession | None = None
        self.breakers = Breakers.for_dispatcher(gw.settings, self.channels)
        self.heartbeat = clock.monotonic()  # when the loop last went round (for /readyz)
        self.running = False

    # -- control from other threads -------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dispatcher", daemon=True)
        self._thread.start()
        self._ready.wait(30)
        if self._listener is not None:
            self._listener.start()

    def nudge(self) -> None:
        """Wake the loop now (thread-safe). A nudge while another is on its way adds nothing: that one
        wakes the loop after this caller's commit (every status callback and accept nudges; writing to
        the loop's wake-up socket for each cost more than the work they woke)."""
        if self._nudge_pending:
            return
        loop = self._loop
        if loop is not None and self._wake is not None and not loop.is_closed():
            self._nudge_pending = True
            loop.call_soon_threadsafe(self._nudged)

    def _nudged(self) -> None:
        self._nudge_pending = False  # first: a nudge from now on schedules another wake-up
        if self._wake is not None:
            self._wake.set()

    def stop(self, grace: float = 10.0) -> None:
        """Finish sends in flight (up to `grace` seconds), give back claims, close adapters."""
        self._stopping = True
        self._grace = grace
        if self._listener is not None:
            self._listener.stop()
        self.nudge()
        if self._thread is not None:
            self._thread.join(grace + 15)

    # -- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        with asyncio.Runner(loop_factory=loop_factory(self.gw.settings.event_loop)) as runner:
            runner.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._calls = asyncio.Semaphore(self.gw.settings.dispatch_concurrency)
        for channel in self.channels.values():
            await channel.open()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=EVENT_TIMEOUT))
        self._outcomes = WriteBehind(self._record, RECORD_BATCH, RECORD_WAIT)
        self._outcomes.start()
        self.running = True
        health.register(self)
        self._ready.set()
        failures = 0
        try:
            while not self._stopping:
                self.heartbeat = clock.monotonic()
                try:
                    await self._round()
                    failures = 0
                except Exception as exc:  # e.g. the database is away: keep going, it comes back
                    failures += 1
                    if failures == 1:
                        log.exception("dispatcher round failed; trying again")
                    else:
                        log.warning("dispatcher round failed %d times in a row: %r", failures, exc)
                    await asyncio.sleep(min(5.0, 0.2 * 2**failures))
        finally:
            self.running = False
            try:
                await self._shutdown()
            finally:
                health.unregister(self)
                metrics.dispatcher_stopped(list(self.channels))

    async def _round(self) -> None:
        assert self._wake is not None and self._outcomes is not None
        s = self.gw.settings
        held = len(self._inflight) + self._outcomes.pending + self._abandoned_held()
        free = self._claim_limit() - held
        timeout: float | None = IDLE_WAIT
        if free > 0:
            wanted = min(free, s.dispatch_batch)
            claimed = clock.monotonic()  # no later than the leases' start
            jobs, deliveries, timeout = await self._db(self._claim_round, wanted, free, self._paced_quota())
            for job in jobs:
                self._busy[job.channel] += 1
                self._spawn(self._process(job, claimed))
            for delivery_id in deliveries:
                self._spawn(self._deliver(delivery_id, claimed))
            if timeout is None:
                await asyncio.sleep(0)  # a full batch: there may be more, claim again once the sends started
                return
        else:
            self._saturated = True  # a finished send or recorded outcome wakes the loop
        with contextlib.suppress(TimeoutError):  # woken by nobody: the next due time has come
            await asyncio.wait_for(self._wake.wait(), timeout)
            await asyncio.sleep(WAKE_GATHER)  # nudges in a burst (accepts, status callbacks) share one round
        self._wake.clear()

    async def _db(self, work: Callable[..., T], *args: Any) -> T:
        """Run database work on the dispatcher's own database thread."""
        return await asyncio.get_running_loop().run_in_executor(self._db_thread, work, *args)

    def _paced_quota(self) -> dict[str, int]:
        """How many more sends each paced channel may claim: what its rate sends in PACED_AHEAD seconds.

        Claiming more would only have them wait in the pacer, holding leases other workers could use.
        """
        return {
            name: max(0, math.ceil(PACED_AHEAD / pacer.interval) - self._busy[name])
            for name, pacer in self.pacers.items()
            if pacer.interval
        }

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._inflight.add(task)
        task.add_done_callback(self._ended)

    def _ended(self, task: asyncio.Task[None]) -> None:
        self._inflight.discard(task)
        self._slot_freed()

    def _slot_freed(self) -> None:
        if self._saturated and self._wake is not None:
            self._saturated = False
            self._wake.set()

    async def _shutdown(self) -> None:
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=getattr(self, "_grace", 10.0))
        for task in self._inflight:
            task.cancel()
        if self._outcomes is not None:
            await self._outcomes.drain()  # record what was sent before giving the claims back
        await self._db(self._release_claims)
        self._db_thread.shutdown(wait=False)
        for channel in self.channels.values():
            await channel.close()
        if self._http is not None:
            await self._http.close()

    async def _call_slot(self, claimed: float, what: str) -> bool:
        """Take one of the GATEWAY_DISPATCH_CONCURRENCY call slots, or, when the claim (taken at `claimed`)
        could run out during the call, take none and leave the claim to expire: another round, here or in
        any worker, takes the work again then (the same as after a kill, and nothing was sent twice).
        After `stop()` no slot is given: what waits for one is given back instead."""
        assert self._calls is not None
        await self._calls.acquire()
        if self._stopping:  # no new calls: stop() gives the claim back
            self._calls.release()
            return False
        if clock.monotonic() - claimed <= self._claim_fresh_for:
            return True
        self._calls.release()
        self.abandoned += 1
        self._abandoned_until.append(claimed + self.gw.settings.dispatch_lease)
        metrics.claim_abandoned()
        log.warning("%s waited too long for a call slot; its claim will expire and be retaken", what)
        return False

    def _claim_limit(self) -> int:
        """How many claims to hold: CLAIM_AHEAD per call slot, fewer when calls are slow, so that those
        waiting for a slot start within half of `_claim_fresh_for` (and are not abandoned): the slots, and
        what they start in that time at the estimated duration of a call (at least one more round)."""
        slots = self.gw.settings.dispatch_concurrency
        waiting = slots * (self._claim_fresh_for / 2) / max(self._call_seconds, 1e-6)
        return min(slots * CLAIM_AHEAD, slots + max(slots, int(waiting)))

    def _call_ended(self, seconds: float) -> None:
        """Note a call slot's call (a send or an event delivery) took `seconds`."""
        weight = CALL_SECONDS_WEIGHT if self._calls_ended else 1.0
        self._call_seconds += weight * (seconds - self._call_seconds)
        self._calls_ended += 1

    def _abandoned_held(self) -> int:
        """Abandoned claims whose leases have not run out: still this dispatcher's, so they count against
        CLAIM_AHEAD (else it would claim more the further behind it is)."""
        now = clock.monotonic()
        self._abandoned_until = [until for until in self._abandoned_until if until > now]
        return len(self._abandoned_until)

    async def _process(self, job: SendJob, claimed: float) -> None:
        assert self._outcomes is not None
        started = clock.monotonic()
        try:
            result = await self._send(job, claimed)
        except Exception:
            log.exception("dispatcher failed on %s; its claim will expire and be retaken", job.message_id)
            return
        finally:
            self._busy[job.channel] -= 1
        if result is not None:
            self._outcomes.add(Outcome(job, result, clock.monotonic() - started))

    async def _record(self, batch: list[Outcome]) -> None:
        """Record outcomes in one transaction; should that fail, one by one, so one bad row costs one."""
        try:
            due_now = await self._db(self._finish_batch, batch)
        except Exception as exc:
            log.warning(
                "recording %d outcomes together failed (%r); recording them one by one", len(batch), exc
            )
            due_now = False
            for outcome in batch:
                try:
                    due_now = await self._db(self._finish_batch, [outcome]) or due_now
                except Exception:
                    log.exception(
                        "recording the outcome of %s failed; its claim will expire and be retaken",
                        outcome.job.message_id,
                    )
        if due_now and self._wake is not None:
            self._wake.set()
        self._slot_freed()

    async def _send(self, job: SendJob, claimed: float) -> SendResult | ChannelError | None:
        """The provider's answer, or None when the claim grew too old to send (see `_call_slot`)."""
        channel = self.channels.get(job.channel)
        if channel is None:
            return ChannelError(ErrorKind.REJECTED, f"channel {job.channel} is not enabled here")
        refused = self.breakers.refuse(job.channel)
        if refused is not None:
            return refused  # the provider is failing: do not call it (fall back now, or wait)
        await self.pacers[job.channel].wait()
        if not await self._call_slot(claimed, f"message {job.message_id}"):
            return None
        assert self._calls is not None
        started = clock.monotonic()
        result: SendResult | ChannelError
        try:
            # asyncio.timeout, not wait_for: no task of its own for every send
            async with asyncio.timeout(self.gw.settings.provider_timeout + CALL_MARGIN):
                result = await channel.send(outgoing_for(channel, job, self.gw))
        except ChannelError as exc:
            result = exc
        except TimeoutError:
            result = ChannelError(ErrorKind.TRANSIENT, "provider call timed out")
        except Exception as exc:  # an adapter bug must not stop the dispatcher
            log.exception("adapter %s raised an unclassified error", job.channel)
            result = ChannelError(ErrorKind.TRANSIENT, f"unclassified adapter error: {exc!r}")
        finally:
            self._calls.release()
        seconds = clock.monotonic() - started
        self._call_ended(seconds)
        metrics.provider_call(job.channel, seconds)
        self.breakers.record(job.channel, result)
        return result

    async def _deliver(self, delivery_id: str, claimed: float) -> None:
        """POST one event to a business system; any non-2xx answer or error is retried later."""
        assert self._calls is not None
        try:
            loaded = await asyncio.to_thread(self._load_delivery, delivery_id)
            if loaded is None:
                return
            url, body, secret, respond = loaded
            headers = {
                "Content-Type": "application/json",
                "Gateway-Signature": events.sign(secret, body, int(clock.time())),
            }
            error, answer = None, None
            assert self._http is not None
            # A bot hook (gateway/bot_hooks.py) has a shorter time to answer, and its answer is read.
            timeout = bot_hooks.timeout(self.gw) if respond else self._http.timeout
            if not await self._call_slot(claimed, f"event delivery {delivery_id}"):
                return
            started = clock.monotonic()
            try:
                async with self._http.post(url, data=body, headers=headers, timeout=timeout) as response:
                    if not 200 <= response.status < 300:
                        error = f"HTTP {response.status}"
                    elif respond:
                        answer = await bot_hooks.read_answer(response)
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            finally:
                self._calls.release()
                self._call_ended(clock.monotonic() - started)
            more = await asyncio.to_thread(self._record_delivery, delivery_id, error, answer)
        except Exception:
            log.exception("event delivery %s failed; its claim will expire and be retaken", delivery_id)
            return
        if more and self._wake is not None:
            self._wake.set()  # the next event for this endpoint and contact may go now

    # -- database work (runs in worker threads) --------------------------------------------------

    def _load_delivery(self, delivery_id: str) -> tuple[str, bytes, str, bool] | None:
        with store.transaction(self.gw.engine) as session:
            delivery = session.get(EventDelivery, delivery_id)
            event = session.get(Event, delivery.event_id) if delivery else None
            if delivery is None or event is None or delivery.claimed_by != self.worker:
                return None
            return (
                delivery.url,
                events.body_of(event),
                events.secret_for(session, delivery, self.gw.callback_secret()),
                bot_hooks.responds(session, delivery, event),
            )

    def _record_delivery(self, delivery_id: str, error: str | None, answer: bytes | None = None) -> bool:
        with store.transaction(self.gw.engine) as session:
            delivery = session.get(EventDelivery, delivery_id)
            if delivery is None:
                return False
            s = self.gw.settings
            events.record_delivery(
                session, delivery, error, self.gw.clock(), s.event_backoff, s.event_max_backoff
            )
            metrics.event_delivery(session, delivery)
            reply = bot_hooks.take_reply(session, self.gw, delivery, answer) if answer is not None else None
        bot_hooks.reply_accepted(self.gw, reply)
        return error is None

    def _claim_round(
        self, wanted: int, free: int, quota: dict[str, int]
    ) -> tuple[list[SendJob], list[str], float | None]:
        """Claim due messages and start their attempts, claim event deliveries, in one transaction.

        A paced channel's messages beyond its `quota` are left unclaimed. Returns the send jobs, the
        delivery ids and how long to sleep (None: the batch was full, go on at once).
        """
        s = self.gw.settings
        with store.transaction(self.gw.engine) as session:
            now = self.gw.clock()
            with session.no_autoflush:
                claimed = rows.claim_due(session, self.worker, now, s.dispatch_lease, wanted)
                pairs = {(m.contact_id, a.channel) for m, a in claimed if a is not None}
                states = store.load_channel_states(session, pairs)
            listened = bool(self.gw.subscriptions.for_type(session, "message.status"))
            taken: list[tuple[rows.MessageRow, rows.AttemptRow | None]] = []
            held_back = False
            for message, attempt in claimed:
                if attempt is not None and attempt.channel in quota:
                    if quota[attempt.channel] <= 0:
                        held_back = True  # left unclaimed: its plain row is never written
                        continue
                    quota[attempt.channel] -= 1
                taken.append((message, attempt))
            jobs = self._start(session, taken, now, states, listened)
            deliveries = []
            if free > len(jobs):
                deliveries = events.claim_due_deliveries(
                    session, self.worker, now, s.dispatch_lease, free - len(jobs)
                )
            if held_back:
                self._saturated = True  # a paced send ending wakes the loop to claim more
                return jobs, deliveries, PACED_AHEAD
            if len(claimed) == wanted:
                return jobs, deliveries, None
            due = min(
                (d for d in (store.next_due_at(session, now), events.next_due_at(session, now)) if d),
                default=None,
            )
        return jobs, deliveries, _seconds_until(due, now)

    def _start(
        self,
        session: Session,
        claimed: list[tuple[rows.MessageRow, rows.AttemptRow | None]],
        now: datetime,
        states: dict[tuple[str, str], ChannelState | None],
        listened: bool,
    ) -> list[SendJob]:
        """Start the claimed messages' attempts: on the plain rows where `rows.plain_start` allows, the
        others loaded through the ORM (and claimed there)."""
        jobs: list[SendJob] = []
        plain: list[rows.Row] = []
        others: dict[str, rows.MessageRow] = {}
        progress = self.gw.progress
        for message, attempt in claimed:
            state = states.get((message.contact_id, attempt.channel)) if attempt is not None else None
            if attempt is None or not rows.plain_start(message, attempt, now, state, listened):
                others[message.id] = message
                continue
            # The plain rows have the columns Progress reads and sets here (gateway.rows).
            job = progress.start(session, cast(Message, message), cast(Attempt, attempt))
            if job is not None:
                attempt.sent_by = self.worker
                jobs.append(job)
            plain += (message, attempt)
        rows.write(session, plain)
        if others:
            with session.no_autoflush:  # the claims go out with what take_due changes: one UPDATE a row
                messages = store.lock_messages(session, list(others))
                store.load_attempts(
                    session, [m.current_attempt_id for m in messages.values() if m.current_attempt_id]
                )
            for orm_message in messages.values():
                claim = others[orm_message.id]  # as claimed in the plain row, which is not written
                orm_message.claimed_until, orm_message.claimed_by = claim.claimed_until, claim.claimed_by
                job = progress.take_due(session, orm_message)
                if job is not None:
                    orm_attempt = session.get(Attempt, job.attempt_id)
                    if orm_attempt is not None:
                        orm_attempt.sent_by = self.worker
                    jobs.append(job)
        return jobs

    def _finish_batch(self, outcomes: list[Outcome]) -> bool:
        """Record what the providers answered; True when a message is due again at once.

        On the plain rows where `rows.plain_finish` allows; the others loaded through the ORM."""
        with store.transaction(self.gw.engine) as session:
            sent = [o.result.provider_message_id for o in outcomes if isinstance(o.result, SendResult)]
            store.lock_provider_ids(session, sent)  # before the message locks, as webhooks take them
            messages = rows.lock_sent_messages(session, [o.job.message_id for o in outcomes])
            attempts = rows.load_attempts(session, [o.job.attempt_id for o in outcomes])
            early = store.early_status_ids(
                session, sent + [a.provider_message_id or "" for a in attempts.values()]
            )
            listened = bool(self.gw.subscriptions.for_type(session, "message.status"))
            now, progress = self.gw.clock(), self.gw.progress
            # A message with two outcomes here (sent again after its claim ran out) goes the ORM way: its
            # outcomes are then applied in order, each seeing the one before.
            once = {m for m, n in Counter(o.job.message_id for o in outcomes).items() if n == 1}
            plain: list[rows.Row] = []
            others: list[Outcome] = []
            for outcome in outcomes:
                message, attempt = messages.get(outcome.job.message_id), attempts.get(outcome.job.attempt_id)
                if message is None or attempt is None:
                    continue
                info = self.gw.channels.get(attempt.channel)
                limited = info is not None and info.window_message_limit is not None
                if message.id not in once or not rows.plain_finish(
                    message, attempt, outcome.result, early, limited, listened
                ):
                    others.append(outcome)
                    continue
                # The plain rows have the columns Progress and metrics read and set here (gateway.rows).
                self._record_outcome(
                    session, progress, cast(Message, message), cast(Attempt, attempt), outcome, now
                )
                plain += (message, attempt)
            rows.write(session, plain)
            due = {m.id: m.due_at for m in messages.values()}
            if others:
                due |= self._record_through_orm(session, progress, others, early, now)
            now = self.gw.clock()
            return any(d is not None and d <= now for d in due.values())

    def _record_through_orm(
        self, session: Session, progress: Progress, outcomes: list[Outcome], early: set[str], now: datetime
    ) -> dict[str, datetime | None]:
        """Record these outcomes on ORM objects (failures, receipts, early statuses, events); the messages'
        due times after."""
        messages = store.lock_messages(session, [o.job.message_id for o in outcomes])
        attempts = store.load_attempts(session, [o.job.attempt_id for o in outcomes])
        for outcome in outcomes:
            message, attempt = messages.get(outcome.job.message_id), attempts.get(outcome.job.attempt_id)
            if message is None or attempt is None:
                continue
            self._record_outcome(session, progress, message, attempt, outcome, now)
            if attempt.provider_message_id in early:
                apply_early_statuses(self.gw, session, message, attempt)
        return {m.id: m.due_at for m in messages.values()}

    def _record_outcome(
        self,
        session: Session,
        progress: Progress,
        message: Message,
        attempt: Attempt,
        outcome: Outcome,
        now: datetime,
    ) -> None:
        """Record one outcome: the claim let go, the attempt counted, what follows decided."""
        if message.claimed_by == self.worker:
            message.claimed_until = None
            message.claimed_by = None
        metrics.attempt_recorded(session, message, attempt, outcome.job, outcome.result, outcome.seconds, now)
        progress.finish_send(session, message, attempt, outcome.result)

    def _release_claims(self) -> None:
        with store.transaction(self.gw.engine) as session:
            store.release_claims(session, self.worker)


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop a dispatcher runs on: uvloop's (libuv; less CPU a send than asyncio's own loop,
    docs/benchmarks.md) unless `GATEWAY_EVENT_LOOP=asyncio` or uvloop is not installed (it is a
    dependency everywhere but Windows); None is asyncio's default."""
    if name == "uvloop":
        try:
            import uvloop
        except ImportError:
            log.info("uvloop is not installed; the dispatcher runs on asyncio's own event loop")
            return None
        return cast(Callable[[], asyncio.AbstractEventLoop], uvloop.new_event_loop)
    return None


def _seconds_until(due: datetime | None, now: datetime) -> float:
    if due is None:
        return IDLE_WAIT
    return min(IDLE_WAIT, max(0.0, (due - now).total_seconds()))
