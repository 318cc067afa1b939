"""`/admin/contacts`: find a contact; `/admin/contacts/<id>`: identities, channel states and timeline."""

from __future__ import annotations

from typing import Any

from flask import redirect, render_template, request, url_for
from sqlmodel import Session

from gateway import store
from gateway.admin import bp
from gateway.admin.auth import admin_required
from gateway.api.http import gateway
from gateway.channels import CHANNEL_NAMES
from gateway.core import Gateway
from gateway.errors import ProblemError
from gateway.models import Contact
from gateway.services import contacts, messages, stats

PAGE_SIZE = 50  # contacts per page of the list, and entries per page of a timeline


def lookups(text: str) -> list[dict[str, str]]:
    """The `find_contacts` lookups one search box means: an identity (`channel:address`), an email
    address, or a phone number or external id."""
    channel, sep, address = text.partition(":")
    if sep and channel in CHANNEL_NAMES and address:
        return [{"identity": text}]
    if "@" in text:
        return [{"email": text}, {"external_id": text}]
    found = [{"external_id": text}]
    if any(c.isdigit() for c in text) and all(c.isdigit() or c in "+-() ." for c in text):
        found.insert(0, {"phone": text})
    return found


def search(session: Session, gw: Gateway, text: str) -> list[Contact]:
    """Contacts the search box names: by id, identity, email, phone or external id."""
    if text.startswith("ct_"):
        try:
            return [contacts.get_live(session, text)]
        except ProblemError:
            return []
    found: dict[str, Contact] = {}
    for lookup in lookups(text):
        try:
            hits = contacts.find_contacts(session, lookup, gw)
        except ProblemError:
            continue  # not a phone number (or email) after all: the other lookups still apply
        found.update((c.id, c) for c in hits)
    return list(found.values())


@bp.get("/contacts", endpoint="contacts")
@admin_required
def contacts_list() -> Any:
    text = request.args.get("q", "").strip()
    cursor = request.args.get("cursor") or None
    gw = gateway()
    next_cursor = None
    with store.transaction(gw.engine) as session:
        if text:
            found = search(session, gw, text)
        else:
            found, next_cursor = stats.recent_contacts(session, PAGE_SIZE, cursor)
        rows = [contacts.contact_out(session, c) for c in found]
    return render_template(
        "admin/contacts.html", rows=rows, q=text, next_cursor=next_cursor, page_size=PAGE_SIZE
    )


@bp.get("/contacts/<contact_id>", endpoint="contact")
@admin_required
def contact_page(contact_id: str) -> Any:
    gw = gateway()
    cursor = request.args.get("cursor") or None
    with store.transaction(gw.engine) as session:
        contact = contacts.get_live(session, contact_id)
        if contact.id != contact_id:  # merged into another contact: show the survivor under its own id
            return redirect(url_for("admin.contact", contact_id=contact.id))
        out = contacts.contact_out(session, contact)
        rows = contacts.channel_rows(session, gw, contact.id)
        states = contacts.states_of(session, contact.id)
        entries, next_cursor = messages.timeline(session, contact.id, PAGE_SIZE, cursor)
    return render_template(
        "admin/contact.html",
        c=out,
        rows=rows,
        states=states,
        entries=entries,
        next_cursor=next_cursor,
        page_size=PAGE_SIZE,
    )
