"""Routing rules: validate, store, load from TOML, and turn rows into the pure routing values."""

from __future__ import annotations

import copy
import threading
import time as clocks
import tomllib
import weakref
from datetime import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine
from sqlalchemy import event as sa_event
from sqlmodel import Session, col, select

from gateway.channels import adapter_class
from gateway.core import Gateway
from gateway.errors import FieldError, ProblemError, conflict, not_found
from gateway.ids import new_id
from gateway.models import RoutingRule
from gateway.routing import QuietHours, RetrySpec, Rule, RuleWhen, StepSpec
from gateway.schemas import RuleIn
from gateway.services.admin_users import audit
from gateway.timeutil import format_duration, rfc3339

DRAFT_ID = "rule_draft"  # the id a not-yet-saved rule has in an explain
# How long a process plans with the routing rules it read. A rule written through this module is seen by
# this process at once (its cache is dropped); other processes (gunicorn workers, `gateway worker`s) see
# it within this many seconds.
RULES_CACHE_SECONDS = 3.0


def receipt_errors(steps: list[tuple[str, str | None]]) -> list[FieldError]:
    """A `route.N.until` error for each (channel, until) step that waits for a receipt never given."""
    errors = []
    for i, (channel, until) in enumerate(steps):
        cls = adapter_class(channel)
        if until and cls is not None and not cls.can_report(until):
            errors.append(FieldError(f"route.{i}.until", f"{channel} cannot report {until!r}"))
    return errors


def check_receipts(body: RuleIn) -> None:
    """Reject a step that waits for a receipt its channel can never give (422)."""
    errors = receipt_errors([(step.channel, step.until) for step in body.route])
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


def create_rule(session: Session, gw: Gateway, body: RuleIn, *, actor: str) -> dict[str, Any]:
    """Store a new rule; `actor` (a console user, `api:<key id>`, `cli`) is written to the audit log."""
    rules_changed(session)
    check_receipts(body)
    if _name_taken(session, body.name, None):
        raise conflict(f"a rule named {body.name!r} exists")
    now = gw.clock()
    row = RoutingRule(id=new_id("rule"), created_at=now, updated_at=now, **_columns(body))
    session.add(row)
    after = rule_out(row)
    audit(session, actor, "rule.create", row.id, None, copy.deepcopy(after), now)
    return after


def replace_rule(session: Session, gw: Gateway, rule_id: str, body: RuleIn, *, actor: str) -> dict[str, Any]:
    rules_changed(session)
    check_receipts(body)
    row = get_rule(session, rule_id)
    if _name_taken(session, body.name, rule_id):
        raise conflict(f"a rule named {body.name!r} exists")
    before = copy.deepcopy(rule_out(row))
    for key, value in _columns(body).items():
        setattr(row, key, value)
    row.updated_at = gw.clock()
    after = rule_out(row)
    audit(session, actor, "rule.update", row.id, before, copy.deepcopy(after), row.updated_at)
    return after


def delete_rule(session: Session, gw: Gateway, rule_id: str, *, actor: str) -> None:
    rules_changed(session)
    row = get_rule(session, rule_id)
    audit(session, actor, "rule.delete", row.id, copy.deepcopy(rule_out(row)), None, gw.clock())
    session.delete(row)


def set_enabled(session: Session, gw: Gateway, rule_id: str, enabled: bool, *, actor: str) -> dict[str, Any]:
    """Turn a rule on or off; doing what is already so records nothing."""
    rules_changed(session)
    row = get_rule(session, rule_id)
    if row.enabled == enabled:
        return rule_out(row)
    before = copy.deepcopy(rule_out(row))
    row.enabled, row.updated_at = enabled, gw.clock()
    after = rule_out(row)
    action = "rule.enable" if enabled else "rule.disable"
    audit(session, actor, action, row.id, before, copy.deepcopy(after), row.updated_at)
    return after


