"""Property tests (Hypothesis) for the parts hostile or careless input reaches first: phone parsing,
routing-rule matching and planning, and signatures (events the gateway signs, Twilio webhooks it checks)."""

from __future__ import annotations

import hashlib
import hmac
import random
import re
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode

import phonenumbers
import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st

from fallbacks.sms import SmsChannel
from gateway import events
from gateway.channels import CHANNEL_NAMES, channel_infos
from gateway.channels.base import WebhookRequest
from gateway.errors import ProblemError
from gateway.routing import (
    ChannelInfo,
    ContactFacts,
    Defaults,
    RetrySpec,
    RouteRequest,
    Rule,
    RuleWhen,
    StateFacts,
    StepSpec,
    matching_rule,
    plan_route,
)
from gateway.services.contacts import normalize_phone
from gateway.settings import load_settings
from gateway.simulators.twilio import twilio_signature

# No example database: nothing is written into the working tree.
PROPERTY = settings(
    deadline=None, database=None, max_examples=200, suppress_health_check=[HealthCheck.too_slow]
)

REGIONS = sorted(phonenumbers.SUPPORTED_REGIONS)
E164 = re.compile(r"^\+[1-9]\d{5,16}$")

# -- phone numbers -------------------------------------------------------------------------------------


@st.composite
def valid_numbers(draw: st.DrawFn) -> str:
    """A valid number in E.164: a region's example number with some of its last digits redrawn."""
    region = draw(st.sampled_from(REGIONS))
    kind = draw(
        st.sampled_from([phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE])
    )
    example = phonenumbers.example_number_for_type(region, kind)
    assume(example is not None)
    significant = phonenumbers.national_significant_number(example)
    keep = len(significant) - draw(st.integers(0, min(4, len(significant) - 1)))
    digits = significant[:keep] + draw(st.text("0123456789", min_size=len(significant) - keep, max_size=4))
    text = f"+{example.country_code}{digits[: len(significant)]}"
    number = phonenumbers.parse(text, None)
    assume(phonenumbers.is_valid_number(number))
    assume(phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164) == text)
    return text


@PROPERTY
@given(valid_numbers(), st.sampled_from(REGIONS))
def test_valid_e164_numbers_round_trip(number: str, default_region: str) -> None:
    contact = normalize_phone(number, None, default_region, "to.phone")
    assert contact.phone == number
    parsed = phonenumbers.parse(number, None)
    assert contact.country == phonenumbers.region_code_for_number(parsed)
    # Written the international way, or given with its own country, it is the same number.
    international = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    assert normalize_phone(international, None, default_region, "to.phone").phone == number
    assert normalize_phone(number, contact.country, default_region, "to.phone").phone == number
    # Normalising is idempotent.
    assert normalize_phone(contact.phone, None, "US", "to.phone").phone == number


@st.composite
def written_numbers(draw: st.DrawFn) -> str:
    """A valid number as people write it: national or international, with spaces, dashes, dots, brackets."""
    parsed = phonenumbers.parse(draw(valid_numbers()), None)
    formats = phonenumbers.PhoneNumberFormat
    style = draw(st.sampled_from([formats.E164, formats.INTERNATIONAL, formats.NATIONAL, formats.RFC3966]))
    text = phonenumbers.format_number(parsed, style)
    noise = draw(st.lists(st.tuples(st.integers(0, len(text)), st.sampled_from(" -.()")), max_size=3))
    for at, char in sorted(noise, reverse=True):
        text = text[:at] + char + text[at:]
    return text


phoneish = st.one_of(
    valid_numbers(),
    written_numbers(),
    st.text(max_size=60),
    st.from_regex(r"\A\+?[0-9 ()\-.]{0,25}\Z"),
    st.from_regex(r"\A(00|\+|0)?[0-9]{1,20}(\s*(ext|x|#)\.?\s*[0-9]{1,6})?\Z"),
    st.text(
        "0123456789+-() ٠١٢٣٤٥٦٧٨٩０１２３４５６７８９", max_size=40
    ),  # Arabic-Indic and full-width digits
    st.text(max_size=400),  # longer than libphonenumber reads
)
country = st.one_of(st.none(), st.from_regex(r"\A[A-Za-z]{2}\Z"), st.sampled_from(REGIONS))


