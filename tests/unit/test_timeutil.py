"""Durations, RFC 3339 times and identifiers."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta, timezone
from types import SimpleNamespace

import pytest

from gateway import ids
from gateway.ids import new_id
from gateway.timeutil import add_seconds, format_duration, parse_duration, parse_rfc3339, rfc3339

# -- parse_duration -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90s", 90.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("7d", 604800.0),
        ("500ms", 0.5),
        ("0.2s", 0.2),
        ("1.5h", 5400.0),
        ("45", 45.0),
        ("0", 0.0),
        (" 30s ", 30.0),
        ("10 m", 600.0),
        (0, 0.0),
        (30, 30.0),
        (1.5, 1.5),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    result = parse_duration(text)
    assert result == pytest.approx(seconds)
    assert isinstance(result, float)


@pytest.mark.parametrize(
    "value",
    ["", "soon", "s", "90x", "1h30m", "-5s", "-5", "5 s s", "1e3s", "ms", None, [], True, False, -1, -0.5],
)
def test_parse_duration_rejects(value: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_parse_duration_rejects_non_finite_numbers(value: float) -> None:
    with pytest.raises(ValueError):
        parse_duration(value)


# -- format_duration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0s"),
        (0.5, "0.5s"),
        (30.0, "30s"),
        (90.0, "90s"),
        (120.0, "2m"),
        (3600.0, "1h"),
        (5400.0, "90m"),
        (86400.0, "1d"),
        (604800.0, "7d"),
        (90000.0, "25h"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@pytest.mark.parametrize(
    "seconds", [0.0, 0.2, 1.0, 59.0, 61.0, 900.0, 1800.0, 3599.0, 86400.0, 86401.0, 999_999.0, 1_234_567.0]
)
def test_format_duration_round_trips(seconds: float) -> None:
    assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["90s", "2m", "1h", "7d", "15m", "24h", "30m"])
def test_parse_then_format_gives_a_duration_of_the_same_length(text: str) -> None:
    assert parse_duration(format_duration(parse_duration(text))) == parse_duration(text)


# -- RFC 3339 -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (datetime(2026, 11, 28, 12, 0, tzinfo=UTC), "2026-11-28T12:00:00Z"),
        (datetime(2026, 11, 28, 12, 0, 0, 250000, tzinfo=UTC), "2026-11-28T12:00:00.250Z"),
        (datetime(2026, 11, 28, 21, 0, tzinfo=timezone(timedelta(hours=9))), "2026-11-28T12:00:00Z"),
        (datetime(2026, 11, 28, 12, 0), "2026-11-28T12:00:00Z"),  # naive means UTC
    ],
)
def test_rfc3339(value: datetime, text: str) -> None:
    assert rfc3339(value) == text


def test_rfc3339_of_none() -> None:
    assert rfc3339(None) is None


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("2026-11-28T12:00:00Z", datetime(2026, 11, 28, 12, 0, tzinfo=UTC)),
        ("2026-11-28t12:00:00z", datetime(2026, 11, 28, 12, 0, tzinfo=UTC)),
        ("2026-11-28T12:00:00+00:00", datetime(2026, 11, 28, 12, 0, tzinfo=UTC)),
        ("2026-11-28T21:00:00+09:00", datetime(2026, 11, 28, 12, 0, tzinfo=UTC)),
        ("2026-11-28T07:00:00-05:00", datetime(2026, 11, 28, 12, 0, tzinfo=UTC)),
        ("2026-11-28T12:00:00.250Z", datetime(2026, 11, 28, 12, 0, 0, 250000, tzinfo=UTC)),
    ],
)
def test_parse_rfc3339(text: str, value: datetime) -> None:
    parsed = parse_rfc3339(text)
    assert parsed == value
    assert parsed.utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "text", ["2026-11-28T12:00:00", "2026-11-28", "yesterday", "", "2026-13-01T00:00:00Z"]
)
def test_parse_rfc3339_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rfc3339(text)


@pytest.mark.parametrize(
    "value",
    [datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 3, 8, 7, 30, 15, 125000, tzinfo=UTC)],
)
def test_rfc3339_round_trips(value: datetime) -> None:
    text = rfc3339(value)
    assert text is not None
    assert parse_rfc3339(text) == value


def test_add_seconds() -> None:
    start = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
    assert add_seconds(start, 90.5) == datetime(2026, 6, 1, 12, 1, 30, 500000, tzinfo=UTC)


# -- ids ------------------------------------------------------------------------------------------

ID_BODY = re.compile(r"^[0-9a-hjkmnp-tv-z]{26}$")


@pytest.mark.parametrize("prefix", ["msg", "ct", "att", "rule", "wh", "in"])
def test_new_id_has_prefix_and_body(prefix: str) -> None:
    value = new_id(prefix)
    head, sep, body = value.partition("_")
    assert (head, sep) == (prefix, "_")
    assert ID_BODY.match(body), value


def test_new_ids_are_unique() -> None:
    assert len({new_id("msg") for _ in range(1000)}) == 1000


def test_new_ids_sort_by_creation_time(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([1_700_000_000.000, 1_700_000_000.001, 1_700_000_001.0, 1_800_000_000.0, 4_000_000_000.0])
    monkeypatch.setattr(ids, "time", SimpleNamespace(time=lambda: next(clock)))
    made = [new_id("msg") for _ in range(5)]
    assert made == sorted(made)
    assert len(set(made)) == 5


def test_new_id_time_part_is_the_same_within_one_millisecond(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids, "time", SimpleNamespace(time=lambda: 1_700_000_000.123))
    first, second = new_id("ct"), new_id("ct")
    assert first[:13] == second[:13]  # "ct_" + 10 chars of milliseconds
    assert first != second
