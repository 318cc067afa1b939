"""The one entry point for a customer's message, whatever channel it came on.

It finds (or creates) the contact, stores the message once however often the provider redelivers it,
threads it to the last outbound message, opens the channel's window, marks the channel reachable,
applies opt-out and opt-in keywords, reports numbered-button replies, and tells business systems.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gateway import events, metrics, reachability, store
from gateway.channels import adapter_class
from gateway.channels.base import IdentityEvent, Inbound
from gateway.core import Gateway
from gateway.effects import GatewayEffects
from gateway.errors import ProblemError
from gateway.ids import new_id
from gateway.models import ChannelIdentity, Contact, InboundMessage, Message
from gateway.services.contacts import follow_merges, live, normalize_email, normalize_phone
from gateway.services.merge import merge_contacts
from gateway.timeutil import rfc3339


@dataclass(frozen=True)
class Received:
    id: str
    contact_id: str
    channel: str
    text: str | None
    duplicate: bool


def receive_inbound(gw: Gateway, item: Inbound) -> Received:
    """Store one inbound message and everything it teaches; a redelivery is acknowledged, not stored."""
    try:
        with store.transaction(gw.engine) as session:
            received = _receive(session, gw, item)
    except IntegrityError:  # the same redelivery raced us to the insert
        with store.transaction(gw.engine) as session:
            existing = _existing(session, item)
            if existing is None:
                raise
            return Received(existing.id, existing.contact_id, existing.channel, existing.text, True)
    metrics.inbound_received(received)
    if not received.duplicate:
        for hook in gw.after_inbound:  # e.g. auto-replies; each sends through the normal send path
            hook(gw, received)
    return received


def _existing(session: Session, item: Inbound) -> InboundMessage | None:
    query = select(InboundMessage).where(
        InboundMessage.channel == item.channel, InboundMessage.provider_message_id == item.provider_message_id
    )
    return session.exec(query).first()


def _receive(session: Session, gw: Gateway, item: Inbound) -> Received:
    existing = _existing(session, item)
    if existing is not None:
        return Received(existing.id, existing.contact_id, existing.channel, existing.text, True)
    now = gw.clock()
    at = item.received_at or now
    kind = gw.channels[item.channel].address_kind if item.channel in gw.channels else "identity"
    sender = _normalise(item.sender, kind, gw)
    # A reply naming a gateway message (an email's signed Reply-To token) belongs to that message's
    # contact, whatever address it came from.
    contact = _replied_contact(session, item.in_reply_to) or _contact_for(
        session, gw, item.channel, kind, sender
    )
    thread = _thread(session, contact.id, item.in_reply_to)
    record = InboundMessage(
        id=new_id("in"),
        contact_id=contact.id,
        channel=item.channel,
        address=sender,
        text=item.text,
        button_id=item.button_id or _numbered_button(thread, item.text),
        provider_message_id=item.provider_message_id,
        in_reply_to=thread.id if thread else None,
        received_at=at,
        raw=item.raw,
        reply_token=item.reply_token,
        reply_token_expires_at=item.reply_token_expires_at if item.reply_token else None,
    )
    session.add(record)
    session.flush()
    effects = GatewayEffects(gw)
    window = gw.channels[item.channel].window_seconds if item.channel in gw.channels else None
    change = reachability.learn_from_inbound(session, contact.id, item.channel, at, window)
    if change is not None:
        effects.reachability_changed(session, change)
    keyword_change = _keywords(session, contact.id, item, now)
    if keyword_change is not None:
        effects.reachability_changed(session, keyword_change)
    data: dict[str, Any] = {
        "id": record.id,
        "contact_id": contact.id,
        "channel": record.channel,
        "text": record.text,
        "received_at": rfc3339(record.received_at),
        "in_reply_to": record.in_reply_to,
    }
    if record.button_id:
        data["button"] = {"id": record.button_id}
    events.emit(session, gw.subscriptions, "message.inbound", contact.id, lambda: data, now)
    return Received(record.id, contact.id, record.channel, record.text, False)


def _normalise(sender: str, kind: str, gw: Gateway) -> str:
    try:
        if kind == "phone":
            return normalize_phone(sender, None, gw.settings.default_region, "from").phone or sender
        if kind == "email":
            return normalize_email(sender, "from")
    except ProblemError:
        return sender.strip()  # a short code or an odd address: keep what the provider said
    return sender


def _contact_for(session: Session, gw: Gateway, channel: str, kind: str, sender: str) -> Contact:
    """The contact behind a sender: by identity, else by phone or email; created when unknown."""
    if kind in ("phone", "email"):
        store.lock_contact_addresses(session, [sender])  # as the accept path does, so one contact a sender
    query = select(ChannelIdentity).where(
        ChannelIdentity.channel == channel, ChannelIdentity.address == sender
    )
    identity = session.exec(query).first()
    by_identity = follow_merges(session, session.get(Contact, identity.contact_id)) if identity else None
    by_address = None
    if kind in ("phone", "email"):
        field = col(Contact.phone) if kind == "phone" else col(Contact.email)
        by_address = session.exec(select(Contact).where(field == sender, live())).first()
    if by_identity is not None and by_address is not None and by_identity.id != by_address.id:
        merge_contacts(session, by_identity, by_address, gw.clock())  # one person, two records
    contact = by_identity or by_address
    if contact is None:
        contact = Contact(id=new_id("ct"), created_at=gw.clock(), updated_at=gw.clock())
        if kind == "phone":
            parsed = (
                normalize_phone(sender, None, gw.settings.default_region, "from")
                if sender.startswith("+")
                else None
            )
            contact.phone = sender
            if parsed is not None:
                contact.country, contact.timezone = parsed.country, parsed.timezone
        elif kind == "email":
            contact.email = sender
        session.add(contact)
        session.flush()
    if kind == "identity" and identity is None:
        session.add(ChannelIdentity(contact_id=contact.id, channel=channel, address=sender))
    return contact


def _replied_contact(session: Session, named: str | None) -> Contact | None:
    """The live contact of the message a reply names."""
    message = session.get(Message, named) if named else None
    contact = follow_merges(session, session.get(Contact, message.contact_id)) if message else None
    return contact if contact is not None and contact.deleted_at is None else None


def _thread(session: Session, contact_id: str, named: str | None) -> Message | None:
    """The outbound message this answers: the one the channel named, else the latest to this contact."""
    if named:
        message = session.get(Message, named)
        if message is not None:
            return message
    query = select(Message).where(Message.contact_id == contact_id).order_by(col(Message.id).desc()).limit(1)
    return session.exec(query).first()


def _numbered_button(thread: Message | None, text: str | None) -> str | None:
    """A reply of just "2" to a message whose buttons were sent as a numbered list means button 2."""
    buttons = (thread.content or {}).get("buttons") if thread else None
    if not buttons or not text or not text.strip().isdigit():
        return None
    number = int(text.strip())
    return str(buttons[number - 1]["id"]) if 1 <= number <= len(buttons) else None


def keyword_of(text: str | None) -> str:
    """The text as a bare keyword: trimmed, upper case, accents and trailing punctuation removed."""
    folded = unicodedata.normalize("NFKD", (text or "").strip())
    folded = "".join(c for c in folded if not unicodedata.combining(c))
    return folded.upper().rstrip(".!? ")


def _keywords(session: Session, contact_id: str, item: Inbound, now: datetime) -> reachability.Change | None:
    cls = adapter_class(item.channel)
    if cls is None:
        return None
    word = keyword_of(item.text)
    if word in cls.opt_out_keywords:
        return reachability.set_opt_out(session, contact_id, item.channel, True, now)
    if word in cls.opt_in_keywords:
        return reachability.set_opt_out(session, contact_id, item.channel, False, now)
    return None


def receive_identity_event(gw: Gateway, event: IdentityEvent) -> str:
    """A follow links (or creates) the contact and marks the channel reachable; a block marks it blocked."""
    with store.transaction(gw.engine) as session:
        kind = gw.channels[event.channel].address_kind if event.channel in gw.channels else "identity"
        sender = _normalise(event.sender, kind, gw)
        contact = _contact_for(session, gw, event.channel, kind, sender)
        at = event.at or gw.clock()
        state = reachability.state_of(session, contact.id, event.channel)
        if state.since is not None and at < state.since:
            return contact.id  # a redelivered or late event older than what we know: it changes nothing
        if event.kind == "follow":
            change = reachability.mark(state, "reachable", event.reason, at)
        else:
            change = reachability.mark(state, "blocked", event.reason, at)
        if change is not None:
            GatewayEffects(gw).reachability_changed(session, change)
        return contact.id
