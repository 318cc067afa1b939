"""Request limits for clients: a token bucket per API key, and the shape of JSON bodies."""

from __future__ import annotations

import threading
import time

from gateway.errors import ProblemError

MAX_JSON_DEPTH = 32


class RateLimiter:
    """`rate` requests per second per key, with bursts of one second's worth, in this process."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.capacity = max(rate, 1.0)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def take(self, key: str) -> None:
        """Spend one request of `key`'s budget, or raise a 429 saying when to come back."""
        if self.rate <= 0:
            return
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.rate)
            if tokens >= 1:
                self._buckets[key] = (tokens - 1, now)
                return
            self._buckets[key] = (tokens, now)
        wait = (1 - tokens) / self.rate
        raise ProblemError(
            429,
            "rate-limited",
            "Too many requests",
            f"this API key may make {self.rate:g} requests per second",
            headers={"Retry-After": str(max(1, round(wait + 0.5)))},
        )


def json_depth(raw: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest (strings are skipped)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x7B, 0x5B):  # { [
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x7D, 0x5D):  # } ]
            depth -= 1
    return deepest
