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


_NOT_BRACKETS = bytes(sorted(set(range(256)) - set(b"{}[]")))


def json_depth(raw: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest (brackets inside strings do not count).

    The strings are cut out in C first (escaped backslashes and quotes removed, then every other piece
    between quotes), so the loop sees only the brackets outside them: a few a message, not every byte.
    In valid JSON a backslash is only ever in a string; in other text, parsing fails where one is not."""
    unescaped = raw.replace(b"\\\\", b"").replace(b'\\"', b"")
    outside = b"".join(unescaped.split(b'"')[::2]).translate(None, _NOT_BRACKETS)
    depth = deepest = 0
    for byte in outside:
        if byte in (0x7B, 0x5B):  # { [
            depth += 1
            if depth > deepest:
                deepest = depth
        else:  # } ]
            depth -= 1
    return deepest
