"""The rule form: its fields to a `RuleIn` (the API's own model), errors back to the field that caused them.

Field names are the rule's dotted paths (`when.country`, `route.2.until`, `retry.backoff`), so a problem's
field path names the input it belongs to. Route rows left blank are dropped; the errors of the rows kept
are moved back to the row the person filled in. The explain panel's contact fields are `contact.*`.
"""

from __future__ import annotations

import re
from typing import Any, get_args

from pydantic import ValidationError
from werkzeug.datastructures import MultiDict

from gateway.api.http import problem_from
from gateway.errors import ProblemError
from gateway.schemas import Category, ChannelName, ExplainRequest, Receipt, RuleIn
from gateway.services.rules import check_receipts, receipt_errors

CATEGORIES: tuple[str, ...] = get_args(Category)
CHANNELS: tuple[str, ...] = get_args(ChannelName)
RECEIPTS: tuple[str, ...] = get_args(Receipt)
MAX_STEPS = 11  # RuleIn's limit on route steps
RETRY_FIELDS = ("attempts", "backoff", "multiplier", "max_backoff")
FIELDS = (
    "name", "order", "enabled", "when.country", "when.category", "when.tags", "when.has_identity",
    "route", "retry", *(f"retry.{k}" for k in RETRY_FIELDS), "quiet_hours", "quiet_hours.start",
    "quiet_hours.end", "allow_fallback_for",
)  # fmt: skip
CONTACT_FIELDS = (
    "contact.contact_id",
    "contact.phone",
    "contact.email",
    "contact.identities",
    "contact.tags",
)

Form = MultiDict[str, str]
Errors = dict[str, str]


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[\s,]+", text) if w]


def route_rows(form: Form) -> list[int]:
    """The route row numbers present in the form, in order."""
    found = {int(m.group(1)) for k in form if (m := re.fullmatch(r"route\.(\d+)\.channel", k))}
    return sorted(n for n in found if n < 100)


def rule_data(form: Form) -> tuple[dict[str, Any], list[int]]:
    """The rule as the API's JSON would give it, and the form row of each route step kept."""
    data: dict[str, Any] = {"name": form.get("name", "").strip(), "enabled": form.get("enabled") == "on"}
    if form.get("order", "").strip():
        data["order"] = form.get("order", "").strip()
    when = {
        "country": _words(form.get("when.country", "")),
        "category": form.getlist("when.category"),
        "tags": _words(form.get("when.tags", "")),
        "has_identity": form.getlist("when.has_identity"),
    }
    data["when"] = {k: v for k, v in when.items() if v}
    route, rows = [], []
    for n in route_rows(form):
        step = {k: form.get(f"route.{n}.{k}", "").strip() for k in ("channel", "after", "until")}
        if not any(step.values()):
            continue
        route.append({k: v for k, v in step.items() if v or k == "channel"})
        rows.append(n)
    data["route"] = route
    retry = {k: form.get(f"retry.{k}", "").strip() for k in RETRY_FIELDS}
    if any(retry.values()):
        data["retry"] = {k: v for k, v in retry.items() if v}
    start, end = form.get("quiet_hours.start", "").strip(), form.get("quiet_hours.end", "").strip()
    if start or end:
        data["quiet_hours"] = {"start": start, "end": end}
    if form.get("allow_fallback") == "listed":
        data["allow_fallback_for"] = form.getlist("allow_fallback_for")
    return data, rows


def form_field(path: str, rows: list[int]) -> str:
    """The form field a problem's field path belongs to (the nearest enclosing one)."""
    step = re.match(r"route\.(\d+)(\..*)?$", path)
    if step and int(step.group(1)) < len(rows):
        path = f"route.{rows[int(step.group(1))]}{step.group(2) or ''}"
        return path if re.fullmatch(r"route\.\d+\.(channel|after|until)", path) else "route"
    parts = path.split(".")
    while parts and ".".join(parts) not in FIELDS:
        parts.pop()
    return ".".join(parts) or "form"