def move_rule(session: Session, gw: Gateway, rule_id: str, step: int, *, actor: str) -> None:
    """Move a rule one place earlier (`step` -1) or later (+1) in evaluation order by swapping its
    `order` with its neighbour's; when the two share an `order` (ties go by name) every rule is first
    renumbered 10, 20, 30, ... The audit entry lists the orders that changed, by rule name."""
    rules_changed(session)
    rows = list_rules(session)
    at = next((i for i, r in enumerate(rows) if r.id == rule_id), None)
    if at is None:
        raise not_found(f"rule {rule_id}")
    other = at + step
    if step not in (-1, 1) or not 0 <= other < len(rows):
        return  # already first or last
    before = {r.name: r.order for r in rows}
    if rows[at].order == rows[other].order:
        for i, r in enumerate(rows):
            r.order = 10 * (i + 1)
    rows[at].order, rows[other].order = rows[other].order, rows[at].order
    now = gw.clock()
    changed = [r for r in rows if r.order != before[r.name]]
    for r in changed:
        r.updated_at = now
    audit(
        session,
        actor,
        "rule.reorder",
        rule_id,
        {"order": {r.name: before[r.name] for r in changed}},
        {"order": {r.name: r.order for r in changed}},
        now,
    )


def get_rule(session: Session, rule_id: str) -> RoutingRule:
    row = session.get(RoutingRule, rule_id)
    if row is None:
        raise not_found(f"rule {rule_id}")
    return row


def list_rules(session: Session) -> list[RoutingRule]:
    query = select(RoutingRule).order_by(col(RoutingRule.order), col(RoutingRule.name))
    return list(session.exec(query))


def load_rules_file(session: Session, gw: Gateway, path: Path, actor: str = "cli") -> list[str]:
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
            replace_rule(session, gw, existing.id, body, actor=actor)
        else:
            create_rule(session, gw, body, actor=actor)
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
    return [_completed(to_routing_rule(row), gw) for row in list_rules(session)]


# Per database engine: (monotonic time read, retry defaults completed with, the rules).
_cache: weakref.WeakKeyDictionary[Engine, tuple[float, Any, list[Rule]]] = weakref.WeakKeyDictionary()
_cache_lock = threading.Lock()


def planning_rules(session: Session, gw: Gateway) -> list[Rule]:
    """`routing_rules`, read at most once per RULES_CACHE_SECONDS per process (what accepting uses)."""
    engine = gw.engine
    defaults = gw.defaults.retry
    now = clocks.monotonic()
    with _cache_lock:
        cached = _cache.get(engine)
    if cached is not None and cached[0] + RULES_CACHE_SECONDS > now and cached[1] == defaults:
        return cached[2]
    rules = routing_rules(session, gw)
    with _cache_lock:
        _cache[engine] = (now, defaults, rules)
    return rules


def forget_rules() -> None:
    """Drop every cached rule list of this process."""
    with _cache_lock:
        _cache.clear()


def rules_changed(session: Session) -> None:
    """A rule is being written in `session`: forget the cached rules now and again once it commits (a
    request that read the old rules in between must not keep them)."""
    forget_rules()
    sa_event.listen(session, "after_commit", lambda _session: forget_rules(), once=True)


def _completed(rule: Rule, gw: Gateway) -> Rule:
    if rule.retry is None:
        return rule
    return Rule(**{**rule.__dict__, "retry": with_defaults(rule.retry, gw.defaults.retry)})


def rules_with_draft(session: Session, gw: Gateway, draft: RuleIn, draft_id: str | None) -> list[Rule]:
    """The stored rules with `draft` in place of rule `draft_id` (or added, as `DRAFT_ID`, when it is
    None): what routing would use if the draft were saved. Nothing is written."""
    row = RoutingRule(id=draft_id or DRAFT_ID, **_columns(draft))
    others = [r for r in routing_rules(session, gw) if r.id != row.id]
    return [*others, _completed(to_routing_rule(row), gw)]
