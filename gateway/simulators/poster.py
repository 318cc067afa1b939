"""Posting a simulated provider's webhooks: from worker threads, retried a little, and in order per message
(the next event of a message is scheduled only once the previous one was posted), as providers do."""

from __future__ import annotations

import heapq
import itertools
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any


@dataclass(frozen=True)
class _Chain:
    """Webhooks still to post for one message, in order."""

    url: str
    payloads: tuple[Any, ...]
    gap: float
    tries: int = 0


class OrderedPoster:
    """Calls `post(url, payload) -> bool` for each scheduled payload; one message's payloads in order."""

    def __init__(self, post: Callable[[str, Any], bool], workers: int = 3, retries: int = 2) -> None:
        self._post, self.retries = post, retries
        self._heap: list[tuple[float, int, _Chain]] = []
        self._order = itertools.count()
        self._due = threading.Condition()
        self._ready: queue.Queue[_Chain | None] = queue.Queue()
        self._stopping = False
        self._threads = [threading.Thread(target=self._schedule_loop, daemon=True)]
        self._threads += [threading.Thread(target=self._work, daemon=True) for _ in range(workers)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        with self._due:
            self._stopping = True
            self._due.notify_all()
        for _ in self._threads[1:]:
            self._ready.put(None)
        for thread in self._threads:
            thread.join(timeout=5)

    def clear(self) -> None:
        """Drop every webhook not yet being posted (a chain being posted may still schedule its next one)."""
        with self._due:
            self._heap.clear()
        while True:
            try:
                self._ready.get_nowait()
            except queue.Empty:
                return

    def schedule(self, delay: float, url: str, payloads: Sequence[Any], gap: float) -> None:
        """Post `payloads` to `url` one after the other, the first after `delay`, then every `gap`."""
        if payloads:
            self._push(delay, _Chain(url, tuple(payloads), gap))

    def _push(self, delay: float, chain: _Chain) -> None:
        with self._due:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), chain))
            self._due.notify()

    def _schedule_loop(self) -> None:
        with self._due:
            while not self._stopping:
                if self._heap and self._heap[0][0] <= time.monotonic():
                    self._ready.put(heapq.heappop(self._heap)[2])
                    continue
                self._due.wait(self._heap[0][0] - time.monotonic() if self._heap else None)

    def _work(self) -> None:
        while (chain := self._ready.get()) is not None:
            if not self._post(chain.url, chain.payloads[0]) and chain.tries < self.retries:
                self._push(0.1 * (chain.tries + 1), replace(chain, tries=chain.tries + 1))
            elif len(chain.payloads) > 1:
                # Only now the next event: a message's webhooks never overtake each other.
                self._push(chain.gap, replace(chain, payloads=chain.payloads[1:], tries=0))
