"""Clock, durations and RFC 3339 formatting. Every time is timezone-aware UTC."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], datetime]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def utcnow() -> datetime:
    """Now, as aware UTC."""
    return datetime.now(UTC)


def parse_duration(value: object) -> float:
    """Parse `"90s"`, `"2m"`, `"1h"`, `"7d"`, `"500ms"` or a number of seconds into seconds."""
    if isinstance(value, bool):
        raise ValueError("must be a duration like '90s', '2m', '1h', '7d' or a number of seconds")
    if isinstance(value, int | float):
        if not math.isfinite(value):
            raise ValueError("must be a finite duration")
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _UNITS[match.group(2) or "s"]
    raise ValueError("must be a duration like '90s', '2m', '1h', '7d' or a number of seconds")


def format_duration(seconds: float) -> str:
    """Render seconds the way rules write them."""
    for unit in ("d", "h", "m"):
        size = _UNITS[unit]
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:.3f}".rstrip("0").rstrip(".") + "s"


def rfc3339(value: datetime | None) -> str | None:
    """Format a time as `2026-11-28T12:00:00Z` (milliseconds when present)."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    value = value.replace(tzinfo=None)
    text = value.isoformat(timespec="milliseconds" if value.microsecond else "seconds")
    return text + "Z"


def parse_rfc3339(text: str) -> datetime:
    """Parse an RFC 3339 time into aware UTC; a time without offset is rejected."""
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if parsed.tzinfo is None:
        raise ValueError("must be an RFC 3339 time with an offset, e.g. 2026-12-01T00:00:00Z")
    return parsed.astimezone(UTC)


def add_seconds(value: datetime, seconds: float) -> datetime:
    return value + timedelta(seconds=seconds)
