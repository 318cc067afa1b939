"""`/unsubscribe/<token>`: the List-Unsubscribe target of marketing email (RFC 8058); no API key.

`GET` shows a page with a confirm button and changes nothing (mail scanners follow links). `POST` with the
form body `List-Unsubscribe=One-Click` (what mailbox providers send for one-click, and what the page's
button sends) opts the contact out of the token's channel and tells business systems (`contact.opted_out`),
in one transaction. A token the gateway did not sign, or a contact that no longer exists, is 404.
"""

from __future__ import annotations

from html import escape

from flask import Blueprint, Response, request

from gateway import reachability, store
from gateway.api.http import gateway
from gateway.effects import GatewayEffects
from gateway.inbound.reply_token import read_unsubscribe_token, unsubscribe_key
from gateway.models import Contact
from gateway.services.contacts import follow_merges

bp = Blueprint("unsubscribe", __name__, url_prefix="/unsubscribe")

ONE_CLICK = "One-Click"


def _page(title: str, body: str, status: int = 200) -> Response:
    html = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title></head>\n"
        '<body style="font-family: sans-serif; max-width: 32rem; margin: 3rem auto; padding: 0 1rem">\n'
        f"<h1>{escape(title)}</h1>\n{body}\n</body></html>\n"
    )
    response = Response(html, status=status, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def _not_found() -> Response:
    return _page("Link not valid", "<p>This unsubscribe link is not valid.</p>", 404)


def _contact_of(token: str) -> tuple[str, str] | None:
    """(contact id, channel) of a valid token whose contact still exists (merges followed)."""
    found = read_unsubscribe_token(unsubscribe_key(gateway()), token)
    if found is None:
        return None
    contact_id, channel = found
    with store.transaction(gateway().engine) as session:
        contact = follow_merges(session, session.get(Contact, contact_id))
        if contact is None or contact.deleted_at is not None:
            return None
        return contact.id, channel


@bp.get("/<token>")
def confirm(token: str) -> Response:
    found = _contact_of(token)
    if found is None:
        return _not_found()
    _, channel = found
    form = (
        f'<form method="post" action="/unsubscribe/{escape(token)}">'
        f'<input type="hidden" name="List-Unsubscribe" value="{ONE_CLICK}">'
        f"<p>Stop receiving our messages by {escape(channel)}?</p>"
        '<button type="submit">Unsubscribe</button></form>'
    )
    return _page("Unsubscribe", form)


@bp.post("/<token>")
def unsubscribe(token: str) -> Response:
    found = _contact_of(token)
    if found is None:
        return _not_found()
    if request.form.get("List-Unsubscribe") != ONE_CLICK:
        return _page(
            "Not understood", "<p>Expected the form field <code>List-Unsubscribe=One-Click</code>.</p>", 400
        )
    contact_id, channel = found
    gw = gateway()
    with store.transaction(gw.engine) as session:
        change = reachability.set_opt_out(session, contact_id, channel, True, gw.clock())
        if change is not None:
            GatewayEffects(gw).reachability_changed(session, change)
    return _page("Unsubscribed", f"<p>You will no longer receive our messages by {escape(channel)}.</p>")
