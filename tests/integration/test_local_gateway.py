"""`LocalGateway` (the demo's and the tests' gateway): an idle one waits, and stopping it ends its server."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gateway.local import LocalGateway


def _cpu_seconds(thread_id: int) -> float:
    return time.clock_gettime(time.pthread_getcpuclockid(thread_id))


def test_an_idle_local_gateway_waits_instead_of_polling(tmp_path: Path) -> None:
    local = LocalGateway({"database_url": f"sqlite:///{tmp_path}/g.db"}, with_dispatcher=False).start()
    try:
        assert local._thread is not None and local._thread.ident is not None
        serving = local._thread.ident
        assert local.call("GET", "/healthz").status == 200
        before = _cpu_seconds(serving)
        time.sleep(1.0)
        used = _cpu_seconds(serving) - before
    finally:
        local.stop()
    # Waiting costs next to nothing; a loop polling without a timeout (waitress reads its loop timeout as
    # an int, so 0.1 became 0) kept a CPU busy the whole second.
    assert used < 0.2, f"the serving thread used {used:.2f} s of CPU in an idle second"
    assert not local._thread.is_alive()


def test_stopping_closes_the_open_connections_and_ends_the_serving_thread(tmp_path: Path) -> None:
    import http.client

    local = LocalGateway({"database_url": f"sqlite:///{tmp_path}/g.db"}, with_dispatcher=False).start()
    host, port = local.url.removeprefix("http://").split(":")
    kept = http.client.HTTPConnection(host, int(port), timeout=5)  # a keep-alive connection left open
    kept.request("GET", "/healthz")
    assert kept.getresponse().status == 200
    local.stop()
    assert local._thread is not None and not local._thread.is_alive()
    try:  # the server closed it: nothing answers any more
        kept.request("GET", "/healthz")
        answered = kept.getresponse().status
    except (ConnectionError, http.client.HTTPException):
        answered = None
    kept.close()
    assert answered is None


def test_the_dispatcher_runs_on_the_event_loop_the_setting_names(tmp_path: Path) -> None:
    import uvloop

    seen = {}
    for name in ("uvloop", "asyncio"):
        settings = {"database_url": f"sqlite:///{tmp_path}/{name}.db", "event_loop": name}
        local = LocalGateway(settings).start()
        try:
            assert local.dispatcher is not None and local.dispatcher._loop is not None
            seen[name] = type(local.dispatcher._loop)
        finally:
            local.stop()
    assert issubclass(seen["uvloop"], uvloop.Loop)
    assert not issubclass(seen["asyncio"], uvloop.Loop)


def test_without_uvloop_the_dispatcher_falls_back_to_asyncios_loop(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from gateway.dispatch import loop_factory

    assert loop_factory("uvloop") is not None
    assert loop_factory("asyncio") is None
    monkeypatch.setitem(sys.modules, "uvloop", None)  # as where it is not installed: importing it fails
    assert loop_factory("uvloop") is None
