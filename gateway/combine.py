"""Combining: calls from many threads that arrive while one is being written are written together.

Each caller queues its item. A caller that finds nobody writing becomes the writer: it takes every item
queued, writes them with one call of `write_many` (one transaction), hands the writer's part to the first
caller that queued meanwhile, and returns its own result. So requests arriving together share a
transaction, a lone request pays nothing extra, and there is no thread of its own to start or stop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class _Slot(Generic[T, R]):
    __slots__ = ("item", "ready", "lead", "result", "error")

    def __init__(self, item: T) -> None:
        self.item = item
        self.ready = threading.Lock()  # held until written or made the writer (cheaper than an Event)
        self.ready.acquire()
        self.lead = False  # woken to write, not with a result
        self.result: R | None = None
        self.error: BaseException | None = None


class Combiner(Generic[T, R]):
    """One queue of items and, at any moment, at most one caller writing them."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._queue: list[_Slot[T, R]] = []
        self._writing = False

    def submit(self, item: T, write_many: Callable[[Sequence[T]], Sequence[R | BaseException]]) -> R:
        """`item`'s result from `write_many` (called with it and whatever else is queued), or its error.

        `write_many` answers one result or exception per item, in order; an exception it raises is every
        item's error.
        """
        slot: _Slot[T, R] = _Slot(item)
        with self._lock:
            self._queue.append(slot)
            lead, self._writing = not self._writing, True
        if not lead:
            slot.ready.acquire()
            if not slot.lead:
                return self._outcome(slot)
        with self._lock:
            batch, self._queue = self._queue, []
        try:
            answers = write_many([s.item for s in batch])
            for s, answer in zip(batch, answers, strict=True):
                if isinstance(answer, BaseException):
                    s.error = answer
                else:
                    s.result = answer
        except BaseException as exc:  # noqa: BLE001 - it is every item's answer, raised in each caller
            for s in batch:
                s.error = exc
        finally:
            with self._lock:
                successor = self._queue[0] if self._queue else None
                if successor is None:
                    self._writing = False
                else:
                    successor.lead = True
            for s in batch:
                if s is not slot:
                    s.ready.release()
            if successor is not None:
                successor.ready.release()
        return self._outcome(slot)

    @staticmethod
    def _outcome(slot: _Slot[T, R]) -> R:
        if slot.error is not None:
            raise slot.error
        return slot.result  # type: ignore[return-value]
