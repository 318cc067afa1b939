"""Explain a route: the plan a message would get, computed and then thrown away."""

from __future__ import annotations

from typing import Any

from gateway import store
from gateway.core import Gateway
from gateway.schemas import Content, ExplainRequest, SendRequest
from gateway.services.contacts import resolve_contact
from gateway.services.messages import compute_plan, plan_out
from gateway.timeutil import rfc3339


class _Discard(Exception):
    """Raised to roll back the contact that resolving may have created."""


def explain(gw: Gateway, body: ExplainRequest) -> dict[str, Any]:
    """Run routing exactly as a send would, inside a transaction that is rolled back."""
    send = SendRequest(
        to=body.to,
        content=body.content or Content(text="explain"),
        category=body.category,
        channels=body.channels,
        fallback=body.fallback,
    )
    result: dict[str, Any] = {}
    try:
        with store.transaction(gw.engine) as session:
            contact = resolve_contact(session, gw, body.to)
            plan = compute_plan(session, gw, contact, send)
            result = {
                "plan": plan_out([s.__dict__ for s in plan.steps]),
                "skipped": [s.__dict__ for s in plan.skipped],
                "rule": {"id": plan.rule.id, "name": plan.rule.name} if plan.rule else None,
                "not_before": rfc3339(plan.not_before),
            }
            raise _Discard
    except _Discard:
        return result
