"""`/admin/messages`: search messages; `/admin/messages/<id>`: a message's journey, drawn as a timeline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from flask import render_template, request
from sqlmodel import Session

from gateway import store
from gateway.admin import bp, charts
from gateway.admin.auth import admin_required
from gateway.api.http import gateway
from gateway.channels import CHANNEL_NAMES
from gateway.core import Gateway
from gateway.errors import ProblemError
from gateway.models import Attempt
from gateway.services import messages, stats
from gateway.services.contacts import find_contacts

PAGE_SIZE = 50  # messages per page of the search
STATUSES = ("scheduled", "queued", "sending", "sent", "delivered", "read", "failed", "expired", "cancelled")
SENT = frozenset({"accepted", "sent", "delivered", "read"})


@dataclass(frozen=True)
class Step:
    """One line of a journey: an attempt, or what happened between two attempts."""

    kind: str  # accepted, attempt, retry, fallback
    at: float  # seconds after acceptance
    title: str
    detail: str = ""
    attempt: Attempt | None = None


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _after(start: datetime, value: datetime | None) -> float | None:
    return None if value is None else max(0.0, (_aware(value) - start).total_seconds())


def _error(a: Attempt) -> str:
    if not a.error_kind:
        return "no error"
    return a.error_kind + (f" (code {a.error_code})" if a.error_code else "")


def journey(
    attempts: Sequence[Attempt], start: datetime, now: datetime
) -> tuple[list[Step], list[charts.Span]]:
    """The steps of a message's journey and the bars of its timeline chart, from its attempts in order.

    Between two attempts of the same plan step there is a retry; from one step to a later one, a fallback,
    with the error (or timeout) of the attempt left behind.
    """
    start = _aware(start)
    steps = [Step("accepted", 0.0, "Accepted")]
    spans = []
    for i, a in enumerate(attempts):
        begun = _after(start, a.created_at) or 0.0
        if i:
            before = attempts[i - 1]
            if a.step_index > before.step_index:
                steps.append(
                    Step(
                        "fallback",
                        begun,
                        f"Fallback from {before.channel} to {a.channel}",
                        f"{before.channel} ended with {_error(before)}",
                    )
                )
            else:
                waited = begun - (_after(start, before.updated_at) or begun)
                steps.append(
                    Step(
                        "retry",
                        begun,
                        f"Retry on {a.channel}",
                        f"after {_error(before)}; {charts.duration_label(max(waited, 0.0))} later",
                    )
                )
        title = f"Step {a.step_index + 1}: {a.channel}, try {a.try_number}"
        steps.append(Step("attempt", begun, title, "", a))
        marks = []
        if a.sent_at is not None:
            marks.append((_after(start, a.sent_at) or 0.0, "accepted by the provider"))
        if a.delivered_at is not None:
            marks.append((_after(start, a.delivered_at) or 0.0, "delivered"))
        final = a.error_kind is not None or a.status in ("failed", "superseded", "delivered", "read")
        last = a.delivered_at or (a.updated_at if final or a.status in SENT else now)
        outcome = "bad" if a.error_kind or a.status == "failed" else "ok" if a.status in SENT else "open"
        end = _after(start, last) or begun
        label = f"{a.step_index + 1}. {a.channel} #{a.try_number}"
        spans.append(charts.Span(label, begun, end, outcome, marks))
    return steps, spans


def _utc_input(field: str, raw: str, errors: dict[str, str]) -> datetime | None:
    """A `datetime-local` value, read as UTC."""
    if not raw:
        return None
    try:
        return datetime.fromisoformat(raw).replace(tzinfo=UTC)
    except ValueError:
        errors[field] = "Give a date and time like 2026-11-28T17:30."
        return None


def _contact_id(session: Session, gw: Gateway, raw: str, errors: dict[str, str]) -> str | None:
    """A contact filter: a `ct_` id as given, else the contact with that email address or phone number."""
    if not raw or raw.startswith("ct_"):
        return raw or None
    lookup = {"email": raw} if "@" in raw else {"phone": raw}
    try:
        found = find_contacts(session, lookup, gw)
    except ProblemError as error:
        errors["contact"] = error.errors[0].message if error.errors else error.detail
        return None
    if not found:
        errors["contact"] = "No contact has this phone number or email address."
        return None
    return found[0].id


@bp.get("/messages", endpoint="messages")
@admin_required
def messages_list() -> Any:
    args = request.args
    errors: dict[str, str] = {}
    statuses = tuple(s for s in args.getlist("status") if s in STATUSES)
    channel = args.get("channel", "")
    channel = channel if channel in CHANNEL_NAMES else ""
    since = _utc_input("since", args.get("since", ""), errors)
    until = _utc_input("until", args.get("until", ""), errors)
    gw = gateway()
    rows: list[dict[str, Any]] = []
    next_cursor = None
    with store.transaction(gw.engine) as session:
        contact_id = _contact_id(session, gw, args.get("contact", "").strip(), errors)
        if not errors:
            query = stats.MessageQuery(statuses, channel or None, contact_id, since, until)
            found, next_cursor = stats.search_messages(session, query, PAGE_SIZE, args.get("cursor") or None)
            rows = [messages.message_out(session, m) for m in found]
    return render_template(
        "admin/messages.html",
        rows=rows,
        errors=errors,
        statuses=STATUSES,
        channels=CHANNEL_NAMES,
        chosen=set(statuses),
        channel=channel,
        form=args,
        next_cursor=next_cursor,
        filters=[(k, v) for k in args for v in args.getlist(k) if k != "cursor"],
        page_size=PAGE_SIZE,
    )


# `/admin/messages` is the list, so the journey's endpoint is `admin.message`.
@bp.get("/messages/<message_id>", endpoint="message")
@admin_required
def message_journey(message_id: str) -> Any:
    gw = gateway()
    with store.transaction(gw.engine) as session:
        found = messages.get_message(session, message_id)
        out = messages.message_out(session, found)
        attempts = messages.attempts_of(session, message_id)
        steps, spans = journey(attempts, found.created_at, gw.clock())
    chart = charts.journey_chart("journey", f"Timeline of message {message_id}", spans)
    return render_template("admin/message.html", m=out, steps=steps, chart=chart)
