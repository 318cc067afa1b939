"""The console's pure parts: dashboard aggregation, median, time buckets, SVG charts, journey steps."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

from gateway.admin import charts
from gateway.admin.contacts import lookups
from gateway.admin.messages import journey
from gateway.models import Attempt
from gateway.services.stats import AttemptRow, aggregate, figures_out, median, time_buckets

T0 = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
SVG = "{http://www.w3.org/2000/svg}"


def row(
    channel: str,
    message: str,
    step: int = 0,
    status: str = "sent",
    kind: str | None = None,
    at: float = 0.0,
    delivered: float | None = None,
    sent: bool = True,
) -> AttemptRow:
    created = T0 + timedelta(seconds=at)
    return AttemptRow(
        channel=channel,
        message_id=message,
        step_index=step,
        status=status,
        error_kind=kind,
        created_at=created,
        sent_at=created if sent else None,
        delivered_at=None if delivered is None else T0 + timedelta(seconds=delivered),
        message_start=T0,
    )


def test_median_of_odd_even_and_no_values() -> None:
    assert median([]) is None
    assert median([5.0]) == 5.0
    assert median([9.0, 1.0, 5.0]) == 5.0
    assert median([4.0, 1.0, 3.0, 2.0]) == 2.5


def test_aggregate_counts_sends_receipts_failures_and_fallbacks() -> None:
    rows = [
        # m1: SMS refused the number, then email went out.
        row("sms", "m1", status="failed", kind="invalid_address", sent=False),
        row("email", "m1", step=1, at=1),
        # m2: SMS failed transiently twice (retries: one step), then was delivered after 4 s.
        row("sms", "m2", status="failed", kind="transient", sent=False),
        row("sms", "m2", status="failed", kind="transient", sent=False, at=1),
        row("sms", "m2", status="delivered", at=2, delivered=4),
        # m3: delivered by SMS after 10 s; m4: read after 2 s.
        row("sms", "m3", status="delivered", delivered=10),
        row("sms", "m4", status="read", delivered=2),
        # m5: SMS accepted but never delivered in time: timeout, then email.
        row("sms", "m5", kind="timeout"),
        row("email", "m5", step=1, at=900),
    ]
    figures = {f.channel: figures_out(f) for f in aggregate(rows)}
    assert figures["sms"] == {
        "channel": "sms",
        "attempts": 7,
        "sent": 4,
        "delivered": 3,
        "failed": {"invalid_address": 1, "timeout": 1, "transient": 2},
        "failed_total": 4,
        "fallback_rate": 2 / 5,  # m1 and m5 of five messages' SMS steps
        "median_delivery": 4.0,  # of 4, 10 and 2 seconds
    }
    assert figures["email"] == {
        "channel": "email",
        "attempts": 2,
        "sent": 2,
        "delivered": 0,
        "failed": {},
        "failed_total": 0,
        "fallback_rate": 0.0,
        "median_delivery": None,
    }
    assert aggregate([]) == []


def test_time_to_delivery_counts_from_send_at_and_naive_times_are_utc() -> None:
    later = row("sms", "m1", status="delivered", delivered=70)
    naive = AttemptRow(
        "sms",
        "m2",
        0,
        "delivered",
        None,
        T0.replace(tzinfo=None),
        T0,
        T0.replace(tzinfo=None) + timedelta(seconds=8),
        T0,
    )
    scheduled = AttemptRow(
        **{**later.__dict__, "message_id": "m1", "message_start": T0 + timedelta(seconds=60)}
    )
    (sms,) = aggregate([scheduled, naive])
    assert sms.median_delivery == 9.0  # 10 s (70 - 60) and 8 s


def test_time_buckets_place_attempts_by_creation_and_drop_outsiders() -> None:
    rows = [
        row("sms", "a", at=10),
        row("sms", "b", at=299, status="delivered", delivered=300),
        row("sms", "c", at=301, status="failed", kind="rejected", sent=False),
        row("sms", "d", at=-1),
        row("sms", "e", at=3600),
    ]
    buckets = time_buckets(rows, T0, timedelta(minutes=5), 12)
    assert len(buckets) == 12 and buckets[1].start == T0 + timedelta(minutes=5)
    assert [(b.sent, b.delivered, b.failed) for b in buckets[:3]] == [(2, 1, 0), (0, 0, 1), (0, 0, 0)]
    assert sum(b.sent for b in buckets) == 2


def parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def test_bar_chart_is_labelled_and_escapes_every_text() -> None:
    hostile = '<script>alert("x")</script>&'
    svg = charts.bar_chart(
        'id" onload="x',
        f"Title {hostile}",
        [hostile, "email"],
        [charts.Series(hostile, [3, 1], "sent"), charts.Series("failed", [0, 2], "failed")],
    )
    assert "<script>" not in svg and 'onload="x' not in svg
    root = parse(str(svg))  # well-formed XML
    assert root.get("role") == "img"
    title_id, desc_id = (root.get("aria-labelledby") or "").split()
    title = root.find(f"{SVG}title")
    assert title is not None and title.get("id") == title_id and title.text == f"Title {hostile}"
    desc = root.find(f"{SVG}desc")
    assert desc is not None and desc.get("id") == desc_id
    assert desc.text == f"{hostile}: {hostile} 3, failed 0; email: {hostile} 1, failed 2"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert hostile in texts and "email" in texts and "3" in texts
    bars = [r for r in root.iter(f"{SVG}rect") if "bar" in (r.get("class") or "")]
    widths = [float(r.get("width") or 0) for r in bars]
    assert len(bars) == 4 and widths[0] > widths[3] > widths[2] > widths[1] == 0  # 3 > 2 > 1 > 0


def test_charts_without_data_say_so() -> None:
    for svg in (
        charts.bar_chart("a", "Per channel", [], []),
        charts.bar_chart("b", "Per channel", ["sms"], [charts.Series("sent", [0])]),
        charts.column_chart("c", "Over time", ["12:00", "12:05"], [charts.Series("sent", [0, 0])]),
        charts.journey_chart("d", "Journey", []),
    ):
        root = parse(str(svg))
        assert root.get("role") == "img"
        assert [t.text for t in root.iter(f"{SVG}text")][0] in (
            "Nothing to show in this period.",
            "No attempt was made.",
        )
        assert not [r for r in root.iter(f"{SVG}rect")]


def test_column_chart_stacks_series_and_thins_labels() -> None:
    svg = charts.column_chart(
        "t",
        "Over <time>",
        ["00:00", "01:00", "02:00", "03:00"],
        [charts.Series("ok", [1, 0, 2, 0], "delivered"), charts.Series("failed", [1, 0, 0, 0], "failed")],
        every=2,
    )
    root = parse(str(svg))
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == "Over <time>"
    bars = [r for r in root.iter(f"{SVG}rect") if "bar" in (r.get("class") or "")]
    assert len(bars) == 3  # zero-height parts are not drawn
    first_ok, first_failed = bars[0], bars[1]
    assert float(first_failed.get("y") or 0) + float(first_failed.get("height") or 0) == float(
        first_ok.get("y") or 0
    )
    labels = [t.text for t in root.iter(f"{SVG}text") if t.text and ":" in t.text]
    assert labels == ["00:00", "02:00"]


def attempt(
    step: int, tries: int, channel: str, status: str, at: float, until: float, **kw: object
) -> Attempt:
    return Attempt(
        id=f"att_{step}_{tries}",
        message_id="msg_1",
        step_index=step,
        try_number=tries,
        channel=channel,
        address="x",
        status=status,
        created_at=T0 + timedelta(seconds=at),
        updated_at=T0 + timedelta(seconds=until),
        **kw,
    )


def test_journey_names_retries_and_fallbacks_with_their_errors() -> None:
    attempts = [
        attempt(0, 1, "sms", "failed", 0, 0.5, error_kind="transient", error_code="30008"),
        attempt(0, 2, "sms", "failed", 2.5, 3, error_kind="invalid_address", error_code="21211"),
        attempt(1, 1, "email", "sent", 3.2, 3.4, sent_at=T0 + timedelta(seconds=3.4)),
    ]
    steps, spans = journey(attempts, T0, T0 + timedelta(seconds=10))
    assert [(s.kind, s.title) for s in steps] == [
        ("accepted", "Accepted"),
        ("attempt", "Step 1: sms, try 1"),
        ("retry", "Retry on sms"),
        ("attempt", "Step 1: sms, try 2"),
        ("fallback", "Fallback from sms to email"),
        ("attempt", "Step 2: email, try 1"),
    ]
    assert steps[2].detail == "after transient (code 30008); 2 s later"
    assert steps[4].detail == "sms ended with invalid_address (code 21211)"
    assert [(s.outcome, s.start, s.end) for s in spans] == [
        ("bad", 0.0, 0.5),
        ("bad", 2.5, 3.0),
        ("ok", 3.2, 3.4),
    ]
    assert spans[2].marks == [(3.4, "accepted by the provider")]
    svg = charts.journey_chart("j", "Journey of <msg>", spans)
    root = parse(str(svg))
    assert [r.get("class") for r in root.iter(f"{SVG}rect")] == ["span bad", "span bad", "span ok"]
    assert "1. sms #1" in [t.text for t in root.iter(f"{SVG}text")]


def test_a_pending_attempt_runs_until_now() -> None:
    steps, spans = journey([attempt(0, 1, "sms", "pending", 0, 0)], T0, T0 + timedelta(seconds=30))
    assert [s.kind for s in steps] == ["accepted", "attempt"]
    assert (spans[0].outcome, spans[0].end) == ("open", 30.0)


def test_one_search_box_means_the_right_lookups() -> None:
    assert lookups("line:U4af") == [{"identity": "line:U4af"}]
    assert lookups("Ada@Example.test") == [{"email": "Ada@Example.test"}, {"external_id": "Ada@Example.test"}]
    assert lookups("+1 (415) 555-0100") == [
        {"phone": "+1 (415) 555-0100"},
        {"external_id": "+1 (415) 555-0100"},
    ]
    assert lookups("crm-42") == [{"external_id": "crm-42"}]
    assert lookups("nochannel:x") == [{"external_id": "nochannel:x"}]
