"""Bot hooks: a webhook subscription marked `respond` answers `message.inbound` with the reply to send.

The dispatcher delivers a `message.inbound` event to such a subscription like any event, but waits at most
GATEWAY_BOT_HOOK_TIMEOUT for the answer and reads its body. A 2xx answer of `{"reply": <content>}` (the
`content` object of `POST /v1/messages`) becomes an ordinary message: to the inbound's contact, on the
channel it came from (`channels` = that channel), `in_reply_to` the inbound, `metadata`
`{"bot_hook": "wh_…"}`, sent by no API key. It is written in the same transaction that records the
delivery, so a crash never sends it twice and a recorded delivery never loses it.

Nothing here can hold up an inbound message: the inbound is stored and acknowledged first, and the event
goes out from the dispatcher. A hook that times out or fails is retried like any event (backoff, for a day);
a reply is still taken from a retry's answer, but only if it comes within GATEWAY_BOT_HOOK_MAX_AGE of the
inbound being stored; later replies are dropped. A reply that is not valid content, too large, or too late
sends nothing: the delivery's `reply_error` says why, and a warning is logged (without the body).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import aiohttp
from pydantic import ValidationError
from sqlmodel import Session

from gateway.api.limits import MAX_JSON_DEPTH, json_depth
from gateway.core import Gateway
from gateway.errors import ProblemError
from gateway.models import Event, EventDelivery, InboundMessage, WebhookSubscription
from gateway.schemas import Content, SendRequest
from gateway.services.messages import Accepted, accept_in, accepted

log = logging.getLogger("gateway.bot_hooks")
MAX_ANSWER = 64 * 1024  # bytes of a bot hook's answer that are read
MIN_TIMEOUT = 0.1  # seconds: a configured 0 would otherwise mean "no timeout" to the HTTP client


def responds(session: Session, delivery: EventDelivery, event: Event) -> bool:
    """Whether this delivery waits for a reply: `message.inbound` to a subscription marked `respond`."""
    if event.type != "message.inbound" or not delivery.target.startswith("wh_"):
        return False
    sub = session.get(WebhookSubscription, delivery.target)
    return sub is not None and sub.respond


def timeout(gw: Gateway) -> aiohttp.ClientTimeout:
    """The whole exchange with a bot hook, answer body included."""
    return aiohttp.ClientTimeout(total=max(MIN_TIMEOUT, gw.settings.bot_hook_timeout))


async def read_answer(response: aiohttp.ClientResponse) -> bytes:
    """The answer's body, at most MAX_ANSWER + 1 bytes (one more tells that it was too large)."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_ANSWER:
        chunk = await response.content.read(MAX_ANSWER + 1 - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def reply_in(answer: bytes) -> tuple[dict[str, Any] | None, str | None]:
    """(content, None) for a valid reply; (None, why) for a malformed one; (None, None) for no reply."""
    if not answer.strip():
        return None, None
    if len(answer) > MAX_ANSWER:
        return None, f"answer larger than {MAX_ANSWER // 1024} KiB"
    if json_depth(answer) > MAX_JSON_DEPTH:  # as for API requests (and json.loads would recurse deeply)
        return None, f"answer nests deeper than {MAX_JSON_DEPTH} levels"
    try:
        body = json.loads(answer)
    except (ValueError, UnicodeDecodeError):
        return None, "answer is not JSON"
    if not isinstance(body, dict) or body.get("reply") is None:
        return None, None  # an ordinary acknowledgement: no reply asked for
    reply = body["reply"]
    if not isinstance(reply, dict):
        return None, "reply: must be an object with the fields of a message's content"
    try:
        Content.model_validate(reply)
    except ValidationError as exc:
        problems = [
            f"reply{''.join(f'.{part}' if isinstance(part, str) else f'[{part}]' for part in e['loc'])}: "
            f"{e['msg']}"
            for e in exc.errors()
        ]
        return None, "; ".join(problems)
    return reply, None


def take_reply(session: Session, gw: Gateway, delivery: EventDelivery, answer: bytes) -> Accepted | None:
    """Send the reply a bot hook answered with, inside the transaction recording its delivery."""
    content, problem = reply_in(answer)
    if content is None and problem is None or delivery.reply_message_id is not None:
        return None
    event = session.get(Event, delivery.event_id)
    inbound_id = str((event.data or {}).get("id") or "") if event else ""
    inbound = session.get(InboundMessage, inbound_id) if inbound_id else None
    message = None
    if problem is None and (event is None or inbound is None):
        problem = "the inbound message is gone (erased)"
    if problem is None and event is not None:
        age = (gw.clock() - event.created_at).total_seconds()
        limit = gw.settings.bot_hook_max_age
        if age > limit:
            problem = (
                f"answered {age:.1f}s after the inbound, later than GATEWAY_BOT_HOOK_MAX_AGE ({limit:g}s)"
            )
    if problem is None and inbound is not None:
        request = SendRequest.model_validate(
            {
                "to": {"contact_id": inbound.contact_id},
                "content": content,
                "channels": [inbound.channel],
                "in_reply_to": inbound.id,
                "category": "transactional",
                "metadata": {"bot_hook": delivery.target},
            }
        )
        try:
            with session.begin_nested():  # a refused reply must not undo the delivery's record
                message = accept_in(session, gw, request)
        except ProblemError as exc:
            problem = f"reply refused: {exc.detail}"
    if problem is not None:
        delivery.reply_error = problem[:500]
        log.warning(
            "bot hook %s answered event %s with a reply that was not sent: %s",
            delivery.target,
            delivery.event_id,
            problem,
        )
        return None
    assert message is not None
    delivery.reply_message_id = message.id
    delivery.reply_error = None
    return message


def reply_accepted(gw: Gateway, message: Accepted | None) -> None:
    """After the delivery's transaction committed: count the reply and wake the dispatcher for it."""
    if message is not None:
        accepted(gw, message)
