"""`/v1/contacts`: create, read, change, erase, look up; channels and timeline."""

from __future__ import annotations

from flask import Blueprint, Response, request

from gateway import store
from gateway.api.http import api_route, gateway, json_response, page_args, parse_body
from gateway.errors import validation_failed
from gateway.schemas import ChannelList, ContactIn, ContactList, ContactOut, ContactPatch, Timeline
from gateway.services import contacts, messages

bp = Blueprint("contacts", __name__, url_prefix="/v1/contacts")
LOOKUPS = ("external_id", "phone", "email", "identity")


@api_route(bp, "", "POST", "Create a contact", "send", ContactIn, ContactOut, 201)
def create() -> Response:
    body = parse_body(ContactIn)
    with store.transaction(gateway().engine) as session:
        return json_response(contacts.create_contact(session, gateway(), body), 201)


@api_route(bp, "/<contact_id>", "GET", "A contact", "read", response=ContactOut)
def get(contact_id: str) -> Response:
    with store.transaction(gateway().engine) as session:
        contact = contacts.get_live(session, contact_id)
        return json_response(contacts.contact_out(session, contact))


@api_route(bp, "/<contact_id>", "PATCH", "Change a contact", "send", ContactPatch, ContactOut)
def patch(contact_id: str) -> Response:
    body = parse_body(ContactPatch)
    with store.transaction(gateway().engine) as session:
        return json_response(contacts.patch_contact(session, gateway(), contact_id, body))


@api_route(bp, "/<contact_id>", "DELETE", "Erase a contact", "send", status=204)
def delete(contact_id: str) -> Response:
    with store.transaction(gateway().engine) as session:
        contacts.delete_contact(session, gateway(), contact_id)
    return Response(status=204)


@api_route(
    bp,
    "",
    "GET",
    "Look contacts up",
    "read",
    response=ContactList,
    query={"external_id": "", "phone": "", "email": "", "identity": "<channel>:<address>"},
)
def lookup() -> Response:
    args = {k: v for k, v in request.args.items() if k in LOOKUPS}
    if not args:
        raise validation_failed("external_id", "give one of " + ", ".join(LOOKUPS))
    with store.transaction(gateway().engine) as session:
        found = contacts.find_contacts(session, args, gateway())
        data = [contacts.contact_out(session, c) for c in found]
    return json_response({"data": data, "next_cursor": None})


@api_route(bp, "/<contact_id>/channels", "GET", "What is known per channel", "read", response=ChannelList)
def channels(contact_id: str) -> Response:
    with store.transaction(gateway().engine) as session:
        rows = contacts.channel_rows(session, gateway(), contact_id)
    return json_response({"data": rows, "next_cursor": None})


@api_route(
    bp,
    "/<contact_id>/timeline",
    "GET",
    "Messages to and from a contact, in time order",
    "read",
    response=Timeline,
)
def timeline(contact_id: str) -> Response:
    limit, cursor = page_args()
    with store.transaction(gateway().engine) as session:
        contacts.get_live(session, contact_id)
        data, next_cursor = messages.timeline(session, contact_id, limit, cursor)
    return json_response({"data": data, "next_cursor": next_cursor})
