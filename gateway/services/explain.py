"""Explain a route: the plan a message would get, computed and then thrown away."""

from __future__ import annotations

from typing import Any

from gateway import store
from gateway.core import Gateway
from gateway.schemas import Content, ExplainRequest, RuleIn, SendRequest
from gateway.services.contacts import resolve_contact
from gateway.services.messages import answered_inbound, compute_plan, plan_out
from gateway.services.rules import rules_with_draft
from gateway.timeutil import rfc3339


class _Discard(Exception):
    """Raised to roll back the contact that resolving may have created."""


def explain(
    gw: Gateway, body: ExplainRequest, draft: RuleIn | None = None, draft_id: str | None = None
) -> dict[str, Any]:
    """Run routing exactly as a send would, inside a transaction that is rolled back; with a `draft`
    rule, as if it were saved in place of rule `draft_id` (or as a new rule when that is None)."""
    send = SendRequest(
        to=body.to,
        content=body.content or Content(text="explain"),
        category=body.category,
        channels=body.channels,
        fallback=body.fallback,
        in_reply_to=body.in_reply_to,
        human_agent=body.human_agent,
    )
    result: dict[str, Any] = {}
    try:
        with store.transaction(gw.engine) as session:
            contact = resolve_contact(session, gw, body.to)
            answered = answered_inbound(session, contact, body.in_reply_to)
            rules = rules_with_draft(session, gw, draft, draft_id) if draft is not None else None
            plan = compute_plan(session, gw, contact, send, answered, rules)
            result = {
                "plan": plan_out([s.__dict__ for s in plan.steps]),
                "skipped": [s.__dict__ for s in plan.skipped],
                "rule": {"id": plan.rule.id, "name": plan.rule.name} if plan.rule else None,
                "not_before": rfc3339(plan.not_before),
            }
            raise _Discard
    except _Discard:
        return result