def problem_errors(problem: ProblemError, rows: list[int]) -> Errors:
    errors: Errors = {}
    for err in problem.errors or []:
        errors.setdefault(form_field(err.field, rows), err.message)
    if not errors:
        errors["form"] = problem.detail
    return errors


def validate_rule(form: Form) -> tuple[RuleIn | None, Errors]:
    """The rule the form describes, checked exactly as the API checks it, or the errors by field."""
    data, rows = rule_data(form)
    try:
        body = RuleIn.model_validate(data, strict=False)
        check_receipts(body)
    except ValidationError as exc:
        problem = problem_from(exc)
        # The receipt check needs a valid rule; the steps that are valid so far are checked too, so
        # every message shows at once.
        steps = [(s["channel"], s.get("until")) for s in data["route"]]
        known = [(c, u) if c in CHANNELS and (u is None or u in RECEIPTS) else ("", None) for c, u in steps]
        problem.errors = [*problem.errors, *receipt_errors(known)]
        return None, problem_errors(problem, rows)
    except ProblemError as problem:
        return None, problem_errors(problem, rows)
    return body, {}


def explain_request(form: Form) -> tuple[ExplainRequest | None, Errors]:
    """The explain panel's contact and category as an explain request; None when no contact is given."""
    to: dict[str, Any] = {}
    for name in ("contact_id", "phone", "email"):
        if value := form.get(f"contact.{name}", "").strip():
            to[name] = value
    identities = {}
    for line in form.get("contact.identities", "").splitlines():
        channel, _, address = line.strip().partition(":")
        if channel.strip():
            identities[channel.strip()] = address.strip()
    if identities:
        to["identities"] = identities
    if tags := _words(form.get("contact.tags", "")):
        to["tags"] = tags
    if not to:
        return None, {}
    data = {"to": to, "category": form.get("contact.category") or "transactional"}
    try:
        return ExplainRequest.model_validate(data, strict=False), {}
    except ValidationError as exc:
        return None, {_contact_field(e.field): e.message for e in problem_from(exc).errors}


def _contact_field(path: str) -> str:
    if path == "category":
        return "contact.category"
    name = path.removeprefix("to.").split(".")[0]
    return f"contact.{name}" if f"contact.{name}" in CONTACT_FIELDS else "contact"


def contact_errors(problem: ProblemError) -> Errors:
    """Errors of resolving the contact (an unparseable phone, an unknown contact id) by field."""
    errors = {_contact_field(e.field): e.message for e in problem.errors or []}
    return errors or {"contact": problem.detail}


def form_values(rule: dict[str, Any]) -> Form:
    """A stored rule (`rule_out`) as the form's fields."""
    values: Form = MultiDict()
    values["name"], values["order"] = rule["name"], str(rule["order"])
    if rule["enabled"]:
        values["enabled"] = "on"
    when = rule["when"] or {}
    values["when.country"] = ", ".join(when.get("country", []))
    values["when.tags"] = ", ".join(when.get("tags", []))
    values.setlist("when.category", when.get("category", []))
    values.setlist("when.has_identity", when.get("has_identity", []))
    for n, step in enumerate(rule["route"]):
        for key in ("channel", "after", "until"):
            values[f"route.{n}.{key}"] = str(step.get(key) or "")
    for key, value in (rule["retry"] or {}).items():
        values[f"retry.{key}"] = str(value)
    if rule["quiet_hours"]:
        values["quiet_hours.start"] = rule["quiet_hours"]["start"]
        values["quiet_hours.end"] = rule["quiet_hours"]["end"]
    if rule["allow_fallback_for"] is not None:
        values["allow_fallback"] = "listed"
        values.setlist("allow_fallback_for", rule["allow_fallback_for"])
    return values


def shown_rows(values: Form) -> list[int]:
    """The route rows to draw: those in the form, and a blank one after the last if it is filled in (the
    page's script adds more without a round trip)."""
    rows = route_rows(values)
    if not rows:
        return [0]
    if len(rows) < MAX_STEPS and values.get(f"route.{rows[-1]}.channel"):
        rows.append(rows[-1] + 1)
    return rows
