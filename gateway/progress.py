"""How a message moves: the next step after an outcome, as data in the database.

`decide_after_error` is pure. The other functions run inside one transaction that holds the message row
(`store.lock_message`), so the dispatcher and provider webhooks can report on the same message at once
without losing either report.

    pending ──send──▶ sending ──accepted──▶ accepted/sent ──receipt──▶ delivered ──▶ read
                         │                        │ no `until` by `after` → timeout → next step
                         └──error──▶ failed ──▶ retry this step (transient, rate_limited) or next step
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlmodel import Session, select

from gateway import metrics
from gateway.channels.base import SendResult, StatusUpdate
from gateway.errors import ChannelError, ErrorKind
from gateway.ids import new_id
from gateway.inbound.provider_tokens import take_reply_token
from gateway.models import Attempt, ChannelState, Message
from gateway.routing import RetrySpec, receipt_reached
from gateway.store import channel_state
from gateway.timeutil import add_seconds

ATTEMPT_RANK = {"pending": 0, "sending": 1, "accepted": 2, "sent": 3, "delivered": 4, "read": 5}
MESSAGE_RANK = {"scheduled": 0, "queued": 1, "sending": 2, "sent": 3, "delivered": 4, "read": 5}
FINAL_STATUSES = frozenset({"failed", "expired", "cancelled"})
RETRY_SAME_STEP = frozenset({ErrorKind.TRANSIENT, ErrorKind.RATE_LIMITED})


@dataclass(frozen=True)
class Retry:
    at: datetime
    counts_as_try: bool


@dataclass(frozen=True)
class NextStep:
    step_index: int


@dataclass(frozen=True)
class GiveUp:
    reason: str


Decision = Retry | NextStep | GiveUp


def backoff_seconds(try_number: int, retry: RetrySpec, jitter: float, rand: float) -> float:
    """Exponential backoff for the retry after try `try_number`, spread by ±jitter."""
    base = retry.backoff * retry.multiplier ** (try_number - 1)
    return min(retry.max_backoff, max(0.0, base * (1 + jitter * (2 * rand - 1))))


def decide_after_error(
    error_kind: str,
    retry_after: float | None,
    step_index: int,
    steps: int,
    try_number: int,
    retry: RetrySpec,
    jitter: float,
    now: datetime,
    rand: float,
    fallback_past_opt_out: bool = True,
    fallback_now: bool = False,
) -> Decision:
    """What follows a failed try: retry this channel, move to the next step, or give up.

    `fallback_now` (the channel's circuit breaker is open): the next step at once; on the last step, a
    retry after `retry_after` that does not count as a try.
    """
    if error_kind == ErrorKind.OPTED_OUT and not fallback_past_opt_out:
        return GiveUp("opted-out")  # an opt-out is never bypassed by fallback for this category
    if fallback_now:
        if step_index + 1 < steps:
            return NextStep(step_index + 1)
        return Retry(add_seconds(now, retry_after if retry_after is not None else retry.backoff), False)
    if error_kind == ErrorKind.RATE_LIMITED:
        delay = retry_after if retry_after is not None else retry.backoff
        return Retry(add_seconds(now, delay), counts_as_try=False)
    if error_kind == ErrorKind.TRANSIENT and try_number < retry.attempts:
        return Retry(add_seconds(now, backoff_seconds(try_number, retry, jitter, rand)), True)
    if step_index + 1 < steps:
        return NextStep(step_index + 1)
    return GiveUp("all-channels-failed")


def refusal(state: ChannelState | None, channel: str) -> ChannelError | None:
    """An opt-out or block learned after the plan was made stops the attempt before it is sent."""
    if state is not None and state.opted_out:
        return ChannelError(ErrorKind.OPTED_OUT, f"the contact opted out of {channel}")
    if state is not None and state.reachability == "blocked":
        return ChannelError(ErrorKind.BLOCKED, state.reason or "the contact blocked this channel")
    return None


@dataclass(frozen=True)
class SendJob:
    """One attempt the dispatcher must send now."""

    attempt_id: str
    message_id: str
    channel: str
    address: str
    content: dict[str, Any]
    expires_at: datetime | None
    category: str = "transactional"
    contact_id: str | None = None
    # Whether the person wrote on this channel recently enough for free-form text (windowed channels).
    window_open: bool = False
    human_agent: bool = False
    # The answered inbound message's provider reply token, taken (used up) for this attempt.
    reply_token: str | None = None


class Effects(Protocol):
    """What else happens when attempts and messages change (learning, events)."""

    def attempt_changed(self, session: Session, message: Message, attempt: Attempt) -> None: ...

    def message_changed(self, session: Session, message: Message) -> None: ...

    def window_open(self, state: ChannelState, now: datetime, human_agent: bool) -> bool: ...


class Progress:
    """Applies outcomes to messages; `now` and `rand` are injected for tests."""

    def __init__(
        self,
        now: Callable[[], datetime],
        jitter: float,
        rand: Callable[[], float] = random.random,
        effects: Effects | None = None,
    ) -> None:
        self.now = now
        self.jitter = jitter
        self.rand = rand
        self.effects = effects

    @contextmanager
    def _watching(self, session: Session, message: Message) -> Iterator[None]:
        before = message.status
        yield
        if self.effects is not None and message.status != before:
            self.effects.message_changed(session, message)

    def _attempt_changed(self, session: Session, message: Message, attempt: Attempt) -> None:
        if self.effects is not None:
            self.effects.attempt_changed(session, message, attempt)

    # -- the dispatcher's side --------------------------------------------------------------

    def take_due(self, session: Session, message: Message) -> SendJob | None:
        """Do what is due on a claimed message; return the attempt to send, if any."""
        with self._watching(session, message):
            return self._take_due(session, message)

    def start(self, session: Session, message: Message, attempt: Attempt) -> SendJob | None:
        """Begin a claimed message's current attempt, which is pending and due (`take_due`'s common case,
        for a caller that has the attempt at hand: `gateway.rows`)."""
        with self._watching(session, message):
            return self._start(session, message, attempt)

    def _take_due(self, session: Session, message: Message) -> SendJob | None:
        now = self.now()
        if message.completed:
            self._settle(message, None)
            return None
        if message.expires_at is not None and message.expires_at <= now:
            self._expire(session, message)
            return None
        attempt = self._current(session, message)
        if attempt is None:
            self._settle(message, None)
            return None
        if attempt.status in ("pending", "sending"):
            return self._start(session, message, attempt)
        if attempt.status == "failed" or attempt.error_kind is not None:
            self._settle(message, None)  # already decided when the failure was recorded
            return None
        if attempt.deadline_at is not None and attempt.deadline_at <= now:
            attempt.error_kind = ErrorKind.TIMEOUT
            attempt.error_detail = f"no {self._step(message, attempt)['until']} in time"
            attempt.updated_at = now
            nxt = attempt.step_index + 1
            if nxt < len(message.plan or []):
                metrics.decision(session, message, attempt, NextStep(nxt))
                return self._start(session, message, self._new_attempt(session, message, nxt, 1, now))
            message.completed = True  # last step's timer: nothing more is sent
            self._settle(message, None)
            return None
        self._settle(message, attempt.deadline_at)
        return None

    def _start(self, session: Session, message: Message, attempt: Attempt) -> SendJob | None:
        """Begin sending an attempt, unless an opt-out or block learned since planning forbids it."""
        state = channel_state(session, message.contact_id, attempt.channel)
        refused = refusal(state, attempt.channel)
        if refused is not None:
            self._fail(session, message, attempt, refused)
            return None
        window_open = not attempt.as_template and self._window_open(state, message)
        if not window_open and attempt.channel in ((message.content or {}).get("templates") or {}):
            attempt.as_template = True  # the template goes out: a late window_closed cannot be about it
        token = take_reply_token(session, message.in_reply_to, attempt.channel, attempt.address, self.now())
        return self._begin(message, attempt, window_open, token)

    def finish_send(
        self,
        session: Session,
        message: Message,
        attempt: Attempt,
        result: SendResult | ChannelError,
    ) -> None:
        """Record what the provider answered and schedule what follows."""
        with self._watching(session, message):
            self._finish_send(session, message, attempt, result)

    def _finish_send(
        self, session: Session, message: Message, attempt: Attempt, result: SendResult | ChannelError
    ) -> None:
        now = self.now()
        attempt.updated_at = now
        if isinstance(result, SendResult):
            attempt.provider_message_id = attempt.provider_message_id or result.provider_message_id
            attempt.segments = result.segments if result.segments is not None else attempt.segments
            if attempt.status == "sending":
                attempt.status = result.status
                attempt.sent_at = now
                self._after_progress(message, attempt)
                self._attempt_changed(session, message, attempt)
            return
        if attempt.status == "sending":  # else a webhook already decided this attempt
            self._fail(session, message, attempt, result)

    # -- the webhooks' side ------------------------------------------------------------------

    def apply_status(
        self, session: Session, message: Message, attempt: Attempt, update: StatusUpdate
    ) -> None:
        """Apply a provider status report; a failure schedules a retry or the next step."""
        with self._watching(session, message):
            self._apply_status(session, message, attempt, update)

    def _apply_status(
        self, session: Session, message: Message, attempt: Attempt, update: StatusUpdate
    ) -> None:
        now = update.at or self.now()
        attempt.provider_message_id = attempt.provider_message_id or update.provider_message_id
        if update.status == "failed":
            if attempt.status in ("failed", "superseded"):
                return
            attempt.updated_at = self.now()
            if attempt.id != message.current_attempt_id or message.completed:
                self._record_error(attempt, update.error)
                attempt.status = "failed"
                self._attempt_changed(session, message, attempt)
                return
            if not self._template_instead(session, message, attempt, update.error):
                self._fail(session, message, attempt, update.error)
            return
        if ATTEMPT_RANK.get(update.status, 0) <= ATTEMPT_RANK.get(attempt.status, 99):
            return  # receipts only move forward
        attempt.status = update.status
        attempt.updated_at = self.now()
        if update.status in ("delivered", "read") and attempt.delivered_at is None:
            attempt.delivered_at = now
        self._attempt_changed(session, message, attempt)
        if attempt.id == message.current_attempt_id:
            self._after_progress(message, attempt)
        elif message.status not in FINAL_STATUSES and receipt_reached(
            attempt.status, self._step(message, attempt)["until"]
        ):
            self._complete_late(session, message, attempt)

    # -- helpers -------------------------------------------------------------------------------

    def _begin(self, message: Message, attempt: Attempt, window_open: bool, token: str | None) -> SendJob:
        attempt.status = "sending"
        attempt.sends += 1
        attempt.updated_at = self.now()
        message.status = "sending"
        message.channel = attempt.channel
        message.updated_at = self.now()
        return SendJob(
            attempt.id,
            message.id,
            attempt.channel,
            attempt.address,
            message.content or {},
            message.expires_at,
            category=message.category,
            contact_id=message.contact_id,
            window_open=window_open,
            human_agent=message.human_agent,
            reply_token=token,
        )

    def _after_progress(self, message: Message, attempt: Attempt) -> None:
        if message.status in FINAL_STATUSES:
            return
        step = self._step(message, attempt)
        self._raise_status(message, attempt)
        if receipt_reached(attempt.status, step["until"]):
            message.completed = True
            self._settle(message, None)
            return
        if attempt.deadline_at is None:
            attempt.deadline_at = add_seconds(attempt.sent_at or self.now(), step["after"])
        self._settle(message, attempt.deadline_at)

    def _raise_status(self, message: Message, attempt: Attempt) -> None:
        status = "sent" if attempt.status == "accepted" else attempt.status
        if MESSAGE_RANK.get(status, 0) >= MESSAGE_RANK.get(message.status, 0):
            message.status = status
            message.channel = attempt.channel
        message.updated_at = self.now()

    def _complete_late(self, session: Session, message: Message, attempt: Attempt) -> None:
        """A receipt on an earlier step's attempt: the person got it, so stop falling back."""
        self._raise_status(message, attempt)
        if not message.completed:
            message.completed = True
            self._supersede_pending(session, message)
            self._settle(message, None)

    def _fail(
        self,
        session: Session,
        message: Message,
        attempt: Attempt,
        error: ChannelError | None,
    ) -> None:
        now = self.now()
        self._record_error(attempt, error)
        attempt.status = "failed"
        self._attempt_changed(session, message, attempt)
        if message.status in FINAL_STATUSES or message.completed:
            self._settle(message, None)
            return
        decision = decide_after_error(
            attempt.error_kind or ErrorKind.TRANSIENT,
            error.retry_after if error else None,
            attempt.step_index,
            len(message.plan or []),
            attempt.try_number,
            RetrySpec(**(message.retry or {})),
            self.jitter,
            now,
            self.rand(),
            message.fallback_past_opt_out,
            error.fallback_now if error else False,
        )
        message.updated_at = now
        metrics.decision(session, message, attempt, decision)
        if isinstance(decision, Retry):
            tries = attempt.try_number + (1 if decision.counts_as_try else 0)
            self._new_attempt(session, message, attempt.step_index, tries, decision.at)
            message.status = "sending"
            self._settle(message, decision.at)
            return
        if isinstance(decision, NextStep):
            # Sent by the dispatcher's next round (it is woken at once): every send starts from a claim.
            self._new_attempt(session, message, decision.step_index, 1, now)
            message.status = "sending"
            self._settle(message, now)
            return
        went_out = [a for a in self._all(session, message) if ATTEMPT_RANK.get(a.status, 0) >= 2]
        if went_out:
            # An earlier step did go out (its timer ran out); the message keeps that status.
            best = max(went_out, key=lambda a: ATTEMPT_RANK[a.status])
            message.status = "sent"
            self._raise_status(message, best)
        else:
            message.status = "failed"
            message.reason = decision.reason
        message.completed = True
        self._settle(message, None)

    def _template_instead(
        self, session: Session, message: Message, attempt: Attempt, error: ChannelError | None
    ) -> bool:
        """`window_closed` reported by webhook after the provider accepted text: try the same step once
        more with the channel's template, when the message has one (else the caller falls back)."""
        templates = (message.content or {}).get("templates") or {}
        if error is None or error.kind != ErrorKind.WINDOW_CLOSED or attempt.as_template:
            return False
        if attempt.channel not in templates or message.status in FINAL_STATUSES or message.completed:
            return False
        now = self.now()
        self._record_error(attempt, error)
        attempt.status = "failed"
        self._attempt_changed(session, message, attempt)
        metrics.decision(session, message, attempt, Retry(now, counts_as_try=False))
        retry = self._new_attempt(session, message, attempt.step_index, attempt.try_number, now)
        retry.as_template = True
        message.status = "sending"
        self._settle(message, now)
        return True

    def _record_error(self, attempt: Attempt, error: ChannelError | None) -> None:
        kind = error.kind if error else ErrorKind.TRANSIENT
        attempt.error_kind = kind
        attempt.error_code = error.code if error else None
        attempt.error_detail = (error.detail if error else "failed without a reason")[:1000]

    def _new_attempt(
        self, session: Session, message: Message, step_index: int, try_number: int, due: datetime
    ) -> Attempt:
        step = (message.plan or [])[step_index]
        attempt = Attempt(
            id=new_id("att"),
            message_id=message.id,
            step_index=step_index,
            try_number=try_number,
            channel=step["channel"],
            address=step["address"],
            created_at=self.now(),
            updated_at=self.now(),
        )
        session.add(attempt)
        message.step_index = step_index
        message.current_attempt_id = attempt.id
        return attempt

    def _expire(self, session: Session, message: Message) -> None:
        if not self._went_out(session, message):
            message.status = "expired"
            message.reason = "expired"
        message.completed = True
        self._supersede_pending(session, message)
        self._settle(message, None)

    def cancel(self, session: Session, message: Message) -> None:
        """Stop a message that is not final; pending attempts are superseded."""
        with self._watching(session, message):
            self._cancel(session, message)

    def _cancel(self, session: Session, message: Message) -> None:
        message.status = "cancelled"
        message.reason = "cancelled"
        message.completed = True
        self._supersede_pending(session, message)
        self._settle(message, None)

    def _supersede_pending(self, session: Session, message: Message) -> None:
        for attempt in self._all(session, message):
            if attempt.status == "pending":
                attempt.status = "superseded"
                attempt.updated_at = self.now()

    def _settle(self, message: Message, due: datetime | None) -> None:
        """Set when the dispatcher must look again (never after ttl) and drop the claim."""
        if due is not None and message.expires_at is not None and not message.completed:
            due = min(due, message.expires_at)
        message.due_at = None if message.completed else due
        message.claimed_until = None
        message.claimed_by = None
        message.updated_at = self.now()

    def _window_open(self, state: ChannelState | None, message: Message) -> bool:
        if self.effects is None or state is None:
            return False
        return self.effects.window_open(state, self.now(), message.human_agent)

    def _went_out(self, session: Session, message: Message) -> bool:
        """Whether any attempt of the message was accepted by a provider."""
        return any(
            ATTEMPT_RANK.get(a.status, 0) >= ATTEMPT_RANK["accepted"] for a in self._all(session, message)
        )

    @staticmethod
    def _current(session: Session, message: Message) -> Attempt | None:
        if message.current_attempt_id is None:
            return None
        return session.get(Attempt, message.current_attempt_id)

    @staticmethod
    def _all(session: Session, message: Message) -> list[Attempt]:
        return list(session.exec(select(Attempt).where(Attempt.message_id == message.id)))

    @staticmethod
    def _step(message: Message, attempt: Attempt) -> dict[str, Any]:
        step: dict[str, Any] = (message.plan or [])[attempt.step_index]
        return step
