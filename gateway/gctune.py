"""Garbage collection for the long-running processes (`gateway serve`, `gateway worker`, `wsgi:app`).

Python's cyclic collector walks every tracked object it holds on each full collection. After start-up
that is ~150,000 objects (modules, the Flask app, SQLAlchemy's mappers), none of them ever garbage: in an
SMS run of `gateway serve` the collector took 15% of the process's CPU, two thirds of that in full
collections of ~80 ms each, pauses that also delay sends and status callbacks. So, once started, the
processes collect what start-up left, move the survivors out of the collector's sight (`gc.freeze`), and
collect the young generation every 10,000 new container objects instead of every 700: requests and send
rounds allocate thousands of short-lived objects each, nearly all freed by reference counting anyway.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000  # Python's default is 700; the older generations keep theirs (10, 10)


def settle() -> None:
    """Call once, after start-up: collect, freeze the survivors, collect the young less often."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, middle, old)
