"""`/v1/auto-replies`: automatic answers to customers' messages (admin scope)."""

from __future__ import annotations

from flask import Blueprint, Response

from gateway import store
from gateway.api.http import api_route, gateway, json_response, parse_body
from gateway.schemas import AutoReplyIn, AutoReplyList, AutoReplyOut
from gateway.services import auto_replies

bp = Blueprint("auto_replies", __name__, url_prefix="/v1")


@api_route(bp, "/auto-replies", "GET", "Auto-reply rules in order", "admin", response=AutoReplyList)
def list_() -> Response:
    with store.transaction(gateway().engine) as session:
        data = [auto_replies.auto_reply_out(r) for r in auto_replies.list_auto_replies(session)]
    return json_response({"data": data, "next_cursor": None})


@api_route(bp, "/auto-replies", "POST", "Create an auto-reply rule", "admin", AutoReplyIn, AutoReplyOut, 201)
def create() -> Response:
    body = parse_body(AutoReplyIn)
    with store.transaction(gateway().engine) as session:
        return json_response(auto_replies.create_auto_reply(session, gateway(), body), 201)


@api_route(bp, "/auto-replies/<rule_id>", "GET", "An auto-reply rule", "admin", response=AutoReplyOut)
def get(rule_id: str) -> Response:
    with store.transaction(gateway().engine) as session:
        return json_response(auto_replies.auto_reply_out(auto_replies.get_auto_reply(session, rule_id)))


@api_route(
    bp, "/auto-replies/<rule_id>", "PUT", "Replace an auto-reply rule", "admin", AutoReplyIn, AutoReplyOut
)
def replace(rule_id: str) -> Response:
    body = parse_body(AutoReplyIn)
    with store.transaction(gateway().engine) as session:
        return json_response(auto_replies.replace_auto_reply(session, gateway(), rule_id, body))


@api_route(bp, "/auto-replies/<rule_id>", "DELETE", "Delete an auto-reply rule", "admin", status=204)
def delete(rule_id: str) -> Response:
    with store.transaction(gateway().engine) as session:
        auto_replies.delete_auto_reply(session, rule_id)
    return Response(status=204)
