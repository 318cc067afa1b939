"""What follows from a change in a message's progress: reachability learned, events recorded."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from sqlmodel import Session

from gateway import events, reachability
from gateway.models import Attempt, ChannelState, Message
from gateway.reachability import Change
from gateway.routing import StateFacts

if TYPE_CHECKING:
    from gateway.core import Gateway


def _facts(state: ChannelState) -> StateFacts:
    return StateFacts(
        window_open_until=state.window_open_until,
        last_inbound_at=state.last_inbound_at,
        sent_in_window=state.sent_in_window,
    )


class GatewayEffects:
    """Learns from attempts and tells business systems; Progress calls it inside its transaction."""

    def __init__(self, gw: Gateway) -> None:
        self.gw = gw

    def window_open(self, state: ChannelState, now: datetime, human_agent: bool) -> bool:
        """Whether free-form text may go to this person on this channel now."""
        info = self.gw.channels.get(state.channel)
        return info is not None and info.window_open(_facts(state), now, human_agent)

    def attempt_changed(self, session: Session, message: Message, attempt: Attempt) -> None:
        now = self.gw.clock()
        info = self.gw.channels.get(attempt.channel)
        if attempt.status == "accepted" and info is not None and info.window_message_limit is not None:
            reachability.state_of(session, message.contact_id, attempt.channel).sent_in_window += 1
        if attempt.status == "failed" and attempt.error_kind:
            change = reachability.learn_from_error(
                session,
                message.contact_id,
                attempt.channel,
                attempt.error_kind,
                attempt.error_detail,
                now,
                self.gw.settings.reprobe_after,
            )
        else:
            change = reachability.learn_from_receipt(
                session, message.contact_id, attempt.channel, attempt.status, now
            )
        if change is not None:
            self.reachability_changed(session, change)

    def message_changed(self, session: Session, message: Message) -> None:
        from gateway.services.messages import message_out

        def data() -> dict[str, object]:
            session.flush()
            return message_out(session, message)

        events.emit_message_status(session, self.gw.subscriptions, message, data, self.gw.clock())

    def reachability_changed(self, session: Session, change: Change) -> None:
        """`contact.opted_out` for opt-outs and opt-ins, `contact.reachability` otherwise."""
        if change.opted_out_changed:
            kind = "contact.opted_out"
            data = {"contact_id": change.contact_id, "channel": change.channel, "opted_out": change.opted_out}
        else:
            kind = "contact.reachability"
            data = {
                "contact_id": change.contact_id,
                "channel": change.channel,
                "reachability": change.reachability,
                "reason": change.reason,
            }
        events.emit(session, self.gw.subscriptions, kind, change.contact_id, lambda: data, self.gw.clock())
