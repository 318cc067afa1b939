"""`/admin/`: per channel over the last hour or day, what was sent, delivered and failed, and which channels
are enabled (with the circuit breaker state where this process runs a dispatcher)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from flask import render_template, request

from gateway import health, store
from gateway.admin import bp, charts
from gateway.admin.auth import admin_required
from gateway.api.http import gateway
from gateway.channels import channel_statuses
from gateway.core import Gateway
from gateway.services import stats
from gateway.timeutil import parse_rfc3339


def breaker_states(gw: Gateway) -> dict[str, str] | None:
    """The worst breaker state per channel among this process's dispatchers; None without one."""
    dispatchers = health.dispatchers_of(gw)
    if not dispatchers:
        return None
    rank = {"closed": 0, "half_open": 1, "open": 2}
    states: dict[str, str] = {}
    for d in dispatchers:
        for snap in d.breakers.snapshots():
            state = str(snap.state)
            if rank.get(state, 0) >= rank.get(states.get(snap.channel, "closed"), 0):
                states[snap.channel] = state
    return states


@bp.app_template_filter("duration")
def duration_filter(seconds: float | None) -> str:
    """Seconds for people (the console's pages share this filter)."""
    return "—" if seconds is None else charts.duration_label(seconds)


@bp.app_template_filter("when")
def when_filter(value: datetime | str | None) -> str:
    """A time (or an RFC 3339 string) as `2026-11-28 17:40:03 UTC`."""
    if value is None:
        return "—"
    if isinstance(value, str):
        value = parse_rfc3339(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    value = value.astimezone(UTC)
    millis = f".{value.microsecond // 1000:03d}" if value.microsecond else ""
    return value.strftime("%Y-%m-%d %H:%M:%S") + millis + " UTC"


def _charts(board: stats.Dashboard) -> dict[str, Any]:
    names = [f.channel for f in board.channels]
    by_channel = charts.bar_chart(
        "channels",
        "Attempts per channel",
        names,
        [
            charts.Series("sent", [f.sent for f in board.channels], "sent"),
            charts.Series("delivered", [f.delivered for f in board.channels], "delivered"),
            charts.Series("failed", [f.failed_total for f in board.channels], "failed"),
        ],
    )
    hourly = board.window == "day"
    labels = [b.start.strftime("%H:%M") for b in board.buckets]
    over_time = charts.column_chart(
        "over-time",
        "Attempts over time, per " + ("hour" if hourly else "5 minutes") + " (UTC)",
        labels,
        [
            charts.Series("delivered", [b.delivered for b in board.buckets], "delivered"),
            charts.Series("sent, not delivered", [b.sent - b.delivered for b in board.buckets], "sent"),
            charts.Series("failed", [b.failed for b in board.buckets], "failed"),
        ],
        every=3,
    )
    return {"by_channel": by_channel, "over_time": over_time}


@bp.get("/")
@admin_required
def dashboard() -> Any:
    window = request.args.get("window", "hour")
    if window not in stats.WINDOWS:
        window = "hour"
    gw = gateway()
    with store.transaction(gw.engine) as session:
        board = stats.dashboard(session, gw.clock(), window)
    active = {f.channel for f in board.channels}
    statuses = sorted(channel_statuses(gw.settings), key=lambda s: not s.enabled)  # enabled ones first
    return render_template(
        "admin/dashboard.html",
        board=board,
        figures=[stats.figures_out(f) for f in board.channels],
        windows=list(stats.WINDOWS),
        statuses=statuses,
        idle=[s.name for s in statuses if s.enabled and s.name not in active],
        breakers=breaker_states(gw),
        charts=_charts(board),
        max_rows=stats.MAX_ATTEMPT_ROWS,
    )
