"""The SQLite writer lock: threads of a process and processes (an flock beside the database) take turns."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from gateway.store import _SqliteWriter


def test_a_second_holder_of_the_file_waits_for_the_first(tmp_path: Path) -> None:
    path = str(tmp_path / "gateway.db.writer")
    first, second = _SqliteWriter(path), _SqliteWriter(path)  # two open files: as two processes
    assert first.acquire(1.0)
    assert first.acquire(1.0)  # re-entrant in its thread
    started = time.monotonic()
    assert not second.acquire(0.2)
    assert time.monotonic() - started >= 0.2
    first.release()
    assert not second.acquire(0.05)  # still held once
    first.release()
    assert second.acquire(1.0)
    second.release()


def test_a_waiter_goes_as_soon_as_the_file_is_free(tmp_path: Path) -> None:
    path = str(tmp_path / "gateway.db.writer")
    first, second = _SqliteWriter(path), _SqliteWriter(path)
    held = threading.Event()
    released_at: list[float] = []

    def hold_then_let_go() -> None:
        assert first.acquire(1.0)
        held.set()
        time.sleep(0.1)
        released_at.append(time.monotonic())
        first.release()

    thread = threading.Thread(target=hold_then_let_go)
    thread.start()
    held.wait(5)
    assert second.acquire(5.0)
    waited = time.monotonic() - released_at[0]
    second.release()
    thread.join()
    assert waited < 0.08  # SQLite's own wait sleeps up to 100 ms between tries


def test_in_memory_databases_need_no_file(tmp_path: Path) -> None:
    writer = _SqliteWriter(None)
    assert writer.acquire(1.0)
    writer.release()
    assert list(tmp_path.iterdir()) == []
