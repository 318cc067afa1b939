"""Processes on loopback: free ports, subprocesses that are ready when a probe says so, peak memory, CPU."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
# Where the gateway's code comes from: this checkout, or a snapshot of a commit (`--gateway-ref`).
GATEWAY_ROOT = ROOT


def use_gateway_snapshot(ref: str, into: Path) -> str:
    """Extract the gateway's code at `ref` into `into` and run every process from it; returns the commit."""
    global GATEWAY_ROOT
    sha = subprocess.run(
        ["git", "rev-parse", "--short", ref], cwd=ROOT, capture_output=True, text=True, check=True
    )
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(["git", "archive", ref, "gateway", "fallbacks", "wsgi.py", "config"], cwd=ROOT,
                               stdout=subprocess.PIPE)  # fmt: skip
    subprocess.run(["tar", "-x", "-C", str(into)], stdin=archive.stdout, check=True)
    if archive.wait() != 0:
        raise RuntimeError(f"git archive {ref} failed")
    GATEWAY_ROOT = into
    sys.path.insert(0, str(into))
    return sha.stdout.strip()


def _die_with_parent() -> None:
    """In the child, before exec: ask Linux to SIGTERM it when the bench process dies (PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass  # not Linux: children are still stopped by the bench when it ends normally


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cpu_seconds(pids: Iterable[int]) -> float:
    """CPU time (user + system) these processes and their live descendants (gunicorn's workers) have
    used so far, read from /proc; 0 where /proc is missing or a process is gone."""
    ticks, parent = {}, {}
    for entry in Path("/proc").iterdir() if Path("/proc/self/stat").exists() else ():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # ended while we looked
        pid = int(entry.name)
        parent[pid], ticks[pid] = int(fields[1]), int(fields[11]) + int(fields[12])
    wanted, found = set(pids), 0
    for pid in ticks:
        ancestor = pid
        while ancestor > 1 and ancestor not in wanted:
            ancestor = parent.get(ancestor, 0)
        if ancestor in wanted:
            found += ticks[pid]
    return found / os.sysconf("SC_CLK_TCK")


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without GATEWAY_* variables, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    # The gateway from GATEWAY_ROOT first, then this checkout for the bench package itself.
    env["PYTHONPATH"] = os.pathsep.join([str(GATEWAY_ROOT), str(ROOT), env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@dataclass
class Proc:
    """A subprocess whose output goes to a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def output(self, tail: int = 4000) -> str:
        try:
            return self.log.read_text(errors="replace")[-tail:]
        except OSError:
            return ""

    def peak_rss_mb(self) -> float | None:
        """The process's peak resident memory (VmHWM) in MiB, while it still runs."""
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        try:
            import psutil  # type: ignore[import-untyped]

            return float(psutil.Process(self.pid).memory_info().rss) / 2**20
        except Exception:  # noqa: BLE001 - memory is a bonus figure, never a reason to fail a run
            return None

    def stop(self, timeout: float = 20.0) -> int | None:
        """SIGTERM, wait, then SIGKILL; returns the exit code."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode


def spawn(
    name: str,
    argv: list[str],
    env: dict[str, str],
    logdir: Path,
    ready: Callable[[], bool] | None = None,
    timeout: float = 60.0,
    cwd: Path | None = None,
) -> Proc:
    """Start `argv`; wait until `ready()` is true (raising with the log tail if it dies first)."""
    logdir.mkdir(parents=True, exist_ok=True)
    log = logdir / f"{name}.log"
    with log.open("wb") as out:
        popen = subprocess.Popen(
            argv,
            env=env,
            cwd=cwd or GATEWAY_ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent,
        )
    proc = Proc(name, popen, log)
    deadline = time.monotonic() + timeout
    while ready is not None and not ready():
        if not proc.alive():
            raise RuntimeError(f"{name} exited with {popen.returncode}:\n{proc.output()}")
        if time.monotonic() > deadline:
            proc.stop()
            raise RuntimeError(f"{name} was not ready within {timeout}s:\n{proc.output()}")
        time.sleep(0.05)
    return proc


def http_ok(port: int, path: str = "/healthz") -> Callable[[], bool]:
    def probe() -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    return probe


def log_says(proc_log: Path, text: str) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            return text in proc_log.read_text(errors="replace")
        except OSError:
            return False

    return probe


def run_json(argv: list[str], env: dict[str, str], timeout: float, cwd: Path | None = None) -> Any:
    """Run a peer to completion and parse the last line it prints as JSON."""
    done = subprocess.run(
        argv,
        env=env,
        cwd=cwd or GATEWAY_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=_die_with_parent,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{argv[:4]} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
    return json.loads(done.stdout.strip().splitlines()[-1])


class Api:
    """A keep-alive JSON client for the gateway (one connection; not thread-safe)."""

    def __init__(self, port: int, key: str = "", timeout: float = 120.0) -> None:
        self.port, self.key, self.timeout = port, key, timeout
        self._conn: http.client.HTTPConnection | None = None

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
            try:
                self._conn.request(method, path, data, headers)
                response = self._conn.getresponse()
                payload = response.read()
                return response.status, (json.loads(payload) if payload else None)
            except (http.client.HTTPException, ConnectionError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