@PROPERTY
@given(phoneish, country, st.sampled_from(REGIONS))
def test_any_input_parses_or_is_a_422(raw: str, country: str | None, default_region: str) -> None:
    try:
        contact = normalize_phone(raw, country, default_region, "to.phone")
    except ProblemError as problem:
        assert problem.status == 422
        assert problem.slug == "validation-error"
        assert [e.field for e in problem.errors] == ["to.phone"]
        event("refused")
        return
    event("parsed")
    assert contact.phone is not None and E164.match(contact.phone), contact.phone
    assert contact.country in phonenumbers.SUPPORTED_REGIONS


# -- routing rules and plans ------------------------------------------------------------------------

COUNTRIES = ("US", "JP", "DE")
CATEGORIES = ("transactional", "marketing", "otp", "alert")
TAGS = ("vip", "beta", "new")
IDENTITY_CHANNELS = ("telegram", "line", "whatsapp", "viber")
NOW = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
DEFAULTS = Defaults(after=900.0, retry=RetrySpec(3, 30.0, 2.0, 1800.0), timezone="UTC")
REAL_INFOS = channel_infos(load_settings(environ={}))  # address kinds and windows of the real adapters


def _subset(values: tuple[str, ...], most: int = 2) -> st.SearchStrategy[tuple[str, ...]]:
    return st.lists(st.sampled_from(values), max_size=most, unique=True).map(tuple)


def _condition(values: tuple[str, ...]) -> st.SearchStrategy[tuple[str, ...]]:
    """No condition three times in four, so that rules match often enough to compete."""
    return st.one_of(st.just(()), st.just(()), st.just(()), _subset(values))


whens = st.builds(
    RuleWhen,
    country=_condition(COUNTRIES),
    category=_condition(CATEGORIES),
    tags=_condition(TAGS),
    has_identity=_condition(IDENTITY_CHANNELS),
)
mostly = st.sampled_from([True, True, True, False])
rarely = st.sampled_from([False, False, False, True])
steps = st.builds(
    StepSpec,
    channel=st.sampled_from(CHANNEL_NAMES),  # repeats on purpose: a plan must not repeat them
    after=st.one_of(st.none(), st.floats(0, 3600)),
    until=st.sampled_from([None, "accepted", "sent", "delivered", "read"]),
)


@st.composite
def rule_lists(draw: st.DrawFn) -> list[Rule]:
    count = draw(st.integers(0, 6))
    return [
        Rule(
            id=f"rule_{i}",
            name=f"rule-{draw(st.integers(0, 99)):02d}-{i}",  # unique names, in no particular order
            order=draw(st.integers(0, 4)),  # few values: ties between orders are common
            enabled=draw(mostly),
            when=draw(whens),
            route=tuple(draw(st.lists(steps, min_size=1, max_size=4))),
            allow_fallback_for=draw(st.one_of(st.none(), _subset(CATEGORIES, 3))),
        )
        for i in range(count)
    ]


contacts = st.builds(
    ContactFacts,
    phone=st.sampled_from([None, "+14155550100", "+14155550101"]),
    email=st.sampled_from([None, "ana@example.test", "bo@example.test"]),
    country=st.sampled_from((None, *COUNTRIES)),
    tags=_subset(TAGS, 3),
    identities=st.dictionaries(st.sampled_from(IDENTITY_CHANNELS), st.from_regex(r"\A[a-z0-9]{1,8}\Z")),
)
requests = st.builds(
    RouteRequest,
    category=st.sampled_from(CATEGORIES),
    channels=st.one_of(
        st.none(), st.lists(st.sampled_from((*CHANNEL_NAMES, "pigeon")), min_size=1).map(tuple)
    ),
    fallback_until=st.sampled_from([None, "accepted", "delivered", "read"]),
    templates=st.frozensets(st.sampled_from(CHANNEL_NAMES), max_size=3),
    reply_channel=st.sampled_from((None, *CHANNEL_NAMES)),
    human_agent=st.booleans(),
)
moments = st.one_of(st.none(), st.integers(-72, 72).map(lambda h: NOW + timedelta(hours=h)))
states_facts = st.builds(
    StateFacts,
    reachability=st.sampled_from(["unknown", "unknown", "reachable", "unreachable", "blocked"]),
    reprobe_at=moments,
    window_open_until=moments,
    last_inbound_at=moments,
    opted_out=rarely,
    sent_in_window=st.integers(0, 6),
)


