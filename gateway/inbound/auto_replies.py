"""Auto-replies: answer a customer's message on keywords or outside business hours, once per period.

The matching functions are pure. `answer_inbound` (an inbound hook) picks the first matching rule, takes its
once-per slot for the contact in a transaction, and sends the reply through the normal send path.
"""

from __future__ import annotations

import logging
import unicodedata
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import delete, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from gateway import store
from gateway.channels import adapter_class
from gateway.core import Gateway
from gateway.inbound.pipeline import Received, keyword_of
from gateway.models import AutoReplyRule, AutoReplySent, ChannelState, InboundMessage
from gateway.schemas import SendRequest
from gateway.services.messages import accept_message

log = logging.getLogger(__name__)
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# Scripts written without spaces between words (and Korean, whose particles attach to words):
# a keyword in them matches anywhere, since there is no word boundary to look for.
_UNSPACED = tuple("CJK IDEOGRAPHIC HIRAGANA KATAKANA THAI LAO KHMER MYANMAR TIBETAN HANGUL".split())
_KEEP = {"\u3099", "\u309a"}  # が is not か: these marks change the word, they are not accents

# -- pure matching ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class BusinessHours:
    timezone: str
    days: frozenset[int]  # 0 = Monday
    start: time
    end: time

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BusinessHours:
        """Read the stored `{"timezone", "days", "start", "end"}` shape."""
        days = frozenset(WEEKDAYS.index(d) for d in data.get("days", WEEKDAYS[:5]))
        return cls(data["timezone"], days, time.fromisoformat(data["start"]), time.fromisoformat(data["end"]))


@dataclass(frozen=True)
class ReplyRule:
    id: str
    name: str
    reply: str
    once_per: float
    keywords: tuple[str, ...] = ()
    hours: BusinessHours | None = None
    channels: tuple[str, ...] | None = None


def normalise(text: str | None) -> str:
    """Case-folded, accents stripped, punctuation and symbols turned into single spaces."""
    folded = unicodedata.normalize("NFKD", (text or "").casefold())
    bare = "".join(c for c in folded if not unicodedata.combining(c) or c in _KEEP)
    bare = unicodedata.normalize("NFC", bare)
    words = "".join(c if unicodedata.category(c)[0] in "LNM" else " " for c in bare)
    return " ".join(words.split())


def _unspaced(char: str) -> bool:
    return unicodedata.name(char, "").startswith(_UNSPACED)


def _boundary(text: str, at: int) -> bool:
    """Whether a word may start or end at `at`: an edge, a space, or a script without word spacing."""
    if at in (0, len(text)):
        return True
    before, after = text[at - 1], text[at]
    return " " in (before, after) or _unspaced(before) or _unspaced(after)


def contains_word(text: str, word: str) -> bool:
    """Whether normalised `word` (one word or a phrase) occurs in normalised `text` as whole words."""
    at = text.find(word) if word else -1
    while at != -1:
        if _boundary(text, at) and _boundary(text, at + len(word)):
            return True
        at = text.find(word, at + 1)
    return False


def keyword_matches(text: str | None, keywords: Iterable[str]) -> bool:
    """Whether the text equals or contains, as whole words, any keyword (both normalised)."""
    words = normalise(text)
    return any(contains_word(words, normalise(keyword)) for keyword in keywords)


def within_business_hours(hours: BusinessHours, at: datetime) -> bool:
    """Whether `at` is within opening hours; `start > end` runs past midnight, `start == end` is all day."""
    local = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(ZoneInfo(hours.timezone))
    day, clock = local.weekday(), local.time().replace(tzinfo=None)
    if hours.start == hours.end:
        return day in hours.days
    if hours.start < hours.end:
        return day in hours.days and hours.start <= clock < hours.end
    # Opened on a listed day, still open after midnight (into the next day).
    return (day in hours.days and clock >= hours.start) or ((day - 1) % 7 in hours.days and clock < hours.end)


def rule_matches(rule: ReplyRule, channel: str, text: str | None, at: datetime) -> bool:
    """Every condition the rule has must hold: channel, keywords, and being outside business hours."""
    if rule.channels is not None and channel not in rule.channels:
        return False
    if rule.keywords and not keyword_matches(text, rule.keywords):
        return False
    if rule.hours is not None and within_business_hours(rule.hours, at):
        return False
    return bool(rule.keywords) or rule.hours is not None


