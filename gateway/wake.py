"""SQLite's stand-in for NOTIFY: processes sharing one database file wake each other's dispatchers.

A dispatcher on an SQLite file binds a Unix datagram socket in `<database>.wake/`, a folder beside the
database (as its writer lock, `<database>.writer`). An accept of a message due now sends, once its
transaction has committed, one byte to every other process's socket there, so a `gateway worker` beside
`gateway serve` claims an accepted message at once instead of on its next scheduler tick. A wake-up is only
a hint: a lost one costs at most that tick (`GATEWAY_DISPATCH_INTERVAL`), as before. A socket whose process
is gone (killed) answers "connection refused" and is removed by the first sender to find it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Callable

from sqlalchemy import Engine

log = logging.getLogger("gateway.wake")
LISTEN_WAIT = 0.1  # seconds a listener waits before it checks whether it should stop
MAX_SOCKET_PATH = 107  # bytes: a Unix socket's path, with its terminating NUL, fits in 108 on Linux


def sqlite_file(engine: Engine) -> str | None:
    """The path of the engine's SQLite database on disk; None for an in-memory one or another database."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        return None
    return None if database.startswith("file::memory:") else database


def folder_for(engine: Engine) -> str | None:
    """Where the dispatchers of this database listen; None when it is not an SQLite file."""
    database = sqlite_file(engine)
    return f"{database}.wake" if database else None


def _own_prefix() -> str:
    return f"{os.getpid()}-"


def wake_peers(folder: str) -> None:
    """Wake every other process's dispatcher listening in `folder`.

    Never raises: a wake-up that cannot be sent is one the receiver's scheduler tick makes up for."""
    try:
        names = os.listdir(folder)
    except OSError:
        return  # no dispatcher has listened on this database yet
    own = _own_prefix()
    peers = [os.path.join(folder, name) for name in names if not name.startswith(own)]
    if not peers:
        return  # only this process's dispatcher, which is nudged directly (`gw.nudge`)
    try:
        sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    except OSError as exc:  # out of file descriptors, say
        log.debug("could not wake the dispatchers in %s: %r", folder, exc)
        return
    with sender:
        sender.setblocking(False)
        for path in peers:
            try:
                sender.sendto(b"!", path)
            except BlockingIOError:
                pass  # its queue is full of wake-ups it has not read yet: it is being woken
            except (ConnectionRefusedError, FileNotFoundError):
                _remove_stale(path)
            except OSError as exc:
                log.debug("could not wake %s: %r", path, exc)


def _remove_stale(path: str) -> None:
    """Remove a socket nobody listens on any more (its process ended without removing it)."""
    with contextlib.suppress(OSError):  # another sender removed it first
        os.unlink(path)


class WakeListener:
    """A thread reading this process's socket in the folder; calls `wake` for every wake-up read."""

    def __init__(self, folder: str, wake: Callable[[], None]) -> None:
        self.folder = folder
        self.path = os.path.join(folder, f"{_own_prefix()}{secrets.token_hex(4)}")
        self._wake = wake
        self._stop = threading.Event()
        self._socket: socket.socket | None = None
        self._thread = threading.Thread(target=self._run, name="wake-listener", daemon=True)

    def start(self) -> bool:
        """Start listening; False (and a warning) when the socket cannot be made, e.g. a path too long:
        the dispatcher then finds other processes' work on its scheduler tick alone."""
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            log.warning("wake-ups between processes are off: %s is too long for a Unix socket", self.path)
            return False
        try:
            os.makedirs(self.folder, mode=0o700, exist_ok=True)
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            listener.bind(self.path)
        except OSError as exc:
            log.warning("wake-ups between processes are off: cannot listen at %s (%r)", self.path, exc)
            return False
        listener.settimeout(LISTEN_WAIT)
        self._socket = listener
        self._thread.start()
        return True

    def stop(self) -> None:
        self._stop.set()
        if self._socket is None:
            return
        self._thread.join(5)
        self._socket.close()
        _remove_stale(self.path)

    def _run(self) -> None:
        assert self._socket is not None
        while not self._stop.is_set():
            try:
                self._socket.recv(64)
            except TimeoutError:
                continue
            except OSError as exc:
                log.warning("wake-up socket failed (%r); waking on the scheduler tick alone", exc)
                return
            self._wake()
