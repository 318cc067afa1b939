"""SVG charts drawn on the server from numbers: no script, no external asset, every text escaped.

Each chart is an `<svg role="img">` named by its `<title>` and described by a `<desc>` that states the
numbers in words; pages also show the same numbers in a table. Colours come from presentation attributes
and CSS classes (the console's CSP forbids inline `style`). The functions are pure: numbers in, markup out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

# Series colours by CSS class; the same names style the legend swatches in admin.css.
COLOURS = {"sent": "#0b5cad", "delivered": "#1a7f37", "failed": "#b42318", "other": "#9a6700"}
LABEL_WIDTH = 110  # room for category names at the left of horizontal bars
ROW_HEIGHT = 12
WIDTH = 640


@dataclass(frozen=True)
class Series:
    """One coloured series: a value per category (or per time bucket)."""

    name: str
    values: Sequence[float]
    kind: str = "sent"  # a key of COLOURS


@dataclass(frozen=True)
class Span:
    """One bar of a journey chart: seconds from the start, an outcome class, marks inside it."""

    label: str
    start: float
    end: float
    outcome: str  # ok, bad or open
    marks: Sequence[tuple[float, str]] = ()  # (seconds, what happened then)


def _id(chart_id: str) -> str:
    """An element id safe in an attribute and unique per chart on a page."""
    return "chart-" + (re.sub(r"[^A-Za-z0-9_-]", "-", chart_id) or "x")


def _number(value: float) -> str:
    return f"{value:g}" if value != int(value) else str(int(value))


def _open(chart_id: str, title: str, desc: str, width: int, height: int) -> list[str]:
    ident = _id(chart_id)
    return [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" role="img" viewBox="0 0 {width} {height}"'
        f' width="{width}" height="{height}" aria-labelledby="{ident}-title {ident}-desc">',
        f'<title id="{ident}-title">{escape(title)}</title>',
        f'<desc id="{ident}-desc">{escape(desc)}</desc>',
    ]


def _empty(chart_id: str, title: str, message: str) -> Markup:
    parts = _open(chart_id, title, message, WIDTH, 60)
    parts.append(f'<text x="{WIDTH // 2}" y="35" text-anchor="middle" font-size="14" fill="#57606a">')
    parts.append(f"{escape(message)}</text></svg>")
    return Markup("".join(parts))


def _nice_max(value: float) -> float:
    """The smallest 1, 2 or 5 × 10ⁿ at or above `value` (an axis that ends on a round number)."""
    if value <= 0:
        return 1.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)


def bar_chart(chart_id: str, title: str, categories: Sequence[str], series: Sequence[Series]) -> Markup:
    """Horizontal grouped bars: one group per category, one bar per series, value at the bar's end."""
    values = [v for s in series for v in s.values]
    if not categories or not series or not any(values):
        return _empty(chart_id, title, "Nothing to show in this period.")
    top = _nice_max(max(values))
    group = ROW_HEIGHT * len(series) + 10
    legend = 24
    height = legend + group * len(categories) + 20
    plot = WIDTH - LABEL_WIDTH - 50
    said = "; ".join(
        f"{c}: " + ", ".join(f"{s.name} {_number(s.values[i])}" for s in series)
        for i, c in enumerate(categories)
    )
    parts = _open(chart_id, title, said, WIDTH, height)
    parts += _legend(series)
    for i, category in enumerate(categories):
        y0 = legend + i * group
        parts.append(
            f'<text x="{LABEL_WIDTH - 6}" y="{y0 + group / 2:.1f}" text-anchor="end" font-size="12"'
            f' dominant-baseline="middle" fill="#1b1f24">{escape(category)}</text>'
        )
        for j, s in enumerate(series):
            value = s.values[i]
            w = plot * value / top
            y = y0 + j * ROW_HEIGHT
            parts.append(
                f'<rect class="bar {escape(s.kind)}" x="{LABEL_WIDTH}" y="{y}" width="{w:.1f}"'
                f' height="{ROW_HEIGHT - 2}" fill="{COLOURS.get(s.kind, COLOURS["other"])}"/>'
            )
            parts.append(
                f'<text x="{LABEL_WIDTH + w + 4:.1f}" y="{y + ROW_HEIGHT / 2:.1f}" font-size="10"'
                f' dominant-baseline="middle" fill="#1b1f24">{_number(value)}</text>'
            )
    axis_y = legend + group * len(categories) + 2
    parts.append(
        f'<line x1="{LABEL_WIDTH}" y1="{legend}" x2="{LABEL_WIDTH}" y2="{axis_y}" stroke="#57606a"/>'
    )
    parts.append("</svg>")
    return Markup("".join(parts))


