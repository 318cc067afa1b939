"""`python -m bench.loadgen` against a plain keep-alive HTTP server: it opens its connections `--stagger`
seconds apart and keeps each open for all its requests, which the accept case relies on to share the
connections between gunicorn's workers. Checks what the load generator does, never how fast anything is."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


class _Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    opened: list[float] = []
    requests: list[str] = []

    def setup(self) -> None:  # once a connection
        super().setup()
        self.opened.append(time.monotonic())

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.rfile.read(length)
        self.requests.append(self.path)
        body = b'{"status":"queued"}'
        self.send_response(202)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        return


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    _Recorder.opened, _Recorder.requests = [], []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def test_connections_are_opened_apart_and_kept_for_every_request(server: ThreadingHTTPServer) -> None:
    argv = [sys.executable, "-m", "bench.loadgen", "--port", str(server.server_address[1]), "--key", "k"]
    argv += ["--conns", "3", "--seconds", "0.6", "--warmup", "0", "--stagger", "0.2"]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    opened = sorted(_Recorder.opened)
    assert len(opened) == 3  # one connection each, kept for all their requests
    assert all(later - earlier >= 0.19 for earlier, later in zip(opened, opened[1:], strict=False)), opened
    assert result["errors"] == 0 and result["requests"] > 3
    assert set(_Recorder.requests) == {"/v1/messages"}
