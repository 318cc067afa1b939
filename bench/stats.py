"""Summaries: a figure is the median of several runs with its spread; a ratio pairs runs of one invocation."""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence
from typing import Any


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def figure(runs: Sequence[float], unit: str) -> dict[str, Any]:
    """Median of the runs with min and max as its spread."""
    clean = [float(r) for r in runs if r is not None and math.isfinite(r)]
    if not clean:
        return {"median": None, "min": None, "max": None, "runs": [], "unit": unit}
    return {
        "median": statistics.median(clean),
        "min": min(clean),
        "max": max(clean),
        "runs": [round(r, 4) for r in clean],
        "unit": unit,
    }


def ratio(numerators: Sequence[float], denominators: Sequence[float]) -> dict[str, Any]:
    """Per-run ratios (run i over run i of the other side), summarised as a figure."""
    pairs = [n / d for n, d in zip(numerators, denominators, strict=False) if n is not None and d]
    return figure(pairs, "×")


def latency_ms(samples: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max of latencies given in seconds, in milliseconds."""
    return {
        "p50": percentile(samples, 50) * 1000,
        "p90": percentile(samples, 90) * 1000,
        "p99": percentile(samples, 99) * 1000,
        "max": (max(samples) * 1000) if samples else math.nan,
        "count": len(samples),
    }


def rate(count: int, start: float, end: float) -> float:
    """Messages per second over [start, end]; NaN when the window is empty."""
    return count / (end - start) if end > start else math.nan


def fmt(value: float | None, digits: int = 0) -> str:
    """A number for a table: thousands separated, '–' when missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if digits == 0 and abs(value) >= 10:
        return f"{value:,.0f}"
    if abs(value) < 10 and digits == 0:
        return f"{value:,.2f}" if abs(value) < 1 else f"{value:,.1f}"
    return f"{value:,.{digits}f}"


def fmt_figure(fig: dict[str, Any] | None, digits: int = 0) -> str:
    """'median (min–max)' for a table cell."""
    if not fig or fig.get("median") is None:
        return "–"
    if fig["min"] == fig["max"]:
        return fmt(fig["median"], digits)
    return f"{fmt(fig['median'], digits)} ({fmt(fig['min'], digits)}–{fmt(fig['max'], digits)})"
