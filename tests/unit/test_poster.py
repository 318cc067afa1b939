"""The simulators' webhook poster: one message's webhooks in order; `clear` drops what is not yet posted."""

from __future__ import annotations

import threading
import time

from gateway.simulators.poster import OrderedPoster


class Recorder:
    def __init__(self) -> None:
        self.posted: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def __call__(self, url: str, payload: str) -> bool:
        with self.lock:
            self.posted.append((url, payload))
        return True


def wait_for(check: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def test_one_messages_webhooks_are_posted_in_order() -> None:
    recorder = Recorder()
    poster = OrderedPoster(recorder, workers=3)
    poster.start()
    try:
        poster.schedule(0.0, "a", ["sent", "delivered", "read"], 0.01)
        assert wait_for(lambda: len(recorder.posted) == 3)
        assert [p for _, p in recorder.posted] == ["sent", "delivered", "read"]
    finally:
        poster.stop()


def test_clear_drops_webhooks_not_yet_posted_and_later_ones_still_go() -> None:
    recorder = Recorder()
    poster = OrderedPoster(recorder, workers=3)
    poster.start()
    try:
        for i in range(50):
            poster.schedule(0.3, f"m{i}", ["sent", "delivered"], 0.01)
        poster.clear()
        time.sleep(0.6)
        assert recorder.posted == []
        poster.schedule(0.0, "after", ["sent"], 0.01)
        assert wait_for(lambda: recorder.posted == [("after", "sent")])
    finally:
        poster.stop()