def column_chart(
    chart_id: str, title: str, labels: Sequence[str], series: Sequence[Series], every: int = 1
) -> Markup:
    """Stacked columns over time: one column per label (a time bucket); every `every`-th label shown."""
    totals = [sum(s.values[i] for s in series) for i in range(len(labels))]
    if not labels or not series or not any(totals):
        return _empty(chart_id, title, "Nothing to show in this period.")
    top = _nice_max(max(totals))
    legend, left, bottom = 24, 40, 22
    height = 220
    plot_h = height - legend - bottom
    plot_w = WIDTH - left - 10
    col_w = plot_w / len(labels)
    said = "; ".join(
        f"{label}: " + ", ".join(f"{s.name} {_number(s.values[i])}" for s in series)
        for i, label in enumerate(labels)
        if totals[i]
    )
    parts = _open(chart_id, title, said, WIDTH, height)
    parts += _legend(series)
    base = legend + plot_h
    for tick in (0.0, top / 2, top):
        y = base - plot_h * tick / top
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{WIDTH - 10}" y2="{y:.1f}" stroke="#d0d7de"/>')
        parts.append(
            f'<text x="{left - 4}" y="{y:.1f}" text-anchor="end" font-size="10" dominant-baseline="middle"'
            f' fill="#57606a">{_number(tick)}</text>'
        )
    for i, label in enumerate(labels):
        x = left + i * col_w
        y = float(base)
        for s in series:
            h = plot_h * s.values[i] / top
            if h > 0:
                y -= h
                parts.append(
                    f'<rect class="bar {escape(s.kind)}" x="{x + 1:.1f}" y="{y:.1f}"'
                    f' width="{max(col_w - 2, 1):.1f}" height="{h:.1f}"'
                    f' fill="{COLOURS.get(s.kind, COLOURS["other"])}"/>'
                )
        if i % every == 0:
            parts.append(
                f'<text x="{x + col_w / 2:.1f}" y="{height - 6}" text-anchor="middle" font-size="10"'
                f' fill="#57606a">{escape(label)}</text>'
            )
    parts.append("</svg>")
    return Markup("".join(parts))


def _legend(series: Sequence[Series]) -> list[str]:
    parts, x = [], LABEL_WIDTH
    for s in series:
        colour = COLOURS.get(s.kind, COLOURS["other"])
        parts.append(f'<rect x="{x}" y="6" width="10" height="10" fill="{colour}"/>')
        parts.append(f'<text x="{x + 14}" y="15" font-size="12" fill="#1b1f24">{escape(s.name)}</text>')
        x += 24 + 8 * len(s.name)
    return parts


def duration_label(seconds: float) -> str:
    """Seconds as people read them on an axis: 350 ms, 4.2 s, 3 min, 2.5 h."""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s".replace(".0 s", " s")
    if seconds < 3600:
        return f"{seconds / 60:.1f} min".replace(".0 min", " min")
    return f"{seconds / 3600:.1f} h".replace(".0 h", " h")


def journey_chart(chart_id: str, title: str, spans: Sequence[Span]) -> Markup:
    """A horizontal timeline: one bar per attempt from its creation to its last news, marks on it."""
    if not spans:
        return _empty(chart_id, title, "No attempt was made.")
    end = max(max(s.end, s.start, *(m[0] for m in s.marks)) for s in spans)
    end = end if end > 0 else 1.0
    top, row, left = 10, 28, LABEL_WIDTH + 30
    height = top + row * len(spans) + 30
    plot = WIDTH - left - 20
    said = "; ".join(
        f"{s.label}: from {duration_label(s.start)} to {duration_label(s.end)}, "
        + ", ".join(f"{what} at {duration_label(at)}" for at, what in s.marks)
        for s in spans
    )
    colours = {"ok": COLOURS["delivered"], "bad": COLOURS["failed"], "open": COLOURS["sent"]}
    parts = _open(chart_id, title, said, WIDTH, height)
    for i, s in enumerate(spans):
        y = top + i * row
        x0 = left + plot * s.start / end
        w = max(plot * (s.end - s.start) / end, 3.0)
        parts.append(
            f'<text x="{left - 6}" y="{y + 10}" text-anchor="end" font-size="12" dominant-baseline="middle"'
            f' fill="#1b1f24">{escape(s.label)}</text>'
        )
        parts.append(
            f'<rect class="span {escape(s.outcome)}" x="{x0:.1f}" y="{y + 3}" width="{w:.1f}" height="14"'
            f' rx="3" fill="{colours.get(s.outcome, COLOURS["other"])}"/>'
        )
        for at, what in s.marks:
            mx = left + plot * at / end
            parts.append(
                f'<circle cx="{mx:.1f}" cy="{y + 10}" r="4" fill="#ffffff" stroke="#1b1f24">'
                f"<title>{escape(what)} at {escape(duration_label(at))}</title></circle>"
            )
    base = top + row * len(spans) + 4
    parts.append(f'<line x1="{left}" y1="{base}" x2="{left + plot}" y2="{base}" stroke="#57606a"/>')
    for frac in (0.0, 0.5, 1.0):
        parts.append(
            f'<text x="{left + plot * frac:.1f}" y="{base + 16}" text-anchor="middle" font-size="10"'
            f' fill="#57606a">+{escape(duration_label(end * frac))}</text>'
        )
    parts.append("</svg>")
    return Markup("".join(parts))
