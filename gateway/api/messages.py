"""`/v1/messages`: send, batch, read, list, cancel. Views parse, call a service, answer."""

from __future__ import annotations

import json

from flask import Blueprint, Response, request
from pydantic import ValidationError

from gateway import store
from gateway.api.http import (
    api_route,
    caller,
    gateway,
    json_response,
    page_args,
    parse_body,
    problem_from,
)
from gateway.errors import ProblemError, validation_failed
from gateway.schemas import (
    BatchOut,
    BatchRequest,
    MessageList,
    MessageOut,
    SendAccepted,
    SendRequest,
)
from gateway.services import messages
from gateway.timeutil import parse_rfc3339

bp = Blueprint("messages", __name__, url_prefix="/v1/messages")
STATUSES = {
    "scheduled",
    "queued",
    "sending",
    "sent",
    "delivered",
    "read",
    "failed",
    "expired",
    "cancelled",
}


def _idempotency_key() -> str | None:
    key = request.headers.get("Idempotency-Key")
    if key is not None and not 1 <= len(key) <= 255:
        raise validation_failed("Idempotency-Key", "must be 1 to 255 characters")
    return key


@api_route(bp, "", "POST", "Send a message", "send", SendRequest, SendAccepted, 202)
def send() -> Response:
    key = _idempotency_key()
    body = parse_body(SendRequest)
    status, answer = messages.accept_message(gateway(), caller().key_id, body, key)
    return json_response(answer, status)


@api_route(bp, "/batch", "POST", "Send up to 1000 messages", "send", BatchRequest, BatchOut, 202)
def send_batch() -> Response:
    batch = parse_body(BatchRequest)
    bodies: list[SendRequest | ProblemError] = []
    for raw in batch.messages:
        try:
            bodies.append(SendRequest.model_validate_json(json.dumps(raw)))
        except ValidationError as exc:
            bodies.append(problem_from(exc))
    answers = messages.accept_batch(gateway(), caller().key_id, bodies)
    results = [
        {"error": a.within(f"messages.{i}.").to_body()} if isinstance(a, ProblemError) else a
        for i, a in enumerate(answers)
    ]
    return json_response({"results": results}, 202)


@api_route(bp, "/<message_id>", "GET", "A message and its attempts", "read", response=MessageOut)
def get(message_id: str) -> Response:
    with store.transaction(gateway().engine, snapshot=True) as session:  # agrees with its attempts
        return json_response(messages.message_out(session, messages.get_message(session, message_id)))


@api_route(
    bp,
    "",
    "GET",
    "List messages, newest first",
    "read",
    response=MessageList,
    query={
        "contact_id": "only this contact's",
        "status": "comma-separated statuses",
        "since": "created at or after (RFC 3339)",
        "limit": "1-200, default 50",
        "cursor": "next_cursor of the previous page",
    },
)
def list_() -> Response:
    limit, cursor = page_args()
    statuses = [s for s in (request.args.get("status") or "").split(",") if s]
    unknown = [s for s in statuses if s not in STATUSES]
    if unknown:
        raise validation_failed("status", f"unknown status {unknown[0]!r}")
    since = request.args.get("since")
    if since:
        try:
            parse_rfc3339(since)
        except ValueError:
            raise validation_failed("since", "must be an RFC 3339 time") from None
    with store.transaction(gateway().engine, snapshot=True) as session:
        rows, next_cursor = messages.list_messages(
            session, request.args.get("contact_id"), statuses, since, limit, cursor
        )
        data = [messages.message_out(session, m) for m in rows]
    return json_response({"data": data, "next_cursor": next_cursor})


@api_route(
    bp,
    "/<message_id>/cancel",
    "POST",
    "Cancel a message that is not final",
    "send",
    response=MessageOut,
)
def cancel(message_id: str) -> Response:
    return json_response(messages.cancel_message(gateway(), message_id))
