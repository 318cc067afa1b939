"""`gateway.wake`: processes sharing an SQLite file wake each other's dispatchers through Unix sockets."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from gateway import notify, store, wake

ROOT = Path(__file__).resolve().parents[2]


def _listening(folder: Path) -> tuple[wake.WakeListener, threading.Event]:
    woken = threading.Event()
    listener = wake.WakeListener(str(folder), woken.set)
    assert listener.start()
    return listener, woken


def _wake_from_another_process(folder: Path) -> None:
    code = f"from gateway.wake import wake_peers; wake_peers({str(folder)!r})"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)


def test_another_process_wakes_a_listener_and_its_own_process_does_not(tmp_path: Path) -> None:
    folder = tmp_path / "gateway.db.wake"
    listener, woken = _listening(folder)
    try:
        assert Path(listener.path).parent == folder and Path(listener.path).is_socket()
        wake.wake_peers(str(folder))  # this process's dispatcher is nudged directly, not through its socket
        assert not woken.wait(0.5)
        _wake_from_another_process(folder)
        assert woken.wait(10)
    finally:
        listener.stop()
    assert not Path(listener.path).exists()  # a stopped listener leaves no socket behind


def test_a_socket_whose_process_is_gone_is_removed_by_the_next_wake_up(tmp_path: Path) -> None:
    folder = tmp_path / "gateway.db.wake"
    folder.mkdir()
    stale = folder / "999999-deadbeef"  # as a killed process leaves it: bound once, nobody reading
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as gone:
        gone.bind(str(stale))
    listener, woken = _listening(folder)
    try:
        _wake_from_another_process(folder)
        assert woken.wait(10)  # the live listener is still woken
        assert not stale.exists()
    finally:
        listener.stop()


def test_a_wake_up_to_nobody_changes_nothing(tmp_path: Path) -> None:
    wake.wake_peers(str(tmp_path / "never-listened.wake"))  # no folder: nothing to do, nothing raised
    assert not (tmp_path / "never-listened.wake").exists()


def test_a_socket_path_too_long_turns_wake_ups_off_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / ("d" * 120)
    listener = wake.WakeListener(str(folder), lambda: None)
    with caplog.at_level(logging.WARNING, logger="gateway.wake"):
        assert not listener.start()
    assert "too long for a Unix socket" in caplog.text
    listener.stop()  # stopping one that never started is harmless


def test_only_a_committed_transaction_wakes_the_other_processes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`notify.notify_due` on an SQLite file wakes at the commit, never on a rollback; in memory there is
    nobody to wake."""
    engine = create_engine(f"sqlite:///{tmp_path}/gateway.db")
    folder = wake.folder_for(engine)
    assert folder == f"{tmp_path}/gateway.db.wake"
    listener, woken = _listening(Path(folder))
    monkeypatch.setattr(wake, "_own_prefix", lambda: "another-process-")  # as if sent from elsewhere
    try:
        with pytest.raises(RuntimeError), store.transaction(engine) as session:
            notify.notify_due(session)
            raise RuntimeError("rolled back")
        assert not woken.wait(0.5)
        with store.transaction(engine) as session:
            notify.notify_due(session)
            assert not woken.wait(0.3)  # not before the commit: the woken worker would find nothing
        assert woken.wait(10)
    finally:
        listener.stop()
        engine.dispose()
    memory = create_engine("sqlite://")
    assert wake.folder_for(memory) is None and notify.listener_for(memory, lambda: None) is None


def test_a_wake_up_that_cannot_be_sent_is_dropped_not_raised(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`wake_peers` runs after a commit, where a failure could only be logged as a failed observation: one
    that cannot be sent is dropped quietly (the receiver's scheduler tick makes up for it)."""
    folder = tmp_path / "gateway.db.wake"
    listener, woken = _listening(folder)
    monkeypatch.setattr(wake, "_own_prefix", lambda: "another-process-")

    def no_sockets(*_: object) -> socket.socket:
        raise OSError(24, "Too many open files")

    try:
        monkeypatch.setattr(socket, "socket", no_sockets)  # the module gateway.wake makes its socket with
        wake.wake_peers(str(folder))
        assert not woken.wait(0.3)
    finally:
        monkeypatch.undo()
        listener.stop()
