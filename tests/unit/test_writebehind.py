"""The dispatcher's write-behind hands every item to its writer once, in order, in bounded batches."""

from __future__ import annotations

import asyncio

from gateway.writebehind import WriteBehind


def test_every_item_is_written_once_in_order_and_drain_flushes_the_rest() -> None:
    batches: list[list[int]] = []

    async def write(batch: list[int]) -> None:
        batches.append(batch)
        await asyncio.sleep(0)

    async def main() -> int:
        behind: WriteBehind[int] = WriteBehind(write, max_batch=3, max_wait=60.0)
        behind.start()
        for i in range(7):
            behind.add(i)
        pending = behind.pending
        await behind.drain()
        return pending

    assert asyncio.run(main()) == 7
    assert [i for batch in batches for i in batch] == list(range(7))
    assert all(1 <= len(batch) <= 3 for batch in batches)


def test_a_full_batch_is_written_without_waiting_for_max_wait() -> None:
    written = asyncio.Event()

    async def write(batch: list[int]) -> None:
        written.set()

    async def main() -> None:
        behind: WriteBehind[int] = WriteBehind(write, max_batch=2, max_wait=3600.0)
        behind.start()
        behind.add(1)
        behind.add(2)
        await asyncio.wait_for(written.wait(), 600)  # a batch waiting for max_wait would take an hour
        await behind.drain()

    asyncio.run(main())


def test_drain_without_start_writes_what_was_added() -> None:
    batches: list[list[str]] = []

    async def write(batch: list[str]) -> None:
        batches.append(batch)

    async def main() -> None:
        behind: WriteBehind[str] = WriteBehind(write, max_batch=10, max_wait=0.0)
        behind.add("a")
        await behind.drain()

    asyncio.run(main())
    assert batches == [["a"]]
