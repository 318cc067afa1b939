"""Messages: accept a send request, show its journey, list, cancel."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from gateway import metrics, store
from gateway.core import Gateway
from gateway.errors import ProblemError, conflict, not_found, validation_failed
from gateway.ids import new_id
from gateway.models import Attempt, Contact, IdempotencyRecord, InboundMessage, Message
from gateway.notify import notify_due
from gateway.routing import ContactFacts, Plan, RouteRequest, Rule, StateFacts, plan_route
from gateway.schemas import SendRequest
from gateway.services.contacts import lock_addresses, resolve_contact
from gateway.services.recipients import Addresses, resolve_simple, routing_facts, simple_addresses
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
    session.flush()  # identities resolve_contact linked are read below
    identities, states = routing_facts(session, [contact.id])
    facts = ContactFacts(
        phone=contact.phone,
        email=contact.email,
        country=contact.country,
        timezone=contact.timezone,
        tags=tuple(contact.tags or ()),
        preferred_channel=contact.preferred_channel,
        identities=identities.get(contact.id, {}),
    )
    return plan_for(session, gw, facts, states.get(contact.id, {}), body, answered, rules)


def plan_for(
    session: Session,
    gw: Gateway,
    facts: ContactFacts,
    state_facts: dict[str, StateFacts],
    body: SendRequest,
    answered: InboundMessage | None = None,
    rules: Sequence[Rule] | None = None,
) -> Plan:
    """`plan_route` for a request, given what is known of its contact; the stored rules are read once per
    transaction (a batch of messages shares them)."""
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
        if "routing_rules" not in session.info:
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


class Accepted(NamedTuple):
    """What an accept wrote about its message (for the metric, the log line and the dispatcher's nudge)."""

    id: str
    contact_id: str
    category: str
    status: str
    reason: str | None
    plan: list[dict[str, Any]]
    due_at: datetime | None


Request = tuple[str | None, SendRequest]  # the caller's API key id, and what it asked
Written = tuple[Accepted, dict[str, Any]]  # what an accept wrote, and its answer


def accept_message(
    gw: Gateway, api_key_id: str | None, body: SendRequest, idempotency_key: str | None
) -> tuple[int, dict[str, Any]]:
    """Validate, resolve the contact, plan, and write message + first attempt in one transaction: shared
    with the requests of this process that arrive together (`gw.accepts`), or, with an Idempotency-Key, the
    request's own."""
    if not idempotency_key:
        written = gw.accepts.submit((api_key_id, body), lambda items: _write_together(gw, items))
        accepted(gw, written[0])
        return 202, written[1]
    digest = request_hash(body)
    for _ in range(2):  # a concurrent request with the same key may win the insert race once
        try:
            with store.transaction(gw.engine) as session:
                if idempotency_key and api_key_id:
                    replay = _replay(session, gw, api_key_id, idempotency_key, digest)
                    if replay is not None:
                        return replay
                [only] = _write_requests(session, gw, [(api_key_id, body)])
                if isinstance(only, ProblemError):
                    raise only
                message, response = only
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
        accepted(gw, message)
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
        chunk = bodies[start : start + BATCH_TRANSACTION]
        requests = [(api_key_id, b) for b in chunk if not isinstance(b, ProblemError)]
        addresses = _addresses(gw, requests)
        with store.transaction(gw.engine) as session:
            outcomes = iter(_write_requests(session, gw, requests, addresses))
            done = [b if isinstance(b, ProblemError) else next(outcomes) for b in chunk]
            written = _accepted(done)
        results += [d if isinstance(d, ProblemError) else d[1] for d in done]
        for message in written:
            metrics.message_accepted(message)
        if _due_now(gw, written):
            gw.nudge()
    return results


def _accepted(written: Sequence[Written | ProblemError]) -> list[Accepted]:
    return [w[0] for w in written if not isinstance(w, ProblemError)]


def _due_now(gw: Gateway, written: Sequence[Accepted]) -> bool:
    now = gw.clock()
    return any(m.due_at is not None and m.due_at <= now for m in written)


def _write_one(
    session: Session, gw: Gateway, api_key_id: str | None, body: SendRequest
) -> Written | ProblemError:
    """`_write_message` in a savepoint (its refusal is returned); a unique-key race with another transaction
    is tried once more."""
    for tries_left in (1, 0):
        try:
            with session.begin_nested():
                return _write_message(session, gw, api_key_id, body)
        except ProblemError as problem:
            return problem
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


def accept_in(session: Session, gw: Gateway, body: SendRequest) -> Accepted:
    """Accept a message sent by the gateway itself (no API key, no idempotency key) inside the caller's
    transaction; after it commits the caller calls `accepted(gw, message)`."""
    message, _ = _write_message(session, gw, None, body)
    if _due_now(gw, [message]):
        notify_due(session)
    return message


def accepted(gw: Gateway, message: Accepted) -> None:
    """What follows a committed accept: the metric and log line, and waking the dispatcher."""
    metrics.message_accepted(message)
    if _due_now(gw, [message]):
        gw.nudge()


def _write_together(gw: Gateway, items: Sequence[Request]) -> list[Written | Exception]:
    """Accept single-message requests that arrived together (`gw.accepts`) in one transaction, each with
    its own answer; should that transaction fail, each is tried alone, so a failure is only its own."""
    try:
        addresses = _addresses(gw, items)
        with store.transaction(gw.engine) as session:
            written = _write_requests(session, gw, items, addresses)
    except Exception:
        if len(items) == 1:
            raise
        return [_alone(gw, item) for item in items]
    return list(written)


def _alone(gw: Gateway, item: Request) -> Written | Exception:
    try:
        return _write_together(gw, [item])[0]
    except Exception as exc:  # noqa: BLE001 - the request's own answer
        return exc


def _addresses(gw: Gateway, items: Sequence[Request]) -> Addresses | None:
    """The recipients' normalised addresses for `_write_simple` (callers work them out before their
    transaction); None when a request needs the general path: it answers an inbound message, or
    `simple_addresses` refuses a recipient."""
    if not items or any(body.in_reply_to for _, body in items):
        return None
    return simple_addresses(gw, [body.to for _, body in items])


def _write_requests(
    session: Session, gw: Gateway, items: Sequence[Request], addresses: Addresses | None = None
) -> list[Written | ProblemError]:
    """Write requests in the caller's transaction: all through `_write_simple` when it takes them all, else
    each through the general path in its own savepoint (so a refusal is that request's alone). Workers are
    notified at the commit when a message is due now. `addresses`: `_addresses(gw, items)`, when known."""
    written = _write_simple(session, gw, items, addresses)
    if written is None:
        if len(items) > 1:  # each request locks its own new addresses: take them all first, in key order
            lock_addresses(session, gw, [body.to for _, body in items])
        written = [_write_one(session, gw, key, body) for key, body in items]
        if _due_now(gw, _accepted(written)):
            notify_due(session)
    return written


def _write_simple(
    session: Session, gw: Gateway, items: Sequence[Request], addresses: Addresses | None = None
) -> list[Written | ProblemError] | None:
    """Accept requests whose recipients `resolve_simple` takes (and that answer no inbound message) with
    one lookup and one INSERT per table; None, having written nothing, when one of them needs the
    general path. `addresses`: `_addresses(gw, items)`, worked out here when the caller has not."""
    if addresses is None:
        addresses = _addresses(gw, items)
    if addresses is None:
        return None
    resolved = resolve_simple(session, gw, [body.to for _, body in items], addresses)
    if resolved is None:
        return None
    out: list[Written | ProblemError] = []
    messages: list[dict[str, Any]] = []
    attempts: list[dict[str, Any]] = []
    for (key, body), recipient in zip(items, resolved.recipients, strict=True):
        if isinstance(recipient, ProblemError):
            out.append(recipient)
            continue
        plan = plan_for(session, gw, recipient.facts, recipient.states, body)
        message, attempt, result = _rows(gw, key, recipient.contact_id, body, plan)
        messages.append(message)
        if attempt is not None:
            attempts.append(attempt)
        out.append(result)
    due = _due_now(gw, _accepted(out))
    store.insert_rows(
        session, [(Contact, resolved.new_contacts), (Message, messages), (Attempt, attempts)], due
    )
    return out


def _write_message(session: Session, gw: Gateway, api_key_id: str | None, body: SendRequest) -> Written:
    contact = resolve_contact(session, gw, body.to)
    plan = compute_plan(session, gw, contact, body, answered_inbound(session, contact, body.in_reply_to))
    message, attempt, result = _rows(gw, api_key_id, contact.id, body, plan)
    store.insert_rows(session, [(Message, [message]), (Attempt, [attempt] if attempt else [])])
    return result


def _rows(
    gw: Gateway, api_key_id: str | None, contact_id: str, body: SendRequest, plan: Plan
) -> tuple[dict[str, Any], dict[str, Any] | None, Written]:
    """The message row (every column), its first attempt's row (None when nothing can be sent), and the
    accept's record and answer."""
    now = gw.clock()
    send_at = body.send_at.astimezone(UTC) if body.send_at else None
    start = max(t for t in (now, send_at, plan.not_before) if t is not None)
    ttl = float(body.ttl) if body.ttl is not None else gw.settings.default_ttl
    steps = [s.__dict__.copy() for s in plan.steps]
    skipped = [s.__dict__.copy() for s in plan.skipped]
    first = plan.steps[0] if plan.steps else None
    status = ("scheduled" if start > now else "queued") if first else "failed"
    reason = None if first else plan.failure_reason
    message_id, due_at = new_id("msg"), start if first else None
    message: dict[str, Any] = {
        "id": message_id,
        "api_key_id": api_key_id,
        "contact_id": contact_id,
        "category": body.category,
        "status": status,
        "reason": reason,
        "channel": first.channel if first else None,
        "content": body.content.model_dump(mode="json", exclude_none=True),
        "plan": steps,
        "skipped": skipped,
        "retry": plan.retry.__dict__.copy(),
        "rule_id": plan.rule.id if plan.rule else None,
        "step_index": 0,
        "current_attempt_id": new_id("att") if first else None,
        "metadata": body.metadata,
        "status_callback": body.status_callback,
        "in_reply_to": body.in_reply_to,
        "human_agent": body.human_agent,
        "send_at": send_at,
        "expires_at": add_seconds(send_at or now, ttl),
        "due_at": due_at,
        "claimed_until": None,
        "claimed_by": None,
        "completed": first is None,
        "fallback_past_opt_out": plan.fallback_past_opt_out,
        "created_at": now,
        "updated_at": now,
    }
    attempt = None
    if first is not None:
        attempt = {
            "id": message["current_attempt_id"],
            "message_id": message_id,
            "step_index": 0,
            "channel": first.channel,
            "address": first.address,
            "created_at": now,
            "updated_at": now,
        }
    record = Accepted(message_id, contact_id, body.category, status, reason, steps, due_at)
    response: dict[str, Any] = {
        "id": message_id,
        "status": status,
        "contact_id": contact_id,
        "plan": plan_out(steps),
        "skipped": skipped,
    }
    if reason:
        response["reason"] = reason
    return message, attempt, (record, response)


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
