"""What the gateway learns about reaching a contact on a channel, from outcomes, receipts and inbound.

    receipt (delivered/read) or inbound message   → reachable
    `unreachable` / `invalid_address` error        → unreachable until `reprobe_at` (GATEWAY_REPROBE_AFTER)
    `blocked` error or a provider block event      → blocked until the person writes again
    `opted_out` error or an opt-out keyword        → opted out until an opt-in keyword
Each function returns the change it made (or None), so the caller can tell business systems.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from gateway.models import ChannelState
from gateway.store import channel_state
from gateway.timeutil import add_seconds


@dataclass(frozen=True)
class Change:
    contact_id: str
    channel: str
    reachability: str
    reason: str | None
    opted_out: bool
    opted_out_changed: bool = False


def state_of(session: Session, contact_id: str, channel: str) -> ChannelState:
    """The contact's state on a channel, created as `unknown` when there is none yet."""
    state = channel_state(session, contact_id, channel)
    if state is None:
        state = ChannelState(contact_id=contact_id, channel=channel)
        session.add(state)
    return state


def mark(state: ChannelState, reachability: str, reason: str | None, now: datetime) -> Change | None:
    """Set a state's reachability and reason; the Change when the reachability moved."""
    if state.reachability == reachability and state.reason == reason:
        return None
    changed = state.reachability != reachability
    state.reachability, state.reason = reachability, reason
    if changed or state.since is None:
        state.since = now
    if reachability != "unreachable":
        state.reprobe_at = None
    if not changed:
        return None
    return Change(state.contact_id, state.channel, reachability, reason, state.opted_out)


def learn_from_error(
    session: Session,
    contact_id: str,
    channel: str,
    kind: str,
    detail: str | None,
    now: datetime,
    reprobe_after: float,
) -> Change | None:
    """An attempt failed with `kind`: remember what it says about this person on this channel."""
    state = state_of(session, contact_id, channel)
    if kind in ("unreachable", "invalid_address"):
        change = mark(state, "unreachable", f"{kind}: {detail}" if detail else kind, now)
        state.reprobe_at = add_seconds(now, reprobe_after)
        return change
    if kind == "blocked":
        return mark(state, "blocked", detail or "blocked", now)
    if kind == "opted_out":
        return set_opt_out(session, contact_id, channel, True, now)
    return None


def learn_from_receipt(
    session: Session, contact_id: str, channel: str, status: str, now: datetime
) -> Change | None:
    """A delivery or read receipt proves the channel reaches the person."""
    if status not in ("delivered", "read"):
        return None
    return mark(state_of(session, contact_id, channel), "reachable", f"{status} receipt", now)


def learn_from_inbound(
    session: Session,
    contact_id: str,
    channel: str,
    received_at: datetime,
    window_seconds: float | None,
) -> Change | None:
    """The person wrote on this channel: reachable (a block ends), and its window opens."""
    state = state_of(session, contact_id, channel)
    if state.last_inbound_at is None or received_at >= state.last_inbound_at:
        state.last_inbound_at = received_at
        if window_seconds is not None:
            state.window_open_until = add_seconds(received_at, window_seconds)
        state.sent_in_window = 0
    return mark(state, "reachable", "inbound message", received_at)


def set_opt_out(
    session: Session, contact_id: str, channel: str, opted_out: bool, now: datetime
) -> Change | None:
    """Record an opt-out (or opt-in) on one channel."""
    state = state_of(session, contact_id, channel)
    if state.opted_out == opted_out:
        return None
    state.opted_out = opted_out
    state.opted_out_at = now if opted_out else None
    return Change(contact_id, channel, state.reachability, state.reason, opted_out, opted_out_changed=True)
