"""`/v1/routing-rules` and `/v1/routing/explain` (admin scope)."""

from __future__ import annotations

from flask import Blueprint, Response

from gateway import store
from gateway.api.http import api_route, caller, gateway, json_response, parse_body
from gateway.schemas import ExplainOut, ExplainRequest, RuleIn, RuleList, RuleOut
from gateway.services import rules
from gateway.services.explain import explain

bp = Blueprint("rules", __name__, url_prefix="/v1")


def _actor() -> str:
    """Who the audit log names for a change made through the API."""
    return f"api:{caller().key_id}"


@api_route(bp, "/routing-rules", "GET", "Rules in evaluation order", "admin", response=RuleList)
def list_() -> Response:
    with store.transaction(gateway().engine) as session:
        data = [rules.rule_out(r) for r in rules.list_rules(session)]
    return json_response({"data": data, "next_cursor": None})


@api_route(bp, "/routing-rules", "POST", "Create a rule", "admin", RuleIn, RuleOut, 201)
def create() -> Response:
    body = parse_body(RuleIn)
    with store.transaction(gateway().engine) as session:
        return json_response(rules.create_rule(session, gateway(), body, actor=_actor()), 201)


@api_route(bp, "/routing-rules/<rule_id>", "GET", "A rule", "admin", response=RuleOut)
def get(rule_id: str) -> Response:
    with store.transaction(gateway().engine) as session:
        return json_response(rules.rule_out(rules.get_rule(session, rule_id)))


@api_route(bp, "/routing-rules/<rule_id>", "PUT", "Replace a rule", "admin", RuleIn, RuleOut)
def replace(rule_id: str) -> Response:
    body = parse_body(RuleIn)
    with store.transaction(gateway().engine) as session:
        return json_response(rules.replace_rule(session, gateway(), rule_id, body, actor=_actor()))


@api_route(bp, "/routing-rules/<rule_id>", "DELETE", "Delete a rule", "admin", status=204)
def delete(rule_id: str) -> Response:
    with store.transaction(gateway().engine) as session:
        rules.delete_rule(session, gateway(), rule_id, actor=_actor())
    return Response(status=204)


@api_route(
    bp,
    "/routing/explain",
    "POST",
    "The plan a message would get, without sending",
    "admin",
    ExplainRequest,
    ExplainOut,
)
def explain_view() -> Response:
    body = parse_body(ExplainRequest)
    return json_response(explain(gateway(), body))