def first_match(rules: Sequence[ReplyRule], channel: str, text: str | None, at: datetime) -> ReplyRule | None:
    """The first rule (in the order given) that matches, or None."""
    return next((r for r in rules if rule_matches(r, channel, text, at)), None)


def is_opt_keyword(channel: str, text: str | None) -> bool:
    """Whether the text is one of the channel's opt-out or opt-in keywords (those never get an auto-reply)."""
    cls = adapter_class(channel)
    if cls is None:
        return False
    words = cls.opt_out_keywords | cls.opt_in_keywords
    return keyword_of(text) in words or normalise(text).upper() in words


# -- database work ----------------------------------------------------------------------------------


def to_reply_rule(row: AutoReplyRule) -> ReplyRule:
    """A stored rule as the value the matching functions take."""
    return ReplyRule(
        id=row.id,
        name=row.name,
        reply=row.reply,
        once_per=row.once_per,
        keywords=tuple(row.keywords or ()),
        hours=BusinessHours.from_dict(row.business_hours) if row.business_hours else None,
        channels=tuple(row.channels) if row.channels is not None else None,
    )


def answer_inbound(gw: Gateway, received: Received) -> None:
    """Send the first matching rule's reply to a newly stored inbound message, at most once per period."""
    if is_opt_keyword(received.channel, received.text):
        return
    with store.transaction(gw.engine) as session:
        inbound = session.get(InboundMessage, received.id)
        state = session.get(ChannelState, (received.contact_id, received.channel))
        if inbound is None or (state is not None and state.opted_out):
            return
        query = select(AutoReplyRule).where(col(AutoReplyRule.enabled).is_(True))
        rows = session.exec(query.order_by(col(AutoReplyRule.order), col(AutoReplyRule.name)))
        rules = [to_reply_rule(r) for r in rows]
        rule = first_match(rules, received.channel, received.text, inbound.received_at)
    if rule is None:
        return
    taken, previous = _claim(gw, rule, received.contact_id)
    if not taken:
        return
    body = {
        "to": {"contact_id": received.contact_id},
        "content": {"text": rule.reply},
        "channels": [received.channel],
        "in_reply_to": received.id,
        "category": "transactional",
        "metadata": {"auto_reply": rule.name},
    }
    try:
        accept_message(gw, None, SendRequest.model_validate(body), None)
    except Exception:  # the inbound is stored and acknowledged whatever happens here
        log.exception("auto-reply %s to %s could not be sent", rule.name, received.id)
        _release(gw, rule, received.contact_id, previous)


def _claim(gw: Gateway, rule: ReplyRule, contact_id: str) -> tuple[bool, datetime | None]:
    """Take the rule's slot for this contact unless it answered them within `once_per`; (taken, previous)."""
    now = gw.clock()  # concurrent inbounds: the primary key or the conditional UPDATE lets only one win
    try:
        with store.transaction(gw.engine) as session:
            row = session.get(AutoReplySent, (rule.id, contact_id))
            if row is None:
                session.add(AutoReplySent(rule_id=rule.id, contact_id=contact_id, sent_at=now))
                return True, None
            previous = row.sent_at
            result = session.exec(
                update(AutoReplySent)
                .where(col(AutoReplySent.rule_id) == rule.id, col(AutoReplySent.contact_id) == contact_id)
                .where(col(AutoReplySent.sent_at) <= now - timedelta(seconds=rule.once_per))
                .values(sent_at=now)
            )
            return result.rowcount == 1, previous
    except IntegrityError:  # a concurrent first answer to the same contact won the insert
        return False, None


def _release(gw: Gateway, rule: ReplyRule, contact_id: str, previous: datetime | None) -> None:
    """Give the slot back after a reply that could not be sent."""
    where = (col(AutoReplySent.rule_id) == rule.id, col(AutoReplySent.contact_id) == contact_id)
    with store.transaction(gw.engine) as session:
        if previous is None:
            session.exec(delete(AutoReplySent).where(*where))
        else:
            session.exec(update(AutoReplySent).where(*where).values(sent_at=previous))
