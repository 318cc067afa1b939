"""Many recipients at once, for the common case of the send endpoints: a `to` that names only a phone
number and/or an email address (perhaps with a name, locale and tags), whose contact is new or already holds
all of that. `resolve_simple` finds them with one query, reads their identities and channel states with one
more (`routing_facts`, which planning for any contact uses), and makes the rows of the new ones (the caller
inserts them with its messages), all without ORM objects. On PostgreSQL, addresses no contact has are
locked and looked up again first (`store.lock_contact_addresses`: another process may be making them).

It answers None when any recipient needs `resolve_contact` (an id, external id or identities, or a contact
the request would change), and finds exactly the contacts that function would: a match by phone before a
match by email, a recipient repeated later in the same call finds the contact made for its first mention.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from sqlalchemy import BindParameter, bindparam, literal, null, or_, union_all
from sqlalchemy import select as sa_select
from sqlmodel import Session, col

from gateway import store
from gateway.core import Gateway
from gateway.errors import ProblemError
from gateway.ids import new_id
from gateway.models import ChannelIdentity, ChannelState, Contact
from gateway.routing import ContactFacts, StateFacts
from gateway.schemas import To
from gateway.services.contacts import Phone, live, normalize_to


@dataclass(frozen=True)
class Recipient:
    """A resolved recipient: its contact's id and what routing reads about it."""

    contact_id: str
    facts: ContactFacts
    states: dict[str, StateFacts]


class Resolved(NamedTuple):
    """What `resolve_simple` found: each `to`'s recipient (or the 422 of its address), and the rows of the
    contacts it made, which the caller inserts before their messages."""

    recipients: list[Recipient | ProblemError]
    new_contacts: list[dict[str, Any]]


def is_simple(to: To) -> bool:
    return not (to.contact_id or to.external_id or to.identities)


_CONTACT_COLUMNS = (
    "id",
    "phone",
    "email",
    "country",
    "timezone",
    "tags",
    "preferred_channel",
    "name",
    "locale",
)
# Built once (building a statement costs more than running it); `expanding` takes a list per call.
_LOOKUP = sa_select(*(col(getattr(Contact, c)) for c in _CONTACT_COLUMNS)).where(
    live(),
    or_(
        col(Contact.phone).in_(bindparam("phones", expanding=True)),
        col(Contact.email).in_(bindparam("emails", expanding=True)),
    ),
)
_IDS: BindParameter[Any] = bindparam("ids", expanding=True)
# Routing's facts in one statement: each contact's channel states (the columns routing reads, in StateFacts'
# order, after the contact id and the channel), then its identities (the address where a state has its
# reachability; the state's other columns NULL). States come first: the union's rows are read with its
# first SELECT's column types.
_STATE_COLUMNS = (
    ChannelState.reachability,
    ChannelState.reason,
    ChannelState.reprobe_at,
    ChannelState.window_open_until,
    ChannelState.last_inbound_at,
    ChannelState.opted_out,
    ChannelState.sent_in_window,
)
_FACTS: Any = union_all(  # Any: rows of mixed column types, unpacked into StateFacts
    sa_select(
        literal("state"),
        col(ChannelState.contact_id),
        col(ChannelState.channel),
        *(col(c) for c in _STATE_COLUMNS),
    ).where(col(ChannelState.contact_id).in_(_IDS)),
    sa_select(
        literal("identity"),
        col(ChannelIdentity.contact_id),
        col(ChannelIdentity.channel),
        col(ChannelIdentity.address),
        *(null() for _ in _STATE_COLUMNS[1:]),
    ).where(col(ChannelIdentity.contact_id).in_(_IDS)),
)


def _would_change(found: dict[str, Any], to: To, phone: str | None, email: str | None) -> bool:
    """Whether `resolve_contact` would update the found contact for this `to`."""
    return bool(
        (phone and found["phone"] is None)
        or (email and found["email"] is None)
        or (to.name and to.name != found["name"])
        or (to.locale and to.locale != found["locale"])
        or (to.tags and not set(to.tags) <= set(found["tags"] or ()))
    )


Addresses = list[tuple[Phone | None, str | None] | ProblemError]


def simple_addresses(gw: Gateway, tos: Sequence[To]) -> Addresses | None:
    """Each `to`'s normalised phone number and email address (or the 422 of the one that does not parse);
    None when one of them needs `resolve_contact`. Pure: callers do it before their transaction, so parsing
    phone numbers (a quarter of an accept's work) does not hold SQLite's one writer lock."""
    if not all(is_simple(to) for to in tos):
        return None
    keys: Addresses = []
    for to in tos:
        try:
            keys.append(normalize_to(gw, to))
        except ProblemError as problem:
            keys.append(problem)
    return keys


