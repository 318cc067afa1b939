"""Combining: concurrent calls written together, each with its own answer, none lost or written twice."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import pytest

from gateway.combine import Combiner


class Ledger:
    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.lock = threading.Lock()

    def write(self, items: Sequence[int]) -> list[int | BaseException]:
        time.sleep(0.002)  # long enough for callers to queue behind the writer
        with self.lock:
            self.batches.append(list(items))
        return [ValueError(f"bad {i}") if i % 97 == 0 else i * 2 for i in items]


def test_concurrent_calls_share_writes_and_each_gets_its_own_answer() -> None:
    combiner: Combiner[int, int] = Combiner()
    ledger = Ledger()
    answers: dict[int, int | str] = {}

    def caller(base: int) -> None:
        for i in range(base, base + 100):
            try:
                answers[i] = combiner.submit(i, ledger.write)
            except ValueError as exc:
                answers[i] = str(exc)

    threads = [threading.Thread(target=caller, args=(1 + 1000 * t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    written = sorted(i for batch in ledger.batches for i in batch)
    assert written == sorted(answers) and len(written) == 800  # every item once
    for i, answer in answers.items():
        assert answer == (f"bad {i}" if i % 97 == 0 else i * 2)
    assert max(len(b) for b in ledger.batches) > 1
    assert len(ledger.batches) < 800


def test_a_failed_write_fails_its_batch_and_the_next_call_writes_again() -> None:
    combiner: Combiner[int, int] = Combiner()

    def broken(items: Sequence[int]) -> list[int | BaseException]:
        raise RuntimeError("database gone")

    with pytest.raises(RuntimeError, match="database gone"):
        combiner.submit(1, broken)
    assert combiner.submit(2, lambda items: [i + 1 for i in items]) == 3
