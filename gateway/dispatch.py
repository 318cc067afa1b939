"""The dispatcher: claim due messages, send through the adapters concurrently, record outcomes.

It runs an asyncio loop in its own thread. Every send starts from a claim (a lease on the message
row), so a killed process loses nothing: its claims expire and any dispatcher takes the work again.
It sleeps until woken (an accept, a finished send, the APScheduler tick) or until the next due time.
Database calls run in worker threads so a slow commit never stalls the sends in flight.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
import time as clock
from collections.abc import Coroutine
from typing import Any

import aiohttp

from gateway import events, health, metrics, store
from gateway.breaker import Breakers
from gateway.channels import build_channels
from gateway.channels.base import Channel, SendResult
from gateway.content import outgoing_for
from gateway.core import Gateway
from gateway.errors import ChannelError, ErrorKind
from gateway.models import Attempt, Event, EventDelivery
from gateway.notify import DueListener
from gateway.pacing import SharedPacer
from gateway.progress import SendJob
from gateway.services.provider_webhooks import apply_early_statuses

log = logging.getLogger("gateway.dispatch")
IDLE_WAIT = 60.0  # longest sleep when nothing is due; the scheduler tick wakes it sooner
EVENT_TIMEOUT = 10.0  # seconds a business system has to answer an event delivery


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
        self._listener = DueListener(gw.engine, self.nudge) if store.is_postgres(gw.engine) else None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stopping = False
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._inflight: set[asyncio.Task[None]] = set()
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
        """Wake the loop now (thread-safe)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

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
        asyncio.run(self._main())

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        for channel in self.channels.values():
            await channel.open()
        self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=EVENT_TIMEOUT))
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
        assert self._wake is not None
        wanted = min(
            self.gw.settings.dispatch_concurrency - len(self._inflight), self.gw.settings.dispatch_batch
        )
        claimed: list[str] = []
        if wanted > 0:
            claimed = await asyncio.to_thread(self._claim, wanted)
            for message_id in claimed:
                self._spawn(self._process(message_id))
        free = self.gw.settings.dispatch_concurrency - len(self._inflight)
        if free > 0:
            for delivery_id in await asyncio.to_thread(self._claim_deliveries, free):
                self._spawn(self._deliver(delivery_id))
        if claimed and len(claimed) == wanted:
            await asyncio.sleep(0)  # there may be more: claim again once the new tasks started
            return
        timeout = await asyncio.to_thread(self._seconds_until_due)
        with contextlib.suppress(TimeoutError):  # woken by nobody: the next due time has come
            await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(work)
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _shutdown(self) -> None:
        if self._inflight:
            await asyncio.wait(self._inflight, timeout=getattr(self, "_grace", 10.0))
        for task in self._inflight:
            task.cancel()
        with store.transaction(self.gw.engine) as session:
            store.release_claims(session, self.worker)
        for channel in self.channels.values():
            await channel.close()
        if self._http is not None:
            await self._http.close()

    async def _process(self, message_id: str) -> None:
        try:
            job = await asyncio.to_thread(self._take, message_id)
            if job is None:
                return
            started = clock.monotonic()
            result = await self._send(job)
            due_now = await asyncio.to_thread(self._finish, job, result, clock.monotonic() - started)
        except Exception:
            log.exception("dispatcher failed on %s; its claim will expire and be retaken", message_id)
            return
        if due_now and self._wake is not None:
            self._wake.set()

    async def _send(self, job: SendJob) -> SendResult | ChannelError:
        channel = self.channels.get(job.channel)
        if channel is None:
            return ChannelError(ErrorKind.REJECTED, f"channel {job.channel} is not enabled here")
        refused = self.breakers.refuse(job.channel)
        if refused is not None:
            return refused  # the provider is failing: do not call it (fall back now, or wait)
        await self.pacers[job.channel].wait()
        started = clock.monotonic()
        result: SendResult | ChannelError
        try:
            result = await asyncio.wait_for(
                channel.send(outgoing_for(channel, job, self.gw)), self.gw.settings.provider_timeout + 5
            )
        except ChannelError as exc:
            result = exc
        except TimeoutError:
            result = ChannelError(ErrorKind.TRANSIENT, "provider call timed out")
        except Exception as exc:  # an adapter bug must not stop the dispatcher
            log.exception("adapter %s raised an unclassified error", job.channel)
            result = ChannelError(ErrorKind.TRANSIENT, f"unclassified adapter error: {exc!r}")
        metrics.provider_call(job.channel, clock.monotonic() - started)
        self.breakers.record(job.channel, result)
        return result

    async def _deliver(self, delivery_id: str) -> None:
        """POST one event to a business system; any non-2xx answer or error is retried later."""
        try:
            loaded = await asyncio.to_thread(self._load_delivery, delivery_id)
            if loaded is None:
                return
            url, body, secret = loaded
            headers = {
                "Content-Type": "application/json",
                "Gateway-Signature": events.sign(secret, body, int(clock.time())),
            }
            error = None
            assert self._http is not None
            try:
                async with self._http.post(url, data=body, headers=headers) as response:
                    if not 200 <= response.status < 300:
                        error = f"HTTP {response.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"
            more = await asyncio.to_thread(self._record_delivery, delivery_id, error)
        except Exception:
            log.exception("event delivery %s failed; its claim will expire and be retaken", delivery_id)
            return
        if more and self._wake is not None:
            self._wake.set()  # the next event for this endpoint and contact may go now

    # -- database work (runs in worker threads) --------------------------------------------------

    def _claim_deliveries(self, limit: int) -> list[str]:
        with store.transaction(self.gw.engine) as session:
            return events.claim_due_deliveries(
                session, self.worker, self.gw.clock(), self.gw.settings.dispatch_lease, limit
            )

    def _load_delivery(self, delivery_id: str) -> tuple[str, bytes, str] | None:
        with store.transaction(self.gw.engine) as session:
            delivery = session.get(EventDelivery, delivery_id)
            event = session.get(Event, delivery.event_id) if delivery else None
            if delivery is None or event is None or delivery.claimed_by != self.worker:
                return None
            return (
                delivery.url,
                events.body_of(event),
                events.secret_for(session, delivery, self.gw.callback_secret()),
            )

    def _record_delivery(self, delivery_id: str, error: str | None) -> bool:
        with store.transaction(self.gw.engine) as session:
            delivery = session.get(EventDelivery, delivery_id)
            if delivery is None:
                return False
            s = self.gw.settings
            events.record_delivery(
                session, delivery, error, self.gw.clock(), s.event_backoff, s.event_max_backoff
            )
            metrics.event_delivery(session, delivery)
            return error is None

    def _claim(self, limit: int) -> list[str]:
        with store.transaction(self.gw.engine) as session:
            return store.claim_due_messages(
                session, self.worker, self.gw.clock(), self.gw.settings.dispatch_lease, limit
            )

    def _take(self, message_id: str) -> SendJob | None:
        with store.transaction(self.gw.engine) as session:
            message = store.lock_message(session, message_id)
            if message is None or message.claimed_by != self.worker:
                return None  # our lease ran out and another dispatcher has it
            job = self.gw.progress.take_due(session, message)
            if job is not None:
                attempt = session.get(Attempt, job.attempt_id)
                if attempt is not None:
                    attempt.sent_by = self.worker
            return job

    def _finish(self, job: SendJob, result: SendResult | ChannelError, seconds: float = 0.0) -> bool:
        with store.transaction(self.gw.engine) as session:
            if isinstance(result, SendResult):  # before the message lock, in the order webhooks take them
                store.lock_provider_id(session, result.provider_message_id)
            message = store.lock_message(session, job.message_id)
            attempt = session.get(Attempt, job.attempt_id)
            if message is None or attempt is None:
                return False
            if message.claimed_by == self.worker:
                message.claimed_until = None
                message.claimed_by = None
            metrics.attempt_recorded(session, message, attempt, job, result, seconds, self.gw.clock())
            self.gw.progress.finish_send(session, message, attempt, result)
            apply_early_statuses(self.gw, session, message, attempt)
            return message.due_at is not None and message.due_at <= self.gw.clock()

    def _seconds_until_due(self) -> float:
        with store.transaction(self.gw.engine) as session:
            now = self.gw.clock()
            dues = [store.next_due_at(session, now), events.next_due_at(session, now)]
        due = min((d for d in dues if d is not None), default=None)
        if due is None:
            return IDLE_WAIT
        return min(IDLE_WAIT, max(0.0, (due - now).total_seconds()))