def resolve_simple(
    session: Session, gw: Gateway, tos: Sequence[To], addresses: Addresses | None = None
) -> Resolved | None:
    """The recipient of each `to` (or the 422 of its address), making the rows of new contacts; None when
    one of them needs `resolve_contact`. `addresses` are `simple_addresses(gw, tos)` when the caller has
    them already."""
    keys = addresses if addresses is not None else simple_addresses(gw, tos)
    if keys is None:
        return None
    phones = [k[0].phone for k in keys if not isinstance(k, ProblemError) and k[0] is not None]
    emails = [k[1] for k in keys if not isinstance(k, ProblemError) and k[1] is not None]
    by_phone: dict[str, dict[str, Any]] = {}
    by_email: dict[str, dict[str, Any]] = {}
    _look_up(session, phones, emails, by_phone, by_email)
    new_phones = [a for a in phones if a not in by_phone]
    new_emails = [a for a in emails if a not in by_email]
    if (new_phones or new_emails) and store.is_postgres(gw.engine):  # another process may be making them
        store.lock_contact_addresses(session, new_phones + new_emails)  # wait for it, then look again
        _look_up(session, new_phones, new_emails, by_phone, by_email)
    now = gw.clock()
    chosen: list[dict[str, Any] | ProblemError] = []
    created: list[dict[str, Any]] = []
    for to, key in zip(tos, keys, strict=True):
        if isinstance(key, ProblemError):
            chosen.append(key)
            continue
        phone, email = key
        number = phone.phone if phone else None
        found = (by_phone.get(number) if number else None) or (by_email.get(email) if email else None)
        if found is not None:
            if _would_change(found, to, number, email):
                return None
            chosen.append(found)
            continue
        row = _new_contact(to, phone, email, now)
        created.append(row)
        chosen.append(row)
        if number:
            by_phone[number] = row
        if email:
            by_email[email] = row
    new_ids = {row["id"] for row in created}
    known = [c["id"] for c in chosen if not isinstance(c, ProblemError) and c["id"] not in new_ids]
    identities, states = routing_facts(session, known)
    recipients = [c if isinstance(c, ProblemError) else _recipient(c, identities, states) for c in chosen]
    return Resolved(recipients, created)


def _look_up(
    session: Session,
    phones: list[str],
    emails: list[str],
    by_phone: dict[str, dict[str, Any]],
    by_email: dict[str, dict[str, Any]],
) -> None:
    """Add the live contacts with these phone numbers or email addresses to `by_phone` and `by_email`."""
    if not phones and not emails:
        return
    connection = session.connection()  # Core statements: the ORM's execute adds nothing here
    for match in connection.execute(_LOOKUP, {"phones": phones, "emails": emails}).mappings():
        if match["phone"] is not None:
            by_phone.setdefault(match["phone"], dict(match))
        if match["email"] is not None:
            by_email.setdefault(match["email"], dict(match))


def routing_facts(
    session: Session, contact_ids: Sequence[str]
) -> tuple[dict[str, dict[str, str]], dict[str, dict[str, StateFacts]]]:
    """The identities and channel states routing reads, by contact id and channel, with one query.
    They read the database, not the session: flush first what the transaction added."""
    identities: dict[str, dict[str, str]] = {}
    states: dict[str, dict[str, StateFacts]] = {}
    ids = list(dict.fromkeys(contact_ids))
    if not ids:
        return identities, states
    connection = session.connection()  # Core statements: the ORM's execute adds nothing here
    for kind, owner, channel, *facts in connection.execute(_FACTS, {"ids": ids}):
        if kind == "identity":
            identities.setdefault(owner, {})[channel] = facts[0]
        else:
            states.setdefault(owner, {})[channel] = StateFacts(*facts)
    return identities, states


def _new_contact(to: To, phone: Phone | None, email: str | None, now: Any) -> dict[str, Any]:
    """The row `resolve_contact` would create for this `to` (every column, so one INSERT takes them all)."""
    return {
        "id": new_id("ct"),
        "external_id": None,
        "name": to.name or None,
        "phone": phone.phone if phone else None,
        "email": email,
        "country": phone.country if phone else None,
        "timezone": phone.timezone if phone else None,
        "locale": to.locale or None,
        "tags": sorted(set(to.tags)) if to.tags else None,
        "preferred_channel": None,
        "created_at": now,
        "updated_at": now,
        "deleted_at": None,
        "merged_into": None,
    }


def _recipient(
    row: dict[str, Any], identities: dict[str, dict[str, str]], states: dict[str, dict[str, StateFacts]]
) -> Recipient:
    facts = ContactFacts(
        phone=row["phone"],
        email=row["email"],
        country=row["country"],
        timezone=row["timezone"],
        tags=tuple(row["tags"] or ()),
        preferred_channel=row["preferred_channel"],
        identities=identities.get(row["id"], {}),
    )
    return Recipient(row["id"], facts, states.get(row["id"], {}))