@st.composite
def channel_tables(draw: st.DrawFn) -> dict[str, ChannelInfo]:
    """The real channels, each enabled or not."""
    table = {}
    for name, info in REAL_INFOS.items():
        enabled = draw(mostly)
        table[name] = ChannelInfo(
            name=name,
            enabled=enabled,
            disabled_reason=None if enabled else "credentials missing",
            address_kind=info.address_kind,
            window_seconds=info.window_seconds,
            delivery_receipts=info.delivery_receipts,
            read_receipts=info.read_receipts,
            window_message_limit=info.window_message_limit,
            human_agent_window_seconds=info.human_agent_window_seconds,
        )
    return table


def holds(when: RuleWhen, contact: ContactFacts, request: RouteRequest) -> bool:
    """A rule's conditions, as docs/api.md states them: every listed condition must hold."""
    return all(
        [
            not when.country or contact.country in when.country,
            not when.category or request.category in when.category,
            not when.tags or any(t in contact.tags for t in when.tags),
            not when.has_identity or any(c in contact.identities for c in when.has_identity),
        ]
    )


@PROPERTY
@given(rule_lists(), contacts, requests, st.randoms(use_true_random=False))
def test_the_first_enabled_matching_rule_by_order_wins(
    rules: list[Rule], contact: ContactFacts, request: RouteRequest, shuffler: random.Random
) -> None:
    chosen = matching_rule(contact, request, rules)
    candidates = [r for r in rules if r.enabled and holds(r.when, contact, request)]
    event(f"{len(candidates)} enabled matching rules")
    if not candidates:
        assert chosen is None
        return
    assert chosen is not None and chosen.enabled and holds(chosen.when, contact, request)
    assert chosen.order == min(r.order for r in candidates)
    # The list's order does not matter: ties between equal orders are broken the same way every time.
    shuffled = list(rules)
    shuffler.shuffle(shuffled)
    assert matching_rule(contact, request, shuffled) == chosen


@PROPERTY
@given(
    contacts,
    st.dictionaries(st.sampled_from(CHANNEL_NAMES), states_facts),
    rule_lists(),
    requests,
    channel_tables(),
)
def test_plans_never_hold_opted_out_or_disabled_channels_and_never_repeat_one(
    contact: ContactFacts,
    states: dict[str, StateFacts],
    rules: list[Rule],
    request: RouteRequest,
    table: dict[str, ChannelInfo],
) -> None:
    plan = plan_route(contact, states, rules, request, table, DEFAULTS, NOW)
    used = [step.channel for step in plan.steps]
    event(f"{len(used)} steps")
    assert len(used) == len(set(used)), used
    for step in plan.steps:
        assert step.channel in table and table[step.channel].enabled, step
        assert not states.get(step.channel, StateFacts()).opted_out, step
        assert step.address, step
    if request.channels is None:
        assert plan.rule == matching_rule(contact, request, rules)
    else:
        assert plan.rule is None  # explicit channels take precedence over every rule
    assert plan.steps or plan.failure_reason in ("opted-out", "no-channel")


# -- signatures ---------------------------------------------------------------------------------------


@PROPERTY
@given(st.text(min_size=1, max_size=64), st.binary(max_size=2048), st.integers(0, 2**40))
def test_event_signatures_are_hmac_sha256_of_time_and_body(secret: str, body: bytes, at: int) -> None:
    header = events.sign(secret, body, at)
    expected = hmac.new(secret.encode(), str(at).encode() + b"." + body, hashlib.sha256).hexdigest()
    assert header == f"t={at},v1={expected}"


