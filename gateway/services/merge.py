"""Merge two contact records that turn out to be one person, without losing anything."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Session, select

from gateway.models import AutoReplySent, ChannelIdentity, ChannelState, Contact, InboundMessage, Message

FIELDS = ("phone", "email", "country", "timezone", "name", "locale", "preferred_channel")


def merge_contacts(session: Session, survivor: Contact, other: Contact, now: datetime) -> None:
    """Move `other`'s messages, identities and learned states to `survivor`; `other` points at it."""
    if other.id == survivor.id:
        return
    for message in session.exec(select(Message).where(Message.contact_id == other.id)):
        message.contact_id = survivor.id
    for inbound in session.exec(select(InboundMessage).where(InboundMessage.contact_id == other.id)):
        inbound.contact_id = survivor.id
    for identity in session.exec(select(ChannelIdentity).where(ChannelIdentity.contact_id == other.id)):
        identity.contact_id = survivor.id
    _merge_states(session, survivor, other)
    for sent in session.exec(select(AutoReplySent).where(AutoReplySent.contact_id == other.id)):
        session.delete(sent)
    external_id, other.external_id = other.external_id, None
    session.flush()  # free the unique external_id before the survivor may take it
    if survivor.external_id is None:
        survivor.external_id = external_id
    for name in FIELDS:
        if getattr(survivor, name) is None:
            setattr(survivor, name, getattr(other, name))
    survivor.tags = sorted(set(survivor.tags or []) | set(other.tags or [])) or None
    survivor.updated_at = other.updated_at = now
    other.merged_into = survivor.id


def _merge_states(session: Session, survivor: Contact, other: Contact) -> None:
    mine = {
        s.channel: s for s in session.exec(select(ChannelState).where(ChannelState.contact_id == survivor.id))
    }
    for state in list(session.exec(select(ChannelState).where(ChannelState.contact_id == other.id))):
        kept = mine.get(state.channel)
        if kept is None:
            kept = ChannelState(contact_id=survivor.id, channel=state.channel)
            session.add(kept)
            for name in ("reachability", "reason", "since", "reprobe_at", "opted_out", "opted_out_at"):
                setattr(kept, name, getattr(state, name))
        else:
            kept.opted_out = kept.opted_out or state.opted_out  # an opt-out on either record stands
        for name in ("window_open_until", "last_inbound_at"):
            theirs, ours = getattr(state, name), getattr(kept, name)
            if theirs is not None and (ours is None or theirs > ours):
                setattr(kept, name, theirs)
        session.delete(state)
