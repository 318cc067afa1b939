"""Routing rules: validate, store, load from TOML, and turn rows into the pure routing values."""

from __future__ import annotations

import tomllib
from datetime import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlmodel import Session, col, select

from gateway.channels import adapter_class
from gateway.core import Gateway
from gateway.errors import FieldError, ProblemError, conflict, not_found
from gateway.ids import new_id
from gateway.models import RoutingRule
from gateway.routing import QuietHours, RetrySpec, Rule, RuleWhen, StepSpec
from gateway.schemas import RuleIn
from gateway.timeutil import format_duration, rfc3339


def check_receipts(body: RuleIn) -> None:
    """Reject a step that waits for a receipt its channel can never give (422)."""
    errors = []
    for i, step in enumerate(body.route):
        cls = adapter_class(step.channel)
        if step.until and cls is not None and not cls.can_report(step.until):
            errors.append(FieldError(f"route.{i}.until", f"{step.channel} cannot report {step.until!r}"))
    if errors:
        raise ProblemError(422, "validation-error", "The request is invalid", errors[0].message, errors)


def _columns(body: RuleIn) -> dict[str, Any]:
    data = body.model_dump(mode="json")
    return {
        "name": data["name"],
        "order": data["order"],
        "enabled": data["enabled"],
        "when": {k: v for k, v in data["when"].items() if v},
        "route": [{k: v for k, v in step.items() if v is not None} for step in data["route"]],
        "retry": {k: v for k, v in (data["retry"] or {}).items() if v is not None} or None,
        "quiet_hours": data["quiet_hours"],
        "allow_fallback_for": data["allow_fallback_for"],
    }


def rule_out(row: RoutingRule) -> dict[str, Any]:
    route = []
    for step in row.route or []:
        out = dict(step)
        if "after" in out:
            out["after"] = format_duration(out["after"])
        route.append(out)
    retry = dict(row.retry) if row.retry else None
    if retry:
        for key in ("backoff", "max_backoff"):
            if key in retry:
                retry[key] = format_duration(retry[key])
    return {
        "id": row.id,
        "name": row.name,
        "order": row.order,
        "enabled": row.enabled,
        "when": row.when or {},
        "route": route,
        "retry": retry,
        "quiet_hours": row.quiet_hours,
        "allow_fallback_for": row.allow_fallback_for,
        "created_at": rfc3339(row.created_at),
        "updated_at": rfc3339(row.updated_at),
    }


def _name_taken(session: Session, name: str, rule_id: str | None) -> bool:
    row = session.exec(select(RoutingRule).where(RoutingRule.name == name)).first()
    return row is not None and row.id != rule_id


def create_rule(session: Session, gw: Gateway, body: RuleIn) -> dict[str, Any]:
    check_receipts(body)
    if _name_taken(session, body.name, None):
        raise conflict(f"a rule named {body.name!r} exists")
    now = gw.clock()
    row = RoutingRule(id=new_id("rule"), created_at=now, updated_at=now, **_columns(body))
    session.add(row)
    return rule_out(row)


def replace_rule(session: Session, gw: Gateway, rule_id: str, body: RuleIn) -> dict[str, Any]:
    check_receipts(body)
    row = get_rule(session, rule_id)
    if _name_taken(session, body.name, rule_id):
        raise conflict(f"a rule named {body.name!r} exists")
    for key, value in _columns(body).items():
        setattr(row, key, value)
    row.updated_at = gw.clock()
    return rule_out(row)


def get_rule(session: Session, rule_id: str) -> RoutingRule:
    row = session.get(RoutingRule, rule_id)
    if row is None:
        raise not_found(f"rule {rule_id}")
    return row


def list_rules(session: Session) -> list[RoutingRule]:
    query = select(RoutingRule).order_by(col(RoutingRule.order), col(RoutingRule.name))
    return list(session.exec(query))


def load_rules_file(session: Session, gw: Gateway, path: Path) -> list[str]:
    """Create or replace (by name) every `[[rules]]` table of a TOML file; all or nothing."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ProblemError(
            422, "validation-error", "Invalid rules file", f"{path} is not valid TOML: {exc}"
        ) from None
    names = []
    for i, raw in enumerate(data.get("rules", [])):
        try:
            body = RuleIn.model_validate(raw, strict=False)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ProblemError(
                422, "validation-error", "Invalid rule", f"rules[{i}].{where}: {first['msg']}"
            ) from None
        existing = session.exec(select(RoutingRule).where(RoutingRule.name == body.name)).first()
        if existing:
            replace_rule(session, gw, existing.id, body)
        else:
            create_rule(session, gw, body)
        names.append(body.name)
    return names


def to_routing_rule(row: RoutingRule) -> Rule:
    when = row.when or {}
    retry = None
    if row.retry:
        retry = row.retry
    quiet = None
    if row.quiet_hours:
        quiet = QuietHours(_clock(row.quiet_hours["start"]), _clock(row.quiet_hours["end"]))
    return Rule(
        id=row.id,
        name=row.name,
        order=row.order,
        enabled=row.enabled,
        when=RuleWhen(
            country=tuple(c.upper() for c in when.get("country", [])),
            category=tuple(when.get("category", [])),
            tags=tuple(when.get("tags", [])),
            has_identity=tuple(when.get("has_identity", [])),
        ),
        route=tuple(StepSpec(s["channel"], s.get("after"), s.get("until")) for s in row.route or []),
        retry=_retry_spec(retry) if retry else None,
        quiet_hours=quiet,
        allow_fallback_for=tuple(row.allow_fallback_for) if row.allow_fallback_for is not None else None,
    )


def _retry_spec(partial: dict[str, Any]) -> RetrySpec:
    # Missing parts are filled in by `with_defaults` once the settings are known.
    return RetrySpec(
        attempts=int(partial.get("attempts", 0)),
        backoff=float(partial.get("backoff", -1)),
        multiplier=float(partial.get("multiplier", -1)),
        max_backoff=float(partial.get("max_backoff", -1)),
    )


def with_defaults(spec: RetrySpec, defaults: RetrySpec) -> RetrySpec:
    """Fill the parts a rule's retry left out from the configured defaults."""
    return RetrySpec(
        attempts=spec.attempts or defaults.attempts,
        backoff=spec.backoff if spec.backoff >= 0 else defaults.backoff,
        multiplier=spec.multiplier if spec.multiplier >= 0 else defaults.multiplier,
        max_backoff=spec.max_backoff if spec.max_backoff >= 0 else defaults.max_backoff,
    )


def _clock(text: str) -> time:
    hours, minutes = text.split(":")
    return time(int(hours), int(minutes))


def routing_rules(session: Session, gw: Gateway) -> list[Rule]:
    """Every stored rule as routing values, retry parts completed from the defaults."""
    rules = []
    for row in list_rules(session):
        rule = to_routing_rule(row)
        if rule.retry is not None:
            rule = Rule(**{**rule.__dict__, "retry": with_defaults(rule.retry, gw.defaults.retry)})
        rules.append(rule)
    return rules
