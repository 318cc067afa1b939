"""Auto-reply matching, pure: keyword normalisation in any script, and business hours in a time zone."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from gateway.inbound.auto_replies import (
    BusinessHours,
    ReplyRule,
    first_match,
    is_opt_keyword,
    keyword_matches,
    normalise,
    rule_matches,
    within_business_hours,
)

PARIS_OFFICE = BusinessHours("Europe/Paris", frozenset(range(5)), time(9), time(18))
NIGHT_SHIFT = BusinessHours("UTC", frozenset({4}), time(22), time(6))  # Friday 22:00 to Saturday 06:00


def utc(year: int, month: int, day: int, hour: int, minute: int) -> datetime:
    return datetime(year, month, day, hour, minute, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("¿Horário?", "horario"),
        ("  HOURS!!  ", "hours"),
        ("ＨＯＵＲＳ", "hours"),  # full-width letters
        ("Straße", "strasse"),
        ("Ça va? L'été…", "ca va l ete"),
        ("営業時間は？", "営業時間は"),
        ("ｶﾞｲﾄﾞ", "ガイド"),  # half-width kana become full width; the voicing mark stays
        ("مَرْحَبًا", "مرحبا"),  # Arabic vowel marks are dropped
        ("Ωραριο;", "ωραριο"),
        ("hours🙂", "hours"),
        ("", ""),
        (None, ""),
    ],
)
def test_normalise(text: str | None, expected: str) -> None:
    assert normalise(text) == expected


@pytest.mark.parametrize(
    ("text", "keywords"),
    [
        ("¿Horário?", ["horario"]),
        ("horario", ["¿Horário?"]),  # keywords are normalised the same way
        ("What are your OPENING HOURS, please?", ["opening hours"]),
        ("Quel est l'horaire d'ouverture ?", ["HORAIRE"]),
        ("営業時間は何時ですか？", ["営業時間"]),  # Japanese has no spaces: contained anywhere
        ("今日の営業時間", ["営業時間"]),
        ("SALEはいつですか", ["sale"]),  # a change of script is a word boundary
        ("영업시간은요?", ["영업시간"]),  # Korean particles attach to the word
        ("Какие часы работы?", ["часы работы"]),
        ("price", ["hours", "price"]),
    ],
)
def test_keyword_matches(text: str, keywords: list[str]) -> None:
    assert keyword_matches(text, keywords)


@pytest.mark.parametrize(
    ("text", "keywords"),
    [
        ("officehours", ["hours"]),  # only whole words
        ("hoursly", ["hours"]),
        ("opening times", ["opening hours"]),
        ("ガイド", ["カイド"]),  # voicing changes a Japanese word
        ("", ["hours"]),
        (None, ["hours"]),
        ("hours", []),
        ("10", ["1"]),
    ],
)
def test_keyword_does_not_match(text: str | None, keywords: list[str]) -> None:
    assert not keyword_matches(text, keywords)


@pytest.mark.parametrize(
    ("at", "inside"),
    [
        (utc(2026, 11, 30, 8, 0), True),  # Monday 09:00 in Paris (UTC+1 in winter)
        (utc(2026, 11, 30, 7, 59), False),  # Monday 08:59 in Paris
        (utc(2026, 11, 30, 16, 59), True),  # 17:59
        (utc(2026, 11, 30, 17, 0), False),  # 18:00: the end is exclusive
        (utc(2026, 7, 6, 7, 30), True),  # Monday 09:30 in summer (UTC+2)
        (utc(2026, 7, 6, 16, 30), False),  # 18:30 in summer
        (utc(2026, 11, 28, 12, 0), False),  # Saturday
        (utc(2026, 11, 29, 12, 0), False),  # Sunday
        (utc(2026, 11, 29, 23, 30), False),  # already Monday in Paris, but 00:30
        (utc(2026, 11, 27, 16, 30), True),  # Friday 17:30
    ],
)
def test_business_hours_in_paris(at: datetime, inside: bool) -> None:
    assert within_business_hours(PARIS_OFFICE, at) is inside


def test_business_hours_depend_on_the_time_zone() -> None:
    at = utc(2026, 11, 30, 1, 0)  # Monday 01:00 UTC is Monday 10:00 in Tokyo
    tokyo = BusinessHours("Asia/Tokyo", frozenset(range(5)), time(9), time(18))
    assert within_business_hours(tokyo, at)
    assert not within_business_hours(PARIS_OFFICE, at)
    # Monday 20:00 in New York is already Tuesday 01:00 UTC
    new_york = BusinessHours("America/New_York", frozenset({0}), time(19), time(21))
    assert within_business_hours(new_york, utc(2026, 12, 1, 1, 0))


@pytest.mark.parametrize(
    ("at", "inside"),
    [
        (utc(2026, 11, 27, 21, 59), False),  # Friday before opening
        (utc(2026, 11, 27, 22, 0), True),  # Friday 22:00
        (utc(2026, 11, 28, 5, 59), True),  # Saturday 05:59: still Friday's shift
        (utc(2026, 11, 28, 6, 0), False),  # Saturday 06:00: closed
        (utc(2026, 11, 28, 22, 30), False),  # Saturday night: Saturday is not a listed day
        (utc(2026, 11, 27, 3, 0), False),  # Friday 03:00 belongs to Thursday's shift, which is not listed
    ],
)
def test_business_hours_across_midnight(at: datetime, inside: bool) -> None:
    assert within_business_hours(NIGHT_SHIFT, at) is inside


def test_start_equal_to_end_means_all_day_on_the_listed_days() -> None:
    weekdays = BusinessHours("UTC", frozenset(range(5)), time(0), time(0))
    assert within_business_hours(weekdays, utc(2026, 11, 30, 3, 0))  # Monday
    assert not within_business_hours(weekdays, utc(2026, 11, 29, 3, 0))  # Sunday


def test_a_naive_time_is_taken_as_utc() -> None:
    assert within_business_hours(PARIS_OFFICE, datetime(2026, 11, 30, 8, 0))


def test_rules_combine_their_conditions() -> None:
    monday_noon, saturday = utc(2026, 11, 30, 11, 0), utc(2026, 11, 28, 11, 0)
    keywords = ReplyRule("ar_1", "hours", "9 to 6", 86400, keywords=("hours",))
    closed = ReplyRule("ar_2", "closed", "closed", 86400, hours=PARIS_OFFICE)
    both = ReplyRule("ar_3", "both", "we open at 9", 86400, keywords=("hours",), hours=PARIS_OFFICE)
    sms_only = ReplyRule("ar_4", "sms", "sms", 86400, keywords=("hours",), channels=("sms",))
    assert rule_matches(keywords, "sms", "Hours?", monday_noon)
    assert not rule_matches(keywords, "sms", "hello", monday_noon)
    assert not rule_matches(closed, "sms", "hello", monday_noon)
    assert rule_matches(closed, "email", None, saturday)  # no text needed out of hours
    assert not rule_matches(both, "sms", "hours?", monday_noon)
    assert rule_matches(both, "sms", "hours?", saturday)
    assert not rule_matches(both, "sms", "hello", saturday)
    assert rule_matches(sms_only, "sms", "hours", monday_noon)
    assert not rule_matches(sms_only, "email", "hours", monday_noon)
    assert not rule_matches(ReplyRule("ar_5", "empty", "x", 1), "sms", "hours", monday_noon)


def test_first_match_takes_the_first_matching_rule_in_order() -> None:
    saturday = utc(2026, 11, 28, 11, 0)
    keywords = ReplyRule("ar_1", "hours", "9 to 6", 86400, keywords=("hours",))
    closed = ReplyRule("ar_2", "closed", "closed", 86400, hours=PARIS_OFFICE)
    assert first_match([keywords, closed], "sms", "hours?", saturday) == keywords
    assert first_match([closed, keywords], "sms", "hours?", saturday) == closed
    assert first_match([keywords, closed], "sms", "hello", saturday) == closed
    assert first_match([keywords], "sms", "hello", saturday) is None
    assert first_match([], "sms", "hours", saturday) is None


@pytest.mark.parametrize("text", ["STOP", "stop", "Stop.", " unsubscribe! ", "START", "yes", "'QUIT'"])
def test_sms_opt_keywords_are_recognised(text: str) -> None:
    assert is_opt_keyword("sms", text)


@pytest.mark.parametrize(
    ("channel", "text"), [("sms", "stop sending me the hours"), ("sms", "hours"), ("line", "STOP")]
)
def test_other_texts_are_not_opt_keywords(channel: str, text: str) -> None:
    assert not is_opt_keyword(channel, text)