@PROPERTY
@given(
    st.text(min_size=1, max_size=64), st.binary(min_size=1, max_size=512), st.integers(0, 2**40), st.data()
)
def test_event_signature_changes_with_any_byte_of_the_body(
    secret: str, body: bytes, at: int, data: st.DataObject
) -> None:
    i = data.draw(st.integers(0, len(body) - 1))
    changed = (
        body[:i] + bytes([data.draw(st.integers(0, 255).filter(lambda b: b != body[i]))]) + body[i + 1 :]
    )
    assert events.sign(secret, changed, at) != events.sign(secret, body, at)


TOKEN = "twilio-auth-token-for-properties"
BASE = "http://127.0.0.1:8000"
SMS = SmsChannel(
    load_settings(
        environ={},
        overrides={
            "twilio_account_sid": "AC" + "0" * 32,
            "twilio_auth_token": TOKEN,
            "twilio_from": "+14155550000",
        },
    )
)
form_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)  # what form decoding can yield
forms = st.dictionaries(st.from_regex(r"\A[A-Za-z][A-Za-z0-9]{0,15}\Z"), form_text, max_size=8)
paths = st.sampled_from(["/webhooks/twilio/status", "/webhooks/twilio/inbound"])
queries = st.one_of(
    st.just(""), st.from_regex(r"\A[a-z0-9_]{1,30}\Z").map(lambda a: "?" + urlencode({"attempt": a}))
)


def _request(url: str, form: dict[str, str], signature: str) -> WebhookRequest:
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"}
    return WebhookRequest(url=url, method="POST", headers=headers, body=urlencode(form).encode(), form=form)


def _one_change(text: str, data: st.DataObject, alphabet: str | None = None) -> str:
    """`text` with exactly one character replaced."""
    i = data.draw(st.integers(0, len(text) - 1))
    pool = st.sampled_from(alphabet) if alphabet else st.characters(exclude_categories=["Cs"])
    new = data.draw(pool.filter(lambda c: c != text[i]))
    return text[:i] + new + text[i + 1 :]


@PROPERTY
@given(paths, queries, forms)
def test_twilio_webhooks_signed_like_twilio_are_accepted(path: str, query: str, form: dict[str, str]) -> None:
    url = BASE + path + query
    assert SMS.verify_webhook(_request(url, form, twilio_signature(TOKEN, url, form)))


B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


@PROPERTY
@given(paths, queries, forms, st.sampled_from(["signature", "url", "value", "token"]), st.data())
def test_twilio_webhooks_with_any_single_character_changed_are_refused(
    path: str, query: str, form: dict[str, str], part: str, data: st.DataObject
) -> None:
    url = BASE + path + query
    signature = twilio_signature(TOKEN, url, form)
    if part == "signature":
        assert not SMS.verify_webhook(_request(url, form, _one_change(signature, data, B64)))
    elif part == "url":
        # What a sender controls of the URL: the path after its leading "/" (the gateway puts the public
        # URL before it) and the query (the attempt id).
        changed = (
            BASE + "/" + _one_change(path[1:] + query, data, "abcdefghijklmnopqrstuvwxyz0123456789/?=&_-")
        )
        assert not SMS.verify_webhook(_request(changed, form, signature))
    elif part == "value":
        assume(any(form.values()))
        key = data.draw(st.sampled_from(sorted(k for k, v in form.items() if v)))
        assert not SMS.verify_webhook(_request(url, {**form, key: _one_change(form[key], data)}, signature))
    else:
        forged = twilio_signature(_one_change(TOKEN, data), url, form)
        assert not SMS.verify_webhook(_request(url, form, forged))


@pytest.mark.parametrize("signature", ["", "   ", "not-base64", "A" * 28])
def test_twilio_webhooks_without_a_real_signature_are_refused(signature: str) -> None:
    url = BASE + "/webhooks/twilio/status"
    assert not SMS.verify_webhook(
        _request(url, {"MessageSid": "SM1", "MessageStatus": "delivered"}, signature)
    )
