"""Messages: accept a send request, show its journey, list, cancel."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, timedelta
from typing import Any

from sqlalchemy import bindparam
from sqlalchemy import select as sa_select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gateway import metrics, store
from gateway.core import Gateway
from gateway.errors import ProblemError, conflict, not_found, validation_failed
from gateway.ids import new_id
from gateway.models import Attempt, ChannelState, Contact, IdempotencyRecord, InboundMessage, Message
from gateway.notify import notify_due
from gateway.routing import ContactFacts, Plan, RouteRequest, Rule, StateFacts, plan_route
from gateway.schemas import SendRequest
from gateway.services.contacts import identities_of, resolve_contact
from gateway.services.rules import planning_rules
from gateway.timeutil import add_seconds, format_duration, parse_rfc3339, rfc3339

IDEMPOTENCY_WINDOW = timedelta(hours=24)


def request_hash(body: SendRequest) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def answered_inbound(session: Session, contact: Contact, in_reply_to: str | None) -> InboundMessage | None:
    """The inbound message `in_reply_to` names; 422 unless it is this contact's."""
    if not in_reply_to:
        return None
    inbound = session.get(InboundMessage, in_reply_to)
    if inbound is None or inbound.contact_id != contact.id:
        raise validation_failed("in_reply_to", "no such inbound message from this contact")
    return inbound


# The columns of a contact's channel states that routing reads, in StateFacts' order.
_STATE_FACTS = sa_select(
    *(
        col(c)
        for c in (
            ChannelState.channel,
            ChannelState.reachability,
            ChannelState.reason,
            ChannelState.reprobe_at,
            ChannelState.window_open_until,
            ChannelState.last_inbound_at,
            ChannelState.opted_out,
            ChannelState.sent_in_window,
        )
    )
).where(col(ChannelState.contact_id) == bindparam("id"))


def compute_plan(
    session: Session,
    gw: Gateway,
    contact: Contact,
    body: SendRequest,
    answered: InboundMessage | None = None,
    rules: Sequence[Rule] | None = None,
) -> Plan:
    """Gather what routing needs about a contact and run the pure `plan_route`; a reply starts on the
    channel and at the address the answered message came from. `rules` replaces the stored rules (the
    console's explain of a draft rule)."""
    facts = ContactFacts(
        phone=contact.phone,
        email=contact.email,
        country=contact.country,
        timezone=contact.timezone,
        tags=tuple(contact.tags or ()),
        preferred_channel=contact.preferred_channel,
        identities=identities_of(session, contact.id),
    )
    state_facts = {name: StateFacts(*row) for name, *row in session.execute(_STATE_FACTS, {"id": contact.id})}
    request = RouteRequest(
        category=body.category,
        channels=tuple(body.channels) if body.channels is not None else None,
        fallback_after=float(body.fallback.after)
        if body.fallback and body.fallback.after is not None
        else None,
        fallback_until=body.fallback.until if body.fallback else None,
        templates=frozenset((body.content.templates or {}).keys()),
        send_at=body.send_at.astimezone(UTC) if body.send_at else None,
        reply_channel=answered.channel if answered else None,
        reply_address=answered.address if answered else None,
        human_agent=body.human_agent,
    )
    if rules is None:
        if "routing_rules" not in session.info:  # once per transaction: a batch of messages shares them
            session.info["routing_rules"] = planning_rules(session, gw)
        rules = session.info["routing_rules"]
    return plan_route(facts, state_facts, rules, request, gw.channels, gw.defaults, gw.clock())


def plan_out(plan: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "channel": s["channel"],
            "address": s["address"],
            "because": s["because"],
            "after": format_duration(s["after"]),
            "until": s["until"],
        }
        for s in plan
    ]


def accept_message(
    gw: Gateway, api_key_id: str | None, body: SendRequest, idempotency_key: str | None
) -> tuple[int, dict[str, Any]]:
    """Validate, resolve the contact, plan, and write message + first attempt in one transaction."""
    digest = request_hash(body) if idempotency_key else ""
    for _ in range(2):  # a concurrent request with the same key may win the insert race once
        try:
            with store.transaction(gw.engine) as session:
                if idempotency_key and api_key_id:
                    replay = _replay(session, gw, api_key_id, idempotency_key, digest)
                    if replay is not None:
                        return replay
                message, response = _write_message(session, gw, api_key_id, body)
                if message.due_at is not None and message.due_at <= gw.clock():
                    notify_due(session)
                if idempotency_key and api_key_id:
                    session.add(
                        IdempotencyRecord(
                            api_key_id=api_key_id,
                            key=idempotency_key,
                            request_hash=digest,
                            response_status=202,
                            response_body=response,
                            created_at=gw.clock(),
                        )
                    )
        except IntegrityError:
            if not idempotency_key:
                raise
            continue
        metrics.message_accepted(message)
        if message.due_at is not None and message.due_at <= gw.clock():
            gw.nudge()
        return 202, response
    raise conflict("a request with this Idempotency-Key is being processed")


