"""Per-channel pacing shared by every dispatcher: the gateway paces itself instead of collecting 429s.

Each paced send reserves the channel's next free slot in the database (one row per channel, locked for
the instant of the reservation), then sleeps until that slot. The database is already the one thing all
workers share, so pacing needs no other service; slots are wall-clock times, so the workers' machines
must keep their clocks in sync (NTP). A channel with rate 0 is not paced and costs no query.
"""

from __future__ import annotations

import asyncio
import time

from sqlmodel import select

from gateway import store
from gateway.core import Gateway
from gateway.models import ChannelPace

LATE_RETRIES = 3


class SharedPacer:
    """Spaces sends on one channel to at most `rate` per second across all dispatchers."""

    def __init__(self, gw: Gateway, channel: str, rate: float) -> None:
        self.gw = gw
        self.channel = channel
        self.interval = 1.0 / rate if rate > 0 else 0.0

    async def wait(self) -> None:
        """Return when this process may make its next call on the channel."""
        if not self.interval:
            return
        for _ in range(LATE_RETRIES):
            slot = await asyncio.to_thread(self.reserve)
            delay = slot - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if time.time() - slot <= self.interval:
                return
            # Woken more than a slot late (a busy event loop): sending now would bunch up with the
            # sends of later slots, so take a fresh slot instead.

    def reserve(self) -> float:
        """Take the channel's next slot; return when it starts (unix seconds)."""
        for _ in range(2):  # two dispatchers may race to create the row once
            try:
                with store.transaction(self.gw.engine) as session:
                    query = select(ChannelPace).where(ChannelPace.channel == self.channel).with_for_update()
                    row = session.exec(query).first()
                    if row is None:
                        row = ChannelPace(channel=self.channel, next_slot=0.0)
                        session.add(row)
                    slot = max(time.time(), row.next_slot)
                    row.next_slot = slot + self.interval
                    return slot
            except store.IntegrityError:
                continue
        raise RuntimeError(f"could not reserve a send slot on {self.channel}")
