"""`plan_route`: precedence, rule matching, the default order, skip reasons, overrides and quiet hours."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta

import pytest

from gateway.routing import (
    ChannelInfo,
    ContactFacts,
    Defaults,
    Plan,
    QuietHours,
    RetrySpec,
    RouteRequest,
    Rule,
    RuleWhen,
    StateFacts,
    StepSpec,
    plan_route,
    quiet_hours_end,
    receipt_reached,
)

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)

WHATSAPP = ChannelInfo("whatsapp", True, None, "phone", 86400, delivery_receipts=True, read_receipts=True)
MESSENGER = ChannelInfo(
    "messenger", True, None, "identity", 86400, delivery_receipts=True, read_receipts=True
)
LINE = ChannelInfo("line", True, None, "identity", None, delivery_receipts=False, read_receipts=False)
SMS = ChannelInfo("sms", True, None, "phone", None, delivery_receipts=True, read_receipts=False)
EMAIL = ChannelInfo("email", True, None, "email", None, delivery_receipts=False, read_receipts=False)
# In the registry's order: social channels, then SMS, then email.
CHANNELS = {"whatsapp": WHATSAPP, "line": LINE, "sms": SMS, "email": EMAIL}

DEFAULT_RETRY = RetrySpec(attempts=3, backoff=30.0, multiplier=2.0, max_backoff=1800.0)
DEFAULTS = Defaults(after=900.0, retry=DEFAULT_RETRY, timezone="UTC")

HANA = ContactFacts(
    phone="+819012345678",
    email="hana@example.com",
    country="JP",
    timezone="Asia/Tokyo",
    tags=("vip",),
    identities={"line": "U4af"},
)
ADDRESS = {"whatsapp": "+819012345678", "line": "U4af", "sms": "+819012345678", "email": "hana@example.com"}

OPEN_WINDOW = StateFacts(
    reachability="reachable",
    window_open_until=NOW + timedelta(hours=3),
    last_inbound_at=NOW - timedelta(hours=21),
)


def make_plan(
    contact: ContactFacts = HANA,
    states: Mapping[str, StateFacts] | None = None,
    rules: Sequence[Rule] = (),
    request: RouteRequest | None = None,
    channels: Mapping[str, ChannelInfo] = CHANNELS,
    defaults: Defaults = DEFAULTS,
    now: datetime = NOW,
) -> Plan:
    return plan_route(contact, states or {}, rules, request or RouteRequest(), channels, defaults, now)


def rule(name: str, order: int, *channels: str, **fields: object) -> Rule:
    return Rule(
        id=f"rule_{name}", name=name, order=order, route=tuple(StepSpec(c) for c in channels), **fields
    )


def planned(plan: Plan) -> list[str]:
    return [step.channel for step in plan.steps]


def skips(plan: Plan) -> dict[str, str]:
    return {skip.channel: skip.reason for skip in plan.skipped}


# -- precedence -----------------------------------------------------------------------------------


def test_explicit_channels_replace_matching_rules() -> None:
    plan = make_plan(
        rules=[rule("line-first", 10, "line", "sms")],
        request=RouteRequest(channels=("email", "sms")),
    )
    assert planned(plan) == ["email", "sms"]
    assert plan.rule is None
    assert {step.because for step in plan.steps} == {"requested channels"}


def test_explicit_channels_never_fall_back_outside_them() -> None:
    plan = make_plan(request=RouteRequest(channels=("sms",)))
    assert planned(plan) == ["sms"]
    assert plan.skipped == ()


def test_first_matching_rule_by_ascending_order_wins() -> None:
    late = rule("email-only", 20, "email")
    early = rule("sms-first", 10, "sms", "email")
    plan = make_plan(rules=[late, early])
    assert plan.rule == early
    assert planned(plan) == ["sms", "email"]
    assert {step.because for step in plan.steps} == {"rule sms-first"}


def test_a_rule_that_does_not_match_is_passed_over() -> None:
    us_only = rule("us", 1, "email", when=RuleWhen(country=("US",)))
    japan = rule("japan", 2, "line", when=RuleWhen(country=("JP",)))
    assert make_plan(rules=[us_only, japan]).rule == japan


def test_disabled_rules_are_ignored() -> None:
    disabled = rule("off", 1, "email", enabled=False)
    enabled = rule("on", 2, "sms")
    plan = make_plan(rules=[disabled, enabled])
    assert plan.rule == enabled
    assert planned(plan) == ["sms"]


def test_only_disabled_rules_means_the_default_order() -> None:
    plan = make_plan(rules=[rule("off", 1, "email", enabled=False)])
    assert plan.rule is None
    assert planned(plan) == ["line", "sms", "email"]


@pytest.mark.parametrize(
    ("when", "contact", "category", "matches"),
    [
        (RuleWhen(), HANA, "transactional", True),
        (RuleWhen(country=("JP", "TW")), HANA, "transactional", True),
        (RuleWhen(country=("US",)), HANA, "transactional", False),
        (RuleWhen(country=("JP",)), replace(HANA, country=None), "transactional", False),
        (RuleWhen(category=("transactional", "otp")), HANA, "otp", True),
        (RuleWhen(category=("transactional", "otp")), HANA, "marketing", False),
        (RuleWhen(tags=("vip",)), HANA, "transactional", True),
        (RuleWhen(tags=("vip", "gold")), replace(HANA, tags=("gold", "b2b")), "transactional", True),
        (RuleWhen(tags=("vip",)), replace(HANA, tags=()), "transactional", False),
        (RuleWhen(has_identity=("line",)), HANA, "transactional", True),
        (RuleWhen(has_identity=("telegram", "line")), HANA, "transactional", True),
        (RuleWhen(has_identity=("telegram",)), HANA, "transactional", False),
        (
            RuleWhen(country=("JP",), category=("otp",), tags=("vip",), has_identity=("line",)),
            HANA,
            "otp",
            True,
        ),
        (
            RuleWhen(country=("JP",), category=("otp",), tags=("vip",), has_identity=("line",)),
            HANA,
            "transactional",
            False,
        ),
        (
            RuleWhen(country=("JP",), category=("otp",), tags=("vip",), has_identity=("line",)),
            replace(HANA, identities={}),
            "otp",
            False,
        ),
    ],
)
def test_rule_matching(when: RuleWhen, contact: ContactFacts, category: str, matches: bool) -> None:
    candidate = rule("candidate", 10, "email", when=when)
    plan = make_plan(contact=contact, rules=[candidate], request=RouteRequest(category=category))
    assert (plan.rule == candidate) is matches
    assert (planned(plan) == ["email"]) is matches


# -- the default order ----------------------------------------------------------------------------


def test_default_order_full() -> None:
    contact = replace(HANA, preferred_channel="email")
    plan = make_plan(contact=contact, states={"whatsapp": OPEN_WINDOW})
    assert [(s.channel, s.address, s.because) for s in plan.steps] == [
        ("email", ADDRESS["email"], "preferred channel"),
        ("whatsapp", ADDRESS["whatsapp"], "last wrote from this channel"),
        ("line", ADDRESS["line"], "known identity"),
        ("sms", ADDRESS["sms"], "phone number"),
    ]
    assert plan.skipped == ()
    assert plan.rule is None
    assert plan.retry == DEFAULT_RETRY


def test_default_order_without_identity_or_history() -> None:
    contact = ContactFacts(phone="+14155550100", email="sam@example.com")
    plan = make_plan(contact=contact)
    assert [(s.channel, s.because) for s in plan.steps] == [
        ("sms", "phone number"),
        ("email", "email address"),
    ]
    assert skips(plan) == {"whatsapp": "window closed and no whatsapp template"}


def test_default_order_puts_whatsapp_by_phone_before_sms_when_a_template_exists() -> None:
    contact = ContactFacts(phone="+14155550100", email="sam@example.com")
    plan = make_plan(contact=contact, request=RouteRequest(templates=frozenset({"whatsapp"})))
    assert planned(plan) == ["whatsapp", "sms", "email"]
    assert plan.steps[0].because == "phone number"


def test_default_order_takes_the_most_recent_open_window() -> None:
    channels = {"whatsapp": WHATSAPP, "messenger": MESSENGER, "line": LINE, "sms": SMS, "email": EMAIL}
    contact = replace(HANA, identities={"line": "U4af", "messenger": "PSID"})
    states = {
        "line": replace(OPEN_WINDOW, last_inbound_at=NOW - timedelta(hours=5)),
        "messenger": replace(OPEN_WINDOW, last_inbound_at=NOW - timedelta(hours=2)),
        # the most recent inbound of all, but its window has closed
        "whatsapp": StateFacts(
            window_open_until=NOW - timedelta(seconds=1), last_inbound_at=NOW - timedelta(hours=1)
        ),
    }
    plan = make_plan(contact=contact, states=states, channels=channels)
    assert plan.steps[0].channel == "messenger"
    assert plan.steps[0].because == "last wrote from this channel"
    assert planned(plan) == ["messenger", "line", "sms", "email"]


def test_a_channel_without_a_window_counts_as_last_written_for_24_hours() -> None:
    recent = {"email": StateFacts(last_inbound_at=NOW - timedelta(hours=23))}
    plan = make_plan(states=recent)
    assert plan.steps[0].channel == "email"
    assert plan.steps[0].because == "last wrote from this channel"
    stale = {"email": StateFacts(last_inbound_at=NOW - timedelta(hours=25))}
    assert make_plan(states=stale).steps[0].channel != "email"


def test_default_order_lists_each_channel_once() -> None:
    contact = replace(HANA, preferred_channel="line")
    plan = make_plan(
        contact=contact, states={"line": OPEN_WINDOW}, request=RouteRequest(templates=frozenset())
    )
    assert planned(plan) == ["line", "sms", "email"]
    assert plan.steps[0].because == "preferred channel"
    channels_seen = planned(plan) + [s.channel for s in plan.skipped]
    assert len(channels_seen) == len(set(channels_seen))


def test_reply_channel_comes_first_then_the_rule() -> None:
    plan = make_plan(
        states={"whatsapp": OPEN_WINDOW},
        rules=[rule("sms-first", 10, "sms", "whatsapp", "email")],
        request=RouteRequest(reply_channel="whatsapp"),
    )
    assert planned(plan) == ["whatsapp", "sms", "email"]
    assert plan.steps[0].because == "reply on the customer's channel"


# -- skip reasons ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channel", "contact", "state", "reason"),
    [
        ("sms", replace(HANA, phone=None), StateFacts(), "no phone number"),
        ("email", replace(HANA, email=None), StateFacts(), "no email address"),
        ("line", replace(HANA, identities={}), StateFacts(), "no line identity"),
        ("sms", HANA, StateFacts(opted_out=True), "opted out"),
        ("email", HANA, StateFacts(reachability="reachable", opted_out=True), "opted out"),
        ("line", HANA, StateFacts(reachability="blocked"), "blocked"),
        ("line", HANA, StateFacts(reachability="blocked", reason="unfollowed"), "blocked: unfollowed"),
        ("sms", HANA, StateFacts(reachability="unreachable"), "unreachable"),
        (
            "sms",
            HANA,
            StateFacts(reachability="unreachable", reason="21614", reprobe_at=NOW + timedelta(minutes=1)),
            "unreachable: 21614",
        ),
        ("whatsapp", HANA, StateFacts(), "window closed and no whatsapp template"),
        (
            "whatsapp",
            HANA,
            StateFacts(window_open_until=NOW - timedelta(seconds=1), last_inbound_at=NOW - timedelta(days=1)),
            "window closed and no whatsapp template",
        ),
    ],
)
def test_skip_reasons(channel: str, contact: ContactFacts, state: StateFacts, reason: str) -> None:
    plan = make_plan(
        contact=contact, states={channel: state}, request=RouteRequest(channels=(channel, "email"))
    )
    if channel == "email":
        assert plan.steps == ()
    else:
        assert planned(plan) == ["email"]
    assert plan.skipped[0].channel == channel
    assert plan.skipped[0].reason == reason


def test_disabled_channel_is_skipped_with_its_reason() -> None:
    channels = dict(
        CHANNELS, sms=replace(SMS, enabled=False, disabled_reason="GATEWAY_TWILIO_FROM is not set")
    )
    plan = make_plan(channels=channels, request=RouteRequest(channels=("sms", "email")))
    assert planned(plan) == ["email"]
    assert skips(plan) == {"sms": "channel disabled: GATEWAY_TWILIO_FROM is not set"}


def test_unknown_channel_is_skipped() -> None:
    plan = make_plan(request=RouteRequest(channels=("pigeon", "sms")))
    assert planned(plan) == ["sms"]
    assert skips(plan) == {"pigeon": "unknown channel"}


def test_skip_rules_apply_to_rules_and_the_default_order_too() -> None:
    states = {"sms": StateFacts(opted_out=True), "line": StateFacts(reachability="blocked")}
    by_rule = make_plan(states=states, rules=[rule("r", 1, "line", "sms", "email")])
    by_default = make_plan(states=states)
    assert planned(by_rule) == planned(by_default) == ["email"]
    assert skips(by_rule) == {"line": "blocked", "sms": "opted out"}
    assert skips(by_default) == {
        "line": "blocked",
        "whatsapp": "window closed and no whatsapp template",
        "sms": "opted out",
    }


@pytest.mark.parametrize(
    ("reprobe_at", "is_planned"),
    [
        (None, False),
        (NOW + timedelta(seconds=1), False),
        (NOW + timedelta(days=3), False),
        (NOW - timedelta(seconds=1), True),
        (NOW - timedelta(days=3), True),
    ],
)
def test_unreachable_until_reprobe_time(reprobe_at: datetime | None, is_planned: bool) -> None:
    state = StateFacts(reachability="unreachable", reason="no LINE account", reprobe_at=reprobe_at)
    plan = make_plan(states={"line": state}, request=RouteRequest(channels=("line",)))
    assert (planned(plan) == ["line"]) is is_planned
    assert ("line" in skips(plan)) is not is_planned


def test_unreachable_channel_is_planned_again_once_its_reprobe_time_passes() -> None:
    reprobe = NOW + timedelta(hours=6)
    states = {"line": StateFacts(reachability="unreachable", reprobe_at=reprobe)}
    before = make_plan(states=states, now=reprobe - timedelta(minutes=1))
    after = make_plan(states=states, now=reprobe + timedelta(minutes=1))
    assert "line" not in planned(before)
    assert skips(before)["line"] == "unreachable"
    assert planned(after)[0] == "line"


@pytest.mark.parametrize(
    ("window_open_until", "templates", "is_planned"),
    [
        (None, frozenset(), False),
        (None, frozenset({"whatsapp"}), True),
        (None, frozenset({"wechat"}), False),
        (NOW - timedelta(minutes=1), frozenset(), False),
        (NOW - timedelta(minutes=1), frozenset({"whatsapp"}), True),
        (NOW + timedelta(minutes=1), frozenset(), True),
    ],
)
def test_windowed_channel_needs_an_open_window_or_a_template(
    window_open_until: datetime | None, templates: frozenset[str], is_planned: bool
) -> None:
    state = StateFacts(window_open_until=window_open_until)
    plan = make_plan(
        states={"whatsapp": state}, request=RouteRequest(channels=("whatsapp",), templates=templates)
    )
    assert (planned(plan) == ["whatsapp"]) is is_planned
    if not is_planned:
        assert skips(plan) == {"whatsapp": "window closed and no whatsapp template"}


def test_channel_without_window_needs_no_inbound() -> None:
    plan = make_plan(states={}, request=RouteRequest(channels=("line",)))
    assert planned(plan) == ["line"]


# -- allow_fallback_for ---------------------------------------------------------------------------


def test_fallback_not_allowed_truncates_to_the_first_step() -> None:
    otp_only = rule("r", 1, "line", "sms", "email", allow_fallback_for=("transactional", "otp"))
    plan = make_plan(rules=[otp_only], request=RouteRequest(category="marketing"))
    assert planned(plan) == ["line"]
    assert skips(plan) == {
        "sms": "fallback not allowed for marketing",
        "email": "fallback not allowed for marketing",
    }


@pytest.mark.parametrize("category", ["transactional", "otp"])
def test_fallback_allowed_keeps_every_step(category: str) -> None:
    otp_only = rule("r", 1, "line", "sms", "email", allow_fallback_for=("transactional", "otp"))
    plan = make_plan(rules=[otp_only], request=RouteRequest(category=category))
    assert planned(plan) == ["line", "sms", "email"]
    assert plan.skipped == ()


def test_fallback_not_allowed_keeps_the_first_step_that_can_go_out() -> None:
    no_fallback = rule("r", 1, "line", "sms", "email", allow_fallback_for=())
    plan = make_plan(states={"line": StateFacts(reachability="blocked")}, rules=[no_fallback])
    assert planned(plan) == ["sms"]
    assert skips(plan) == {"line": "blocked", "email": "fallback not allowed for transactional"}


# -- after / until --------------------------------------------------------------------------------


def test_step_defaults_come_from_defaults_and_channel_receipts() -> None:
    plan = make_plan(
        rules=[rule("r", 1, "whatsapp", "line", "sms", "email")],
        request=RouteRequest(templates=frozenset({"whatsapp"})),
    )
    assert [(s.channel, s.after, s.until) for s in plan.steps] == [
        ("whatsapp", 900.0, "delivered"),
        ("line", 900.0, "accepted"),
        ("sms", 900.0, "delivered"),
        ("email", 900.0, "accepted"),
    ]


def test_rule_steps_keep_their_own_after_and_until() -> None:
    r = Rule(
        id="rule_r",
        name="r",
        order=1,
        route=(StepSpec("line", after=120.0, until="accepted"), StepSpec("sms", after=600.0, until="sent")),
    )
    plan = make_plan(rules=[r])
    assert [(s.channel, s.after, s.until) for s in plan.steps] == [
        ("line", 120.0, "accepted"),
        ("sms", 600.0, "sent"),
    ]


def test_request_fallback_overrides_every_step() -> None:
    r = Rule(
        id="rule_r",
        name="r",
        order=1,
        route=(StepSpec("line", after=120.0, until="accepted"), StepSpec("sms", after=600.0, until="sent")),
    )
    plan = make_plan(rules=[r], request=RouteRequest(fallback_after=30.0, fallback_until="delivered"))
    # LINE cannot report delivery: that step completes on acceptance
    assert [(s.channel, s.after, s.until) for s in plan.steps] == [
        ("line", 30.0, "accepted"),
        ("sms", 30.0, "delivered"),
    ]


def test_request_fallback_after_zero_is_an_override() -> None:
    plan = make_plan(request=RouteRequest(channels=("sms",), fallback_after=0.0))
    assert plan.steps[0].after == 0.0


@pytest.mark.parametrize(
    ("channel", "until", "expected"),
    [
        ("whatsapp", "read", "read"),
        ("whatsapp", "delivered", "delivered"),
        ("sms", "read", "accepted"),
        ("sms", "delivered", "delivered"),
        ("sms", "sent", "sent"),
        ("email", "delivered", "accepted"),
        ("email", "sent", "sent"),
        ("line", "read", "accepted"),
    ],
)
def test_requested_receipt_a_channel_cannot_give_falls_back_to_accepted(
    channel: str, until: str, expected: str
) -> None:
    request = RouteRequest(channels=(channel,), fallback_until=until, templates=frozenset({"whatsapp"}))
    plan = make_plan(request=request)
    assert plan.steps[0].until == expected


def test_rule_retry_replaces_the_default_retry() -> None:
    retry = RetrySpec(attempts=5, backoff=10.0, multiplier=3.0, max_backoff=600.0)
    assert make_plan(rules=[rule("r", 1, "sms", retry=retry)]).retry == retry
    assert make_plan(rules=[rule("r", 1, "sms")]).retry == DEFAULT_RETRY


# -- quiet hours ----------------------------------------------------------------------------------

OVERNIGHT = QuietHours(time(21, 0), time(8, 0))
LUNCH = QuietHours(time(12, 0), time(14, 0))


def utc(day: int, hour: int, minute: int = 0, month: int = 6) -> datetime:
    return datetime(2026, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("quiet", "at", "end"),
    [
        (OVERNIGHT, utc(1, 22, 30), utc(2, 8)),
        (OVERNIGHT, utc(1, 21), utc(2, 8)),
        (OVERNIGHT, utc(1, 23, 59), utc(2, 8)),
        (OVERNIGHT, utc(2, 0), utc(2, 8)),
        (OVERNIGHT, utc(2, 3), utc(2, 8)),
        (OVERNIGHT, utc(2, 7, 59), utc(2, 8)),
        (OVERNIGHT, utc(2, 8), None),
        (OVERNIGHT, utc(2, 12), None),
        (OVERNIGHT, utc(1, 20, 59), None),
        (LUNCH, utc(1, 12), utc(1, 14)),
        (LUNCH, utc(1, 13, 30), utc(1, 14)),
        (LUNCH, utc(1, 14), None),
        (LUNCH, utc(1, 11, 59), None),
        (LUNCH, utc(1, 22), None),
        (QuietHours(time(9, 0), time(9, 0)), utc(1, 9), None),
        (QuietHours(time(0, 0), time(0, 0)), utc(1, 3), None),
    ],
)
def test_quiet_hours_end_in_utc(quiet: QuietHours, at: datetime, end: datetime | None) -> None:
    assert quiet_hours_end(quiet, "UTC", at) == end


@pytest.mark.parametrize(
    ("at", "end"),
    [
        # 2026-06-01 22:00 JST → 08:00 JST on June 2
        (utc(1, 13), utc(1, 23)),
        # 2026-06-02 03:00 JST
        (utc(1, 18), utc(1, 23)),
        # 2026-06-01 21:00 JST exactly
        (utc(1, 12), utc(1, 23)),
        # 2026-06-01 12:00 JST: daytime
        (utc(1, 3), None),
    ],
)
def test_quiet_hours_end_in_a_contact_time_zone(at: datetime, end: datetime | None) -> None:
    assert quiet_hours_end(OVERNIGHT, "Asia/Tokyo", at) == end


@pytest.mark.parametrize(
    ("at", "end"),
    [
        # Spring forward (2026-03-08 02:00 EST → 03:00 EDT). 21:00 EST on March 7 ends at 08:00 EDT = 12:00Z.
        (datetime(2026, 3, 8, 2, 0, tzinfo=UTC), datetime(2026, 3, 8, 12, 0, tzinfo=UTC)),
        # 03:30 EDT, after the change
        (datetime(2026, 3, 8, 7, 30, tzinfo=UTC), datetime(2026, 3, 8, 12, 0, tzinfo=UTC)),
        # 01:30 EST, before the change
        (datetime(2026, 3, 8, 6, 30, tzinfo=UTC), datetime(2026, 3, 8, 12, 0, tzinfo=UTC)),
        # Fall back (2026-11-01 02:00 EDT → 01:00 EST). 22:00 EDT on Oct 31 ends at 08:00 EST = 13:00Z.
        (datetime(2026, 11, 1, 2, 0, tzinfo=UTC), datetime(2026, 11, 1, 13, 0, tzinfo=UTC)),
        # 01:30 EST, the second 01:30 of that night
        (datetime(2026, 11, 1, 6, 30, tzinfo=UTC), datetime(2026, 11, 1, 13, 0, tzinfo=UTC)),
        # 08:00 EST: quiet hours are over
        (datetime(2026, 11, 1, 13, 0, tzinfo=UTC), None),
    ],
)
def test_quiet_hours_across_a_dst_change(at: datetime, end: datetime | None) -> None:
    assert quiet_hours_end(OVERNIGHT, "America/New_York", at) == end


def quiet_rule(**fields: object) -> Rule:
    return rule("quiet", 1, "sms", quiet_hours=OVERNIGHT, **fields)


@pytest.mark.parametrize(
    ("category", "deferred"),
    [("transactional", True), ("marketing", True), ("otp", False), ("alert", False)],
)
def test_quiet_hours_defer_all_but_otp_and_alert(category: str, deferred: bool) -> None:
    # 2026-06-01 13:00Z is 22:00 in Tokyo
    plan = make_plan(rules=[quiet_rule()], request=RouteRequest(category=category), now=utc(1, 13))
    assert plan.not_before == (utc(1, 23) if deferred else None)
    assert planned(plan) == ["sms"]


def test_no_deferral_outside_quiet_hours() -> None:
    # 2026-06-01 03:00Z is 12:00 in Tokyo
    assert make_plan(rules=[quiet_rule()], now=utc(1, 3)).not_before is None


def test_quiet_hours_use_the_contact_time_zone_before_the_default() -> None:
    defaults = replace(DEFAULTS, timezone="America/New_York")
    now = utc(1, 3)  # 12:00 in Tokyo, 23:00 (May 31) in New York
    tokyo = make_plan(rules=[quiet_rule()], defaults=defaults, now=now)
    no_zone = make_plan(
        contact=replace(HANA, timezone=None), rules=[quiet_rule()], defaults=defaults, now=now
    )
    assert tokyo.not_before is None
    assert no_zone.not_before == utc(1, 12)  # 08:00 EDT


def test_quiet_hours_apply_to_the_send_at_time() -> None:
    contact = replace(HANA, timezone="UTC")
    request = RouteRequest(send_at=utc(1, 23))
    plan = make_plan(contact=contact, rules=[quiet_rule()], request=request, now=utc(1, 12))
    assert plan.not_before == utc(2, 8)


def test_quiet_hours_with_start_equal_to_end_never_defer() -> None:
    r = rule("none", 1, "sms", quiet_hours=QuietHours(time(21, 0), time(21, 0)))
    assert make_plan(rules=[r], now=utc(1, 12)).not_before is None  # 21:00 in Tokyo


def test_no_rule_means_no_quiet_hours() -> None:
    assert make_plan(now=utc(1, 13)).not_before is None


# -- failure reasons and receipts -----------------------------------------------------------------


def test_failure_reason_is_none_when_something_can_be_sent() -> None:
    plan = make_plan(
        states={"sms": StateFacts(opted_out=True)}, request=RouteRequest(channels=("sms", "email"))
    )
    assert planned(plan) == ["email"]
    assert plan.failure_reason is None


def test_failure_reason_opted_out_when_every_channel_is_opted_out() -> None:
    states = {"sms": StateFacts(opted_out=True), "email": StateFacts(opted_out=True)}
    plan = make_plan(states=states, request=RouteRequest(channels=("sms", "email")))
    assert plan.steps == ()
    assert plan.failure_reason == "opted-out"


def test_failure_reason_opted_out_when_the_only_addressable_channel_is_opted_out() -> None:
    contact = ContactFacts(phone="+14155550100")
    plan = make_plan(
        contact=contact,
        states={"sms": StateFacts(opted_out=True)},
        request=RouteRequest(channels=("sms", "email")),
    )
    assert plan.steps == ()
    assert plan.failure_reason == "opted-out"


@pytest.mark.parametrize(
    ("contact", "states", "channels"),
    [
        (ContactFacts(), {}, None),
        (HANA, {"sms": StateFacts(reachability="blocked")}, ("sms",)),
        (HANA, {}, ()),
    ],
)
def test_failure_reason_no_channel(
    contact: ContactFacts, states: dict[str, StateFacts], channels: tuple[str, ...] | None
) -> None:
    plan = make_plan(contact=contact, states=states, request=RouteRequest(channels=channels))
    assert plan.steps == ()
    assert plan.failure_reason == "no-channel"


@pytest.mark.parametrize(
    ("status", "until", "reached"),
    [
        ("accepted", "accepted", True),
        ("sent", "accepted", True),
        ("delivered", "accepted", True),
        ("sent", "sent", True),
        ("delivered", "delivered", True),
        ("read", "delivered", True),
        ("read", "read", True),
        ("accepted", "sent", False),
        ("sent", "delivered", False),
        ("delivered", "read", False),
        ("pending", "accepted", False),
        ("sending", "accepted", False),
        ("failed", "accepted", False),
        ("superseded", "accepted", False),
    ],
)
def test_receipt_reached(status: str, until: str, reached: bool) -> None:
    assert receipt_reached(status, until) is reached