BATCH_TRANSACTION = 100  # messages of a batch request written in one transaction


def accept_batch(
    gw: Gateway, api_key_id: str | None, bodies: list[SendRequest | ProblemError]
) -> list[dict[str, Any] | ProblemError]:
    """Accept many messages, up to BATCH_TRANSACTION to a transaction; a refusal (given, or raised while
    writing, which rolls back to the message's own savepoint) is that message's result alone."""
    results: list[dict[str, Any] | ProblemError] = []
    for start in range(0, len(bodies), BATCH_TRANSACTION):
        written: list[Message] = []
        with store.transaction(gw.engine) as session:
            for body in bodies[start : start + BATCH_TRANSACTION]:
                if isinstance(body, ProblemError):
                    results.append(body)
                    continue
                try:
                    message, response = _write_one(session, gw, api_key_id, body)
                except ProblemError as problem:
                    results.append(problem)
                    continue
                written.append(message)
                results.append(response)
            if any(m.due_at is not None and m.due_at <= gw.clock() for m in written):
                notify_due(session)
        for message in written:
            metrics.message_accepted(message)
        if any(m.due_at is not None and m.due_at <= gw.clock() for m in written):
            gw.nudge()
    return results


def _write_one(
    session: Session, gw: Gateway, api_key_id: str | None, body: SendRequest
) -> tuple[Message, dict[str, Any]]:
    """`_write_message` in a savepoint; a unique-key race with another transaction is tried once more."""
    for tries_left in (1, 0):
        try:
            with session.begin_nested():
                return _write_message(session, gw, api_key_id, body)
        except IntegrityError:
            if not tries_left:
                raise
    raise AssertionError("unreachable")


def _replay(
    session: Session, gw: Gateway, api_key_id: str, key: str, digest: str
) -> tuple[int, dict[str, Any]] | None:
    query = select(IdempotencyRecord).where(
        IdempotencyRecord.api_key_id == api_key_id, IdempotencyRecord.key == key
    )
    record = session.exec(query).first()
    if record is None:
        return None
    if record.created_at < gw.clock() - IDEMPOTENCY_WINDOW:
        session.delete(record)
        session.flush()
        return None
    if record.request_hash != digest:
        raise ProblemError(
            422,
            "idempotency-conflict",
            "Idempotency-Key reused",
            "this Idempotency-Key was used with a different request body",
        )
    return record.response_status, record.response_body or {}


def accept_in(session: Session, gw: Gateway, body: SendRequest) -> Message:
    """Accept a message sent by the gateway itself (no API key, no idempotency key) inside the caller's
    transaction; after it commits the caller calls `accepted(gw, message)`."""
    message, _ = _write_message(session, gw, None, body)
    if message.due_at is not None and message.due_at <= gw.clock():
        notify_due(session)
    return message


def accepted(gw: Gateway, message: Message) -> None:
    """What follows a committed accept: the metric and log line, and waking the dispatcher."""
    metrics.message_accepted(message)
    if message.due_at is not None and message.due_at <= gw.clock():
        gw.nudge()


def _write_message(
    session: Session, gw: Gateway, api_key_id: str | None, body: SendRequest
) -> tuple[Message, dict[str, Any]]:
    now = gw.clock()
    contact = resolve_contact(session, gw, body.to)
    plan = compute_plan(session, gw, contact, body, answered_inbound(session, contact, body.in_reply_to))
    send_at = body.send_at.astimezone(UTC) if body.send_at else None
    start = max(t for t in (now, send_at, plan.not_before) if t is not None)
    ttl = float(body.ttl) if body.ttl is not None else gw.settings.default_ttl
    message = Message(
        id=new_id("msg"),
        api_key_id=api_key_id,
        contact_id=contact.id,
        category=body.category,
        content=body.content.model_dump(mode="json", exclude_none=True),
        plan=[s.__dict__.copy() for s in plan.steps],
        skipped=[s.__dict__.copy() for s in plan.skipped],
        retry=plan.retry.__dict__.copy(),
        rule_id=plan.rule.id if plan.rule else None,
        metadata_=body.metadata,
        status_callback=body.status_callback,
        in_reply_to=body.in_reply_to,
        human_agent=body.human_agent,
        fallback_past_opt_out=plan.fallback_past_opt_out,
        send_at=send_at,
        expires_at=add_seconds(send_at or now, ttl),
        created_at=now,
        updated_at=now,
    )
    if plan.steps:
        message.status = "scheduled" if start > now else "queued"
        message.due_at = start
        first = plan.steps[0]
        message.current_attempt_id = new_id("att")
        message.channel = first.channel
        store.insert_rows(session, message)
        store.insert_values(
            session,
            Attempt,
            id=message.current_attempt_id,
            message_id=message.id,
            step_index=0,
            channel=first.channel,
            address=first.address,
            created_at=now,
            updated_at=now,
        )
    else:
        message.status = "failed"
        message.reason = plan.failure_reason
        message.completed = True
        store.insert_rows(session, message)
    response = {
        "id": message.id,
        "status": message.status,
        "contact_id": contact.id,
        "plan": plan_out(message.plan or []),
        "skipped": message.skipped or [],
    }
    if message.reason:
        response["reason"] = message.reason
    return message, response


