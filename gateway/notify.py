"""PostgreSQL LISTEN/NOTIFY: an accepted message wakes idle workers on other machines at once (on an SQLite
file, `gateway.wake` does the same for the processes sharing it)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import psycopg
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url
from sqlmodel import Session

from gateway import store, wake

CHANNEL = "gateway_due"
log = logging.getLogger("gateway.notify")


def notify_due(session: Session) -> None:
    """Tell listening workers there is work, once the surrounding transaction commits: PostgreSQL's
    NOTIFY, or on an SQLite file a wake-up to the other processes' dispatchers (`gateway.wake`)."""
    engine = session.get_bind().engine
    if engine.dialect.name == "postgresql":
        session.execute(text(f"NOTIFY {CHANNEL}"))
        return
    folder = wake.folder_for(engine)
    if folder is not None:
        store.after_commit(session, lambda: wake.wake_peers(folder))


def listener_for(engine: Engine, wake_up: Callable[[], None]) -> DueListener | wake.WakeListener | None:
    """What wakes a dispatcher on `engine` when another process makes work due (None: in-memory SQLite,
    one process)."""
    if engine.dialect.name == "postgresql":
        return DueListener(engine, wake_up)
    folder = wake.folder_for(engine)
    return wake.WakeListener(folder, wake_up) if folder else None


LISTEN_WAIT = wake.LISTEN_WAIT  # seconds the LISTEN connection waits before it checks whether it should stop


class DueListener:
    """A thread holding one LISTEN connection; calls `wake` on every notification."""

    def __init__(self, engine: Engine, wake: Callable[[], None]) -> None:
        url = make_url(engine.url).set(drivername="postgresql")
        self._conninfo = url.render_as_string(hide_password=False)
        self._wake = wake
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="due-listener", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True) as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    while not self._stop.is_set():
                        # A short wait, so that stopping (every worker stop, every test) takes no second.
                        for _ in conn.notifies(timeout=LISTEN_WAIT):
                            self._wake()
                            if self._stop.is_set():
                                break
            except psycopg.Error as exc:
                log.warning("LISTEN connection lost (%s); retrying", type(exc).__name__)
                self._stop.wait(1.0)
