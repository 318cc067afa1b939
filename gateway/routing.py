"""`plan_route`: which channels to try for one message, in which order, and why others were skipped.

Pure: everything it needs comes in as frozen values (contact facts, learned channel states, rules, the
request, what each channel can do, defaults, now); nothing is read from a database or a clock.
Precedence: the request's explicit `channels`, else the first matching enabled rule by ascending `order`,
else the default order (preferred channel, the channel they last wrote from while its window is open,
channels with a known identity, phone channels, email channels).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo

NEVER_DEFERRED = frozenset({"otp", "alert"})
# Without a rule saying otherwise, these categories may fall back past an opt-out; marketing may not.
DEFAULT_FALLBACK_CATEGORIES = ("transactional", "otp", "alert")
# On channels without a customer-care window, writing from it makes it "the channel they use" this long.
RECENT_INBOUND = timedelta(hours=24)
RECEIPT_ORDER = ("accepted", "sent", "delivered", "read")
# Why a reply's first step is the channel the customer wrote from (`in_reply_to`).
REPLY_BECAUSE = "reply on the customer's channel"


@dataclass(frozen=True)
class ChannelInfo:
    """What routing needs to know about a channel (from its adapter class and the settings)."""

    name: str
    enabled: bool
    disabled_reason: str | None
    address_kind: str  # phone | email | identity
    window_seconds: float | None
    delivery_receipts: bool
    read_receipts: bool
    window_message_limit: int | None = None
    human_agent_window_seconds: float | None = None

    def window_open(self, state: StateFacts, now: datetime, human_agent: bool = False) -> bool:
        """Whether free-form messages may go out now: inside the window and under its message limit.

        A reply written by a person may use the longer human-agent window where the channel has one
        (Messenger's HUMAN_AGENT tag: 7 days after the person's last message)."""
        until = state.window_open_until
        if human_agent and self.human_agent_window_seconds and state.last_inbound_at:
            until = state.last_inbound_at + timedelta(seconds=self.human_agent_window_seconds)
        if until is None or until <= now:
            return False
        return self.window_message_limit is None or state.sent_in_window < self.window_message_limit

    def can_report(self, until: str) -> bool:
        if until in ("accepted", "sent"):
            return True
        return self.delivery_receipts if until == "delivered" else self.read_receipts

    def default_until(self) -> str:
        return "delivered" if self.delivery_receipts else "accepted"


@dataclass(frozen=True)
class ContactFacts:
    phone: str | None = None
    email: str | None = None
    country: str | None = None
    timezone: str | None = None
    tags: tuple[str, ...] = ()
    preferred_channel: str | None = None
    identities: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StateFacts:
    reachability: str = "unknown"
    reason: str | None = None
    reprobe_at: datetime | None = None
    window_open_until: datetime | None = None
    last_inbound_at: datetime | None = None
    opted_out: bool = False
    sent_in_window: int = 0


@dataclass(frozen=True)
class StepSpec:
    channel: str
    after: float | None = None
    until: str | None = None


@dataclass(frozen=True)
class RetrySpec:
    attempts: int
    backoff: float
    multiplier: float
    max_backoff: float


@dataclass(frozen=True)
class QuietHours:
    start: time
    end: time


@dataclass(frozen=True)
class RuleWhen:
    country: tuple[str, ...] = ()
    category: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    has_identity: tuple[str, ...] = ()


@dataclass(frozen=True)
class Rule:
    id: str
    name: str
    order: int
    route: tuple[StepSpec, ...]
    enabled: bool = True
    when: RuleWhen = RuleWhen()
    retry: RetrySpec | None = None
    quiet_hours: QuietHours | None = None
    allow_fallback_for: tuple[str, ...] | None = None


@dataclass(frozen=True)
class RouteRequest:
    category: str = "transactional"
    channels: tuple[str, ...] | None = None
    fallback_after: float | None = None
    fallback_until: str | None = None
    templates: frozenset[str] = frozenset()
    reply_channel: str | None = None
    # The address the answered message came from: the reply step goes there.
    reply_address: str | None = None
    send_at: datetime | None = None
    human_agent: bool = False


@dataclass(frozen=True)
class Defaults:
    after: float
    retry: RetrySpec
    timezone: str


@dataclass(frozen=True)
class PlanStep:
    channel: str
    address: str
    after: float
    until: str
    because: str


@dataclass(frozen=True)
class Skip:
    channel: str
    reason: str


@dataclass(frozen=True)
class Plan:
    steps: tuple[PlanStep, ...]
    skipped: tuple[Skip, ...]
    rule: Rule | None
    retry: RetrySpec
    not_before: datetime | None = None  # quiet hours push the first attempt to this time
    fallback_past_opt_out: bool = True

    @property
    def failure_reason(self) -> str | None:
        """Why nothing can be sent, when the plan is empty."""
        if self.steps:
            return None
        if any(s.reason.startswith("opted out") for s in self.skipped):
            return "opted-out"
        return "no-channel"


def plan_route(
    contact: ContactFacts,
    states: Mapping[str, StateFacts],
    rules: Sequence[Rule],
    request: RouteRequest,
    channels: Mapping[str, ChannelInfo],
    defaults: Defaults,
    now: datetime,
) -> Plan:
    """Compute the ordered steps for one message, with a reason for every step and every skip."""
    rule = None if request.channels is not None else matching_rule(contact, request, rules)
    candidates = _candidates(contact, states, rule, request, channels, now)
    steps: list[PlanStep] = []
    skipped: list[Skip] = []
    for spec, because in candidates:
        info = channels.get(spec.channel)
        if info is None:
            skipped.append(Skip(spec.channel, "unknown channel"))
            continue
        state = states.get(spec.channel, StateFacts())
        reply = because == REPLY_BECAUSE
        address = request.reply_address if reply else None
        reason = _skip_reason(info, state, contact, request, now, address)
        if reason:
            # A reply says why it cannot go where the customer wrote (an opt-out keeps its own words).
            skipped.append(
                Skip(spec.channel, f"{because}: {reason}" if reply and reason != "opted out" else reason)
            )
            continue
        if (
            reply
            and info.window_seconds is not None
            and not info.window_open(state, now, request.human_agent)
        ):
            because = f"{because}: window closed, {info.name} template"
        steps.append(_step(spec, info, contact, request, defaults, because, address))
    allowed: tuple[str, ...] = DEFAULT_FALLBACK_CATEGORIES
    if rule is not None and rule.allow_fallback_for is not None:
        allowed = rule.allow_fallback_for
        if request.category not in allowed and len(steps) > 1:
            reason = f"fallback not allowed for {request.category}"
            skipped.extend(Skip(s.channel, reason) for s in steps[1:])
            steps = steps[:1]
    past_opt_out = request.category in allowed
    opted_out_of = [s.channel for s in skipped if s.reason == "opted out"]
    if opted_out_of and not past_opt_out and steps:
        reason = f"opted out of {opted_out_of[0]}: {request.category} does not fall back past an opt-out"
        skipped.extend(Skip(s.channel, reason) for s in steps)
        steps = []
    not_before = None
    if rule is not None and rule.quiet_hours and request.category not in NEVER_DEFERRED:
        start = max(now, request.send_at) if request.send_at else now
        tz = contact.timezone or defaults.timezone
        not_before = quiet_hours_end(rule.quiet_hours, tz, start)
    retry = rule.retry if rule is not None and rule.retry is not None else defaults.retry
    return Plan(tuple(steps), tuple(skipped), rule, retry, not_before, past_opt_out)


def matching_rule(contact: ContactFacts, request: RouteRequest, rules: Sequence[Rule]) -> Rule | None:
    """The first enabled rule, by ascending order, whose every condition holds."""
    for rule in sorted(rules, key=lambda r: (r.order, r.name)):
        if rule.enabled and _matches(rule.when, contact, request):
            return rule
    return None


def _matches(when: RuleWhen, contact: ContactFacts, request: RouteRequest) -> bool:
    if when.country and contact.country not in when.country:
        return False
    if when.category and request.category not in when.category:
        return False
    if when.tags and not set(when.tags) & set(contact.tags):
        return False
    return not when.has_identity or any(c in contact.identities for c in when.has_identity)


def _candidates(
    contact: ContactFacts,
    states: Mapping[str, StateFacts],
    rule: Rule | None,
    request: RouteRequest,
    channels: Mapping[str, ChannelInfo],
    now: datetime,
) -> list[tuple[StepSpec, str]]:
    found: list[tuple[StepSpec, str]] = []
    if request.reply_channel:
        found.append((StepSpec(request.reply_channel), REPLY_BECAUSE))
    if request.channels is not None:
        found += [(StepSpec(c), "requested channels") for c in request.channels]
    elif rule is not None:
        found += [(spec, f"rule {rule.name}") for spec in rule.route]
    else:
        found += _default_order(contact, states, channels, now)
    seen: set[str] = set()
    unique = []
    for spec, because in found:
        if spec.channel not in seen:
            seen.add(spec.channel)
            unique.append((spec, because))
    return unique


def _default_order(
    contact: ContactFacts,
    states: Mapping[str, StateFacts],
    channels: Mapping[str, ChannelInfo],
    now: datetime,
) -> list[tuple[StepSpec, str]]:
    order: list[tuple[StepSpec, str]] = []
    if contact.preferred_channel:
        order.append((StepSpec(contact.preferred_channel), "preferred channel"))
    open_windows = [
        (s.last_inbound_at, name)
        for name, s in states.items()
        if s.last_inbound_at and _still_open(s, channels.get(name), now)
    ]
    if open_windows:
        order.append((StepSpec(max(open_windows)[1]), "last wrote from this channel"))
    for name in channels:
        if name in contact.identities:
            order.append((StepSpec(name), "known identity"))
    for kind, because in (("phone", "phone number"), ("email", "email address")):
        order += [(StepSpec(n), because) for n, i in channels.items() if i.address_kind == kind]
    return order


def _still_open(state: StateFacts, info: ChannelInfo | None, now: datetime) -> bool:
    """A windowed channel while its window is open; another for RECENT_INBOUND after they wrote."""
    if info is not None and info.window_seconds is None:
        return state.last_inbound_at is not None and now - state.last_inbound_at < RECENT_INBOUND
    return state.window_open_until is not None and state.window_open_until > now


def _address(info: ChannelInfo, contact: ContactFacts) -> str | None:
    if info.name in contact.identities:
        return contact.identities[info.name]
    if info.address_kind == "phone":
        return contact.phone
    if info.address_kind == "email":
        return contact.email
    return None


def _skip_reason(
    info: ChannelInfo,
    state: StateFacts,
    contact: ContactFacts,
    request: RouteRequest,
    now: datetime,
    address: str | None = None,
) -> str | None:
    if not info.enabled:
        return f"channel disabled: {info.disabled_reason}"
    if (address or _address(info, contact)) is None:
        what = {"phone": "phone number", "email": "email address"}.get(info.address_kind)
        return f"no {what or info.name + ' identity'}"
    if state.opted_out:
        return "opted out"
    if state.reachability == "blocked":
        return "blocked" + (f": {state.reason}" if state.reason else "")
    if state.reachability == "unreachable" and (state.reprobe_at is None or state.reprobe_at > now):
        return "unreachable" + (f": {state.reason}" if state.reason else "")
    if (
        info.window_seconds is not None
        and not info.window_open(state, now, request.human_agent)
        and info.name not in request.templates
    ):
        return f"window closed and no {info.name} template"
    return None


def _step(
    spec: StepSpec,
    info: ChannelInfo,
    contact: ContactFacts,
    request: RouteRequest,
    defaults: Defaults,
    because: str,
    address: str | None = None,
) -> PlanStep:
    after = request.fallback_after if request.fallback_after is not None else spec.after
    until = request.fallback_until or spec.until or info.default_until()
    if not info.can_report(until):
        until = "accepted"  # a receipt the channel cannot give: complete on acceptance
    address = address or _address(info, contact)
    assert address is not None  # _skip_reason ruled out a missing address
    return PlanStep(spec.channel, address, defaults.after if after is None else after, until, because)


def quiet_hours_end(quiet: QuietHours, tz_name: str, at: datetime) -> datetime | None:
    """When the quiet period containing `at` ends (UTC); None if `at` is not in quiet hours."""
    if quiet.start == quiet.end:
        return None
    tz = ZoneInfo(tz_name)
    local = at.astimezone(tz)
    clock = local.time().replace(tzinfo=None)
    if quiet.start < quiet.end:
        inside = quiet.start <= clock < quiet.end
    else:
        inside = clock >= quiet.start or clock < quiet.end
    if not inside:
        return None
    end = local.replace(hour=quiet.end.hour, minute=quiet.end.minute, second=0, microsecond=0)
    if end <= local:
        end = (local + timedelta(days=1)).replace(
            hour=quiet.end.hour, minute=quiet.end.minute, second=0, microsecond=0
        )
    # Re-attach the zone so a DST change between now and `end` gives the right UTC instant.
    end = end.replace(tzinfo=None).replace(tzinfo=tz)
    return end.astimezone(ZoneInfo("UTC"))


def receipt_reached(status: str, until: str) -> bool:
    """Whether an attempt in `status` has reached the step's `until`."""
    if status not in RECEIPT_ORDER:
        return False
    return RECEIPT_ORDER.index(status) >= RECEIPT_ORDER.index(until)
