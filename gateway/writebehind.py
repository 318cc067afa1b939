"""Write-behind for the dispatcher: finished sends are recorded many to a transaction.

A send's outcome waits here for at most `max_wait` seconds (or until `max_batch` have gathered, or
the previous write has ended), then one call of `write` records the whole batch. Nothing is final
before `write` returns: until then the message is still claimed (its attempt `sending`), so a process
killed with outcomes waiting loses no message; the lease runs out and the attempt is sent again, the
same duplicate a kill during the provider call would cause.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class WriteBehind(Generic[T]):
    """Collects items and hands them to `write` in batches, one write at a time."""

    def __init__(self, write: Callable[[list[T]], Awaitable[None]], max_batch: int, max_wait: float) -> None:
        self._write = write
        self._max_batch = max_batch
        self._max_wait = max_wait
        self._items: list[T] = []
        self._writing = 0
        self._ready = asyncio.Event()
        self._full = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def pending(self) -> int:
        """Items not yet written (waiting, or in the write under way)."""
        return len(self._items) + self._writing

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    def add(self, item: T) -> None:
        self._items.append(item)
        self._ready.set()
        if len(self._items) >= self._max_batch:
            self._full.set()

    async def drain(self) -> None:
        """Write everything waiting, then stop (for shutdown)."""
        self._stopping = True
        self._ready.set()
        self._full.set()
        if self._task is not None:
            await self._task
            self._task = None
        while self._items:  # never started
            await self._write_some()

    async def _run(self) -> None:
        while not (self._stopping and not self._items):
            if not self._items:
                await self._ready.wait()
                continue
            if len(self._items) < self._max_batch and not self._stopping:
                with contextlib.suppress(TimeoutError):  # let sends finishing together share the write
                    await asyncio.wait_for(self._full.wait(), self._max_wait)
            await self._write_some()

    async def _write_some(self) -> None:
        batch, self._items = self._items[: self._max_batch], self._items[self._max_batch :]
        if not self._items:
            self._ready.clear()
            self._full.clear()
        self._writing = len(batch)
        try:
            await self._write(batch)  # `write` handles its own errors
        finally:
            self._writing = 0