def attempts_of(session: Session, message_id: str) -> list[Attempt]:
    query = (
        select(Attempt)
        .where(Attempt.message_id == message_id)
        .order_by(col(Attempt.created_at), col(Attempt.id))
    )
    return list(session.exec(query))


def attempt_out(a: Attempt) -> dict[str, Any]:
    error = None
    if a.error_kind:
        error = {"kind": a.error_kind, "code": a.error_code, "detail": a.error_detail}
    return {
        "id": a.id,
        "channel": a.channel,
        "address": a.address,
        "try_number": a.try_number,
        "provider_message_id": a.provider_message_id,
        "status": a.status,
        "error": error,
        "segments": a.segments,
        "created_at": rfc3339(a.created_at),
        "updated_at": rfc3339(a.updated_at),
    }


def message_out(session: Session, message: Message) -> dict[str, Any]:
    return {
        "id": message.id,
        "status": message.status,
        "reason": message.reason,
        "channel": message.channel,
        "contact_id": message.contact_id,
        "category": message.category,
        "created_at": rfc3339(message.created_at),
        "updated_at": rfc3339(message.updated_at),
        "send_at": rfc3339(message.send_at),
        "expires_at": rfc3339(message.expires_at),
        "metadata": message.metadata_,
        "plan": plan_out(message.plan or []),
        "skipped": message.skipped or [],
        "attempts": [attempt_out(a) for a in attempts_of(session, message.id)],
    }


def get_message(session: Session, message_id: str) -> Message:
    message = session.get(Message, message_id)
    if message is None:
        raise not_found(f"message {message_id}")
    return message


def list_messages(
    session: Session,
    contact_id: str | None,
    statuses: list[str],
    since: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Message], str | None]:
    """Newest first; ids sort by creation time, so the cursor is the last id seen."""
    query = select(Message)
    if contact_id:
        query = query.where(Message.contact_id == contact_id)
    if statuses:
        query = query.where(col(Message.status).in_(statuses))
    if since:
        query = query.where(Message.created_at >= parse_rfc3339(since))
    if cursor:
        query = query.where(Message.id < cursor)
    rows = list(session.exec(query.order_by(col(Message.id).desc()).limit(limit + 1)))
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor


def cancel_message(gw: Gateway, message_id: str) -> dict[str, Any]:
    with store.transaction(gw.engine) as session:
        message = store.lock_message(session, message_id)
        if message is None:
            raise not_found(f"message {message_id}")
        if message.completed:
            raise conflict(f"message {message_id} is already {message.status}")
        gw.progress.cancel(session, message)
        session.flush()
        return message_out(session, message)


def timeline(
    session: Session, contact_id: str, limit: int, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """Inbound and outbound messages of a contact in time order; the cursor is `<time>|<id>`."""
    after_at, after_id = None, ""
    if cursor:
        stamp, _, after_id = cursor.partition("|")
        try:
            after_at = parse_rfc3339(stamp)
        except ValueError:
            raise validation_failed("cursor", "is not a cursor this endpoint gave") from None
    outbound = select(Message).where(Message.contact_id == contact_id)
    inbound = select(InboundMessage).where(InboundMessage.contact_id == contact_id)
    if after_at is not None:
        outbound = outbound.where(Message.created_at >= after_at)
        inbound = inbound.where(InboundMessage.received_at >= after_at)
    outbound = outbound.order_by(col(Message.created_at), col(Message.id)).limit(limit + 1)
    inbound = inbound.order_by(col(InboundMessage.received_at), col(InboundMessage.id)).limit(limit + 1)
    entries = [_outbound_entry(m) for m in session.exec(outbound)]
    entries += [_inbound_entry(m) for m in session.exec(inbound)]
    entries.sort(key=lambda e: (e["_at"], e["id"]))
    if after_at is not None:
        entries = [e for e in entries if (e["_at"], e["id"]) > (after_at, after_id)]
    page = entries[:limit]
    next_cursor = f"{page[-1]['_at'].isoformat()}|{page[-1]['id']}" if len(entries) > limit else None
    for entry in page:
        del entry["_at"]
    return page, next_cursor


def _outbound_entry(m: Message) -> dict[str, Any]:
    return {
        "direction": "outbound",
        "id": m.id,
        "channel": m.channel,
        "text": (m.content or {}).get("text"),
        "status": m.status,
        "at": rfc3339(m.created_at),
        "_at": m.created_at,
        "in_reply_to": m.in_reply_to,
    }


def _inbound_entry(m: InboundMessage) -> dict[str, Any]:
    return {
        "direction": "inbound",
        "id": m.id,
        "channel": m.channel,
        "text": m.text,
        "status": "received",
        "at": rfc3339(m.received_at),
        "_at": m.received_at,
        "in_reply_to": m.in_reply_to,
    }
