"""Contacts: find or create the person a message is for, and show what is known about them."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import phonenumbers
from phonenumbers import timezone as phone_timezone
from sqlalchemy import bindparam
from sqlmodel import Session, col, select

from gateway import store
from gateway.channels import CHANNEL_NAMES
from gateway.core import Gateway
from gateway.errors import ProblemError, conflict, not_found, validation_failed
from gateway.ids import new_id
from gateway.models import Attempt, ChannelIdentity, ChannelState, Contact, InboundMessage, Message
from gateway.schemas import ContactIn, ContactPatch, To
from gateway.services.merge import merge_contacts
from gateway.timeutil import rfc3339


@dataclass(frozen=True)
class Phone:
    """A phone number in E.164, with its region and, when the number has only one, its time zone."""

    phone: str
    country: str | None
    timezone: str | None


def normalize_phone(raw: str, country: str | None, default_region: str, field: str) -> Phone:
    """Parse a phone number into E.164 with its region and time zone (a plain value: an ORM object would
    cost twice the parsing)."""
    try:
        number = phonenumbers.parse(raw, (country or default_region).upper())
    except phonenumbers.NumberParseException:
        raise validation_failed(field, "is not a phone number") from None
    if not phonenumbers.is_valid_number(number):
        raise validation_failed(field, "is not a valid phone number for its region")
    zones = [z for z in phone_timezone.time_zones_for_number(number) if z != "Etc/Unknown"]
    return Phone(
        phone=phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164),
        country=phonenumbers.region_code_for_number(number),
        timezone=zones[0] if len(zones) == 1 else None,
    )


def normalize_email(raw: str, field: str) -> str:
    """Check the shape of an email address and case-fold it."""
    text = raw.strip()
    local, at, domain = text.rpartition("@")
    if not at or not local or "." not in domain or any(c.isspace() for c in text):
        raise validation_failed(field, "is not an email address")
    return text.casefold()


def normalize_to(gw: Gateway, to: To, prefix: str = "to") -> tuple[Phone | None, str | None]:
    """A recipient's phone number and email address, normalised (None where not given); a 422 naming
    `<prefix>.phone` or `<prefix>.email` when one does not parse."""
    phone = (
        normalize_phone(to.phone, to.country, gw.settings.default_region, f"{prefix}.phone")
        if to.phone
        else None
    )
    return phone, normalize_email(to.email, f"{prefix}.email") if to.email else None


def lock_addresses(session: Session, gw: Gateway, tos: Sequence[To]) -> None:
    """Before one transaction resolves several recipients with `resolve_contact`, lock all their phone
    numbers and email addresses at once, in key order (PostgreSQL): each `resolve_contact` locks its own,
    and two transactions taking them one request at a time in opposite orders would wait on each other
    (PostgreSQL would abort one). A recipient whose addresses do not parse is left to `resolve_contact` to
    refuse."""
    if not store.is_postgres(gw.engine):
        return
    addresses = []
    for to in tos:
        with contextlib.suppress(ProblemError):
            phone, email = normalize_to(gw, to)
            addresses += [phone.phone if phone else "", email or ""]
    store.lock_contact_addresses(session, addresses)


def resolve_contact(session: Session, gw: Gateway, to: To, prefix: str = "to") -> Contact:
    """Find the contact a request means (by id, external id, identity, phone, email) or create it."""
    phone, email = normalize_to(gw, to, prefix)
    store.lock_contact_addresses(session, [phone.phone if phone else "", email or ""])
    contact, same_person = _find(session, to, phone.phone if phone else None, email)
    now = gw.clock()
    created = contact is None
    if contact is None:
        contact = Contact(id=new_id("ct"), created_at=now)
        session.add(contact)
    for other in same_person:
        merge_contacts(session, contact, other, now)
    if to.external_id and contact.external_id is None:
        contact.external_id = to.external_id
    if phone and contact.phone is None:
        contact.phone, contact.country, contact.timezone = (
            phone.phone,
            phone.country,
            phone.timezone,
        )
    if email and contact.email is None:
        contact.email = email
    if to.name:
        contact.name = to.name
    if to.locale:
        contact.locale = to.locale
    if to.tags:
        contact.tags = sorted(set(contact.tags or []) | set(to.tags))
    if created or same_person or session.is_modified(contact):  # a request that adds nothing writes nothing
        contact.updated_at = now
    session.flush()
    for channel, address in (to.identities or {}).items():
        _link_identity(session, contact, channel, address)
    return contact


def live() -> Any:
    """Contacts that are neither erased nor merged into another."""
    return col(Contact.deleted_at).is_(None) & col(Contact.merged_into).is_(None)


def follow_merges(session: Session, contact: Contact | None) -> Contact | None:
    """The contact a merged-away record became (or the record itself)."""
    seen = set()
    while contact is not None and contact.merged_into and contact.id not in seen:
        seen.add(contact.id)
        contact = session.get(Contact, contact.merged_into)
    return contact


# Built once: the lookups every send request makes (building a statement costs more than running it).
_BY_PHONE = select(Contact).where(Contact.phone == bindparam("phone"), live()).limit(1)
_BY_EMAIL = select(Contact).where(Contact.email == bindparam("email"), live()).limit(1)


def _find(
    session: Session, to: To, phone: str | None, email: str | None
) -> tuple[Contact | None, list[Contact]]:
    """The contact `to` means, and other records that turn out to be the same person.

    An explicit id or external_id names the person; records found by their identities, phone or email
    are then the same person and get merged into it.
    """
    named = None
    if to.contact_id:
        named = follow_merges(session, session.get(Contact, to.contact_id))
        if named is None or named.deleted_at is not None:
            raise validation_failed("to.contact_id", "no such contact")
    elif to.external_id:
        named = session.exec(select(Contact).where(Contact.external_id == to.external_id, live())).first()
    by_address: list[Contact] = []
    for channel, address in (to.identities or {}).items():
        query = (
            select(Contact)
            .join(ChannelIdentity)
            .where(ChannelIdentity.channel == channel, ChannelIdentity.address == address, live())
        )
        by_address += list(session.exec(query))
    if phone:
        by_address += list(session.exec(_BY_PHONE, params={"phone": phone}))
    if email:
        by_address += list(session.exec(_BY_EMAIL, params={"email": email}))
    if named is None:
        return (by_address[0] if by_address else None), []
    others = {c.id: c for c in by_address if c.id != named.id and to.external_id}
    return named, list(others.values())


def _link_identity(session: Session, contact: Contact, channel: str, address: str) -> None:
    query = select(ChannelIdentity).where(
        ChannelIdentity.channel == channel, ChannelIdentity.address == address
    )
    existing = session.exec(query).first()
    if existing is None:
        session.add(ChannelIdentity(contact_id=contact.id, channel=channel, address=address))


_IDENTITIES = select(ChannelIdentity.channel, ChannelIdentity.address).where(
    ChannelIdentity.contact_id == bindparam("contact_id")
)


def identities_of(session: Session, contact_id: str) -> dict[str, str]:
    return {
        channel: address for channel, address in session.exec(_IDENTITIES, params={"contact_id": contact_id})
    }


def states_of(session: Session, contact_id: str) -> dict[str, ChannelState]:
    query = select(ChannelState).where(ChannelState.contact_id == contact_id)
    return {s.channel: s for s in session.exec(query)}


def contact_out(session: Session, contact: Contact) -> dict[str, Any]:
    return {
        "id": contact.id,
        "external_id": contact.external_id,
        "name": contact.name,
        "phone": contact.phone,
        "email": contact.email,
        "country": contact.country,
        "timezone": contact.timezone,
        "locale": contact.locale,
        "tags": contact.tags or [],
        "preferred_channel": contact.preferred_channel,
        "identities": identities_of(session, contact.id),
        "created_at": rfc3339(contact.created_at),
        "updated_at": rfc3339(contact.updated_at),
    }


def get_live(session: Session, contact_id: str) -> Contact:
    """A contact by id; a merged-away id answers with the contact it became."""
    contact = follow_merges(session, session.get(Contact, contact_id))
    if contact is None or contact.deleted_at is not None:
        raise not_found(f"contact {contact_id}")
    return contact


def create_contact(session: Session, gw: Gateway, body: ContactIn) -> dict[str, Any]:
    if body.external_id:
        query = select(Contact).where(Contact.external_id == body.external_id)
        if session.exec(query).first():
            raise conflict(f"a contact with external_id {body.external_id!r} exists")
    if body.contact_id:
        raise validation_failed("contact_id", "is assigned by the gateway")
    contact = Contact(id=new_id("ct"), created_at=gw.clock())
    session.add(contact)
    session.flush()
    to = To.model_validate(body.model_dump(exclude={"preferred_channel"}, exclude_none=True))
    _apply(session, gw, contact, to)
    contact.preferred_channel = body.preferred_channel
    return contact_out(session, contact)


def patch_contact(session: Session, gw: Gateway, contact_id: str, body: ContactPatch) -> dict[str, Any]:
    contact = get_live(session, contact_id)
    fields = body.model_dump(exclude_unset=True)
    if "phone" in fields:
        parsed = (
            normalize_phone(body.phone or "", body.country, gw.settings.default_region, "phone")
            if body.phone
            else None
        )
        contact.phone = parsed.phone if parsed else None
        contact.country = parsed.country if parsed else None
        contact.timezone = parsed.timezone if parsed else None
    if "email" in fields:
        contact.email = normalize_email(body.email, "email") if body.email else None
    for name in ("name", "locale", "preferred_channel"):
        if name in fields:
            setattr(contact, name, fields[name])
    if "tags" in fields:
        contact.tags = sorted(set(body.tags or []))
    for channel, address in (body.identities or {}).items():
        _replace_identity(session, contact, channel, address)
    contact.updated_at = gw.clock()
    return contact_out(session, contact)


def _apply(session: Session, gw: Gateway, contact: Contact, to: To) -> None:
    if to.phone:
        parsed = normalize_phone(to.phone, to.country, gw.settings.default_region, "phone")
        contact.phone, contact.country, contact.timezone = (
            parsed.phone,
            parsed.country,
            parsed.timezone,
        )
    if to.email:
        contact.email = normalize_email(to.email, "email")
    contact.external_id = to.external_id
    contact.name, contact.locale = to.name, to.locale
    contact.tags = sorted(set(to.tags or []))
    for channel, address in (to.identities or {}).items():
        _replace_identity(session, contact, channel, address)


def _replace_identity(session: Session, contact: Contact, channel: str, address: str) -> None:
    query = select(ChannelIdentity).where(
        ChannelIdentity.channel == channel, ChannelIdentity.address == address
    )
    taken = session.exec(query).first()
    if taken and taken.contact_id != contact.id:
        raise ProblemError(
            409,
            "conflict",
            "Conflict",
            f"{channel} identity {address!r} belongs to another contact",
        )
    mine = select(ChannelIdentity).where(
        ChannelIdentity.contact_id == contact.id, ChannelIdentity.channel == channel
    )
    for old in session.exec(mine):
        session.delete(old)
    session.flush()
    session.add(ChannelIdentity(contact_id=contact.id, channel=channel, address=address))


def delete_contact(session: Session, gw: Gateway, contact_id: str) -> None:
    """Erase addresses, identities and message bodies; keep anonymous delivery records."""
    contact = get_live(session, contact_id)
    for identity in session.exec(select(ChannelIdentity).where(ChannelIdentity.contact_id == contact.id)):
        session.delete(identity)
    for state in session.exec(select(ChannelState).where(ChannelState.contact_id == contact.id)):
        session.delete(state)
    for message in session.exec(select(Message).where(Message.contact_id == contact.id)):
        message.content = None
        message.metadata_ = None
        message.plan = [{**step, "address": "erased"} for step in message.plan or []]
        for attempt in session.exec(select(Attempt).where(Attempt.message_id == message.id)):
            attempt.address = "erased"
    for inbound in session.exec(select(InboundMessage).where(InboundMessage.contact_id == contact.id)):
        inbound.text, inbound.raw, inbound.reply_token, inbound.address = None, None, None, "erased"
    for name in ("external_id", "name", "phone", "email", "locale", "tags", "preferred_channel"):
        setattr(contact, name, None)
    contact.deleted_at = gw.clock()


def find_contacts(session: Session, args: dict[str, str], gw: Gateway) -> list[Contact]:
    """Look a contact up by external_id, phone, email or identity=<channel>:<address>."""
    query = select(Contact).where(live())
    if "external_id" in args:
        query = query.where(Contact.external_id == args["external_id"])
    if "phone" in args:
        phone = normalize_phone(args["phone"], None, gw.settings.default_region, "phone").phone
        query = query.where(Contact.phone == phone)
    if "email" in args:
        query = query.where(Contact.email == normalize_email(args["email"], "email"))
    if "identity" in args:
        channel, sep, address = args["identity"].partition(":")
        if not sep or channel not in CHANNEL_NAMES:
            raise validation_failed("identity", "must be <channel>:<address>")
        query = query.join(ChannelIdentity).where(
            ChannelIdentity.channel == channel, ChannelIdentity.address == address
        )
    return list(session.exec(query.order_by(col(Contact.id).desc())))


def channel_rows(session: Session, gw: Gateway, contact_id: str) -> list[dict[str, Any]]:
    """One row per channel the contact has an address on or the gateway learned something about."""
    contact = get_live(session, contact_id)
    identities = identities_of(session, contact.id)
    states = states_of(session, contact.id)
    rows = []
    for name, info in gw.channels.items():
        address = identities.get(name) or (
            contact.phone
            if info.address_kind == "phone"
            else contact.email
            if info.address_kind == "email"
            else None
        )
        state = states.get(name)
        if address is None and state is None:
            continue
        rows.append(
            {
                "channel": name,
                "address": address,
                "reachability": state.reachability if state else "unknown",
                "reason": state.reason if state else None,
                "since": rfc3339(state.since) if state else None,
                "window_open_until": rfc3339(state.window_open_until) if state else None,
                "opted_out": state.opted_out if state else False,
            }
        )
    return rows
