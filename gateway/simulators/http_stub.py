"""A tiny HTTP stub server for the provider simulators: requests in as `Request`, answers out as `Reply`,
served by a threading HTTP/1.1 server on loopback; plus `post()` to call the gateway and `Later` to run
callbacks at their due time from one thread."""

from __future__ import annotations

import heapq
import http.client
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlsplit


@dataclass(frozen=True)
class Reply:
    """What the simulated API answers."""

    status: int
    body: Any = None  # JSON-able, or str for text bodies
    headers: Mapping[str, str] = field(default_factory=dict)
    content_type: str = "application/json"


@dataclass(frozen=True)
class Request:
    """One call to the simulated API."""

    method: str
    path: str
    query: dict[str, str]
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The JSON body; ValueError when it is not JSON."""
        return json.loads(self.body.decode() or "null")


def post(url: str, body: bytes, headers: Mapping[str, str], method: str = "POST") -> tuple[int, bytes]:
    """Call the gateway; a refused connection gives status 0."""
    request = urllib.request.Request(url, body if method != "GET" else None, dict(headers), method=method)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()
    except (OSError, ValueError, http.client.HTTPException):
        return 0, b""


class Later:
    """Runs jobs at their due time, in order, on one thread (so a message's receipts never overtake)."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, Callable[[], object]]] = []
        self._order = itertools.count()
        self._due = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def schedule(self, delay: float, job: Callable[[], object]) -> None:
        with self._due:
            heapq.heappush(self._heap, (time.monotonic() + delay, next(self._order), job))
            self._due.notify()

    def stop(self) -> None:
        with self._due:
            self._stopping = True
            self._due.notify()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            with self._due:
                while not self._stopping and (not self._heap or self._heap[0][0] > time.monotonic()):
                    self._due.wait(self._heap[0][0] - time.monotonic() if self._heap else None)
                if self._stopping:
                    return
                job = heapq.heappop(self._heap)[2]
            job()


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


class Handler(BaseHTTPRequestHandler):
    """Turns each HTTP request into a `Request` for `app` and writes its `Reply`."""

    protocol_version = "HTTP/1.1"
    timeout = 60
    app: Callable[[Request], Reply]

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: tests and the CLI print what matters."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = urlsplit(self.path)
        request = Request(method, parts.path, dict(parse_qsl(parts.query)), dict(self.headers.items()), body)
        try:
            reply = type(self).app(request)
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            reply = Reply(400, {"error": f"simulator could not read the request: {exc!r}"})
        data = reply.body.encode() if isinstance(reply.body, str) else json.dumps(reply.body).encode()
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def start_server(host: str, port: int, app: Callable[[Request], Reply]) -> Server:
    """Serve `app` from a daemon thread; port 0 picks a free port (see `server.server_address`)."""

    class AppHandler(Handler):
        """A handler bound to this server's app."""

    AppHandler.app = staticmethod(app)
    server = Server((host, port), AppHandler)
    # A short poll interval keeps shutdown (and so test teardown) quick.
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    return server


def bearer(request: Request) -> str:
    """The token of an `Authorization: Bearer …` (or `Bot …`) header."""
    value = next((v for k, v in request.headers.items() if k.lower() == "authorization"), "")
    return value.split(" ", 1)[1] if " " in value else ""


def header_of(request: Request, name: str) -> str:
    return next((v for k, v in request.headers.items() if k.lower() == name.lower()), "")
