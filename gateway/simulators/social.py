"""What the social-channel simulators share: a threaded HTTP server on loopback, per-recipient behaviours,
a record of accepted messages, and signed webhooks posted to the gateway (now, or later from a thread).

A simulator subclass implements `route()` (the provider's API) and `signed()` (how the provider signs a
webhook). Recipients pick their fate by convention, as the Twilio simulator's numbers do: a recipient id
that starts with a behaviour name and a dash (`blocked-42`, `rate_limited-7`) gets that error, `silent-…`
is accepted without receipts, `slow-…` answers after `slow_latency`; `set_behaviour()` overrides this.
Every simulator also answers `GET /_sim/messages`, `POST /_sim/behaviours` and `POST /_sim/reset`.
"""

from __future__ import annotations

import itertools
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, Literal, Self
from urllib.parse import urlencode

from gateway.simulators.http_stub import Later, Reply, Request, Server, post, start_server


@dataclass(frozen=True)
class Behaviour:
    """What a simulator does with sends to one recipient."""

    # deliver: accepted (with receipts where the provider has them); read: delivered, then seen;
    # error: the provider's error named `error`; silence: accepted, no receipts ever.
    kind: Literal["deliver", "read", "error", "silence"] = "deliver"
    error: str | None = None
    latency: float = 0.0
    # Fail with `error` only on the first N sends, then deliver; None fails every time.
    fail_times: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("deliver", "read", "error", "silence"):
            raise ValueError(f"unknown behaviour kind {self.kind!r}")
        if self.kind == "error" and not self.error:
            raise ValueError("an error behaviour needs an error name")


class SocialSimulator(ABC):
    """Base of the provider simulators; subclasses set `name` and `errors` and implement `route`."""

    name: ClassVar[str]
    errors: ClassVar[tuple[str, ...]]  # behaviour names a recipient may start with

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        webhook_url: str | None = None,
        callback_delay: float = 0.05,
        slow_latency: float = 2.0,
    ) -> None:
        self.host, self.port = host, port
        self.webhook_url = webhook_url
        self.callback_delay, self.slow_latency = callback_delay, slow_latency
        self.messages: list[dict[str, Any]] = []
        self.webhook_answers: list[int] = []  # statuses the gateway answered our webhooks with
        self._behaviours: dict[str, Behaviour] = {}
        self._attempts: Counter[str] = Counter()
        self._tries: dict[str, list[float]] = {}  # recipient -> time.monotonic() of each send request
        self._failures: Counter[str] = Counter()
        self._ids = itertools.count(1)
        self.lock = threading.RLock()
        self._server: Server | None = None
        self._later: Later | None = None

    # -- life cycle ------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> Self:
        """Listen and serve from a daemon thread; port 0 picks a free port."""
        self._server = start_server(self.host, self.port, self.handle)
        self.port = self._server.server_address[1]
        self._later = Later()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._later is not None:
            self._later.stop()
            self._later = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def connect(self, gateway_url: str) -> Self:
        """Post webhooks to this gateway's `/webhooks/<name>`."""
        self.webhook_url = f"{gateway_url.rstrip('/')}/webhooks/{self.name}"
        return self

    # -- behaviours and records ------------------------------------------------------------------

    def set_behaviour(self, recipient: str, behaviour: Behaviour) -> None:
        with self.lock:
            self._behaviours[recipient] = behaviour
            self._failures[recipient] = 0

    def reset(self) -> None:
        with self.lock:
            self.messages.clear()
            self._behaviours.clear()
            self._attempts.clear()
            self._tries.clear()
            self._failures.clear()

    def sends_to(self, recipient: str) -> int:
        """Authenticated send requests to `recipient`, those answered with an error included."""
        with self.lock:
            return self._attempts[recipient]

    def send_times(self, recipient: str) -> list[float]:
        """When (time.monotonic()) each send request to `recipient` arrived."""
        with self.lock:
            return list(self._tries.get(recipient, []))

    def snapshot(self) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(m) for m in self.messages]

    def default_behaviour(self, recipient: str) -> Behaviour:
        """The behaviour a recipient id asks for by its prefix."""
        for name in sorted(self.errors, key=len, reverse=True):
            if recipient == name or recipient.startswith(name + "-"):
                return Behaviour("error", name)
        if recipient.startswith("silent-"):
            return Behaviour("silence")
        if recipient.startswith("reader-"):
            return Behaviour("read")
        if recipient.startswith("slow-"):
            return Behaviour("deliver", latency=self.slow_latency)
        return Behaviour()

    def outcome(self, recipient: str) -> Behaviour:
        """Count a send to `recipient`, wait its latency, and say what happens to it."""
        with self.lock:
            self._attempts[recipient] += 1
            self._tries.setdefault(recipient, []).append(time.monotonic())
            behaviour = self._behaviours.get(recipient) or self.default_behaviour(recipient)
            if behaviour.kind == "error" and behaviour.fail_times is not None:
                if self._failures[recipient] >= behaviour.fail_times:
                    behaviour = Behaviour("deliver", latency=behaviour.latency)
                else:
                    self._failures[recipient] += 1
        time.sleep(behaviour.latency)
        return behaviour

    def record(self, **fields: Any) -> dict[str, Any]:
        """Remember an accepted message; it gets a sequential `id` and `received_at`."""
        with self.lock:
            entry = {"id": next(self._ids), **fields, "received_at": datetime.now(UTC).isoformat()}
            self.messages.append(entry)
            return entry

    def next_id(self) -> int:
        with self.lock:
            return next(self._ids)

    # -- webhooks to the gateway -----------------------------------------------------------------

    @abstractmethod
    def signed(self, body: bytes, query: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
        """Headers and query parameters that sign `body` as the provider does."""

    def post_webhook(
        self,
        body: bytes,
        content_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        query: dict[str, str] | None = None,
    ) -> int:
        """POST a signed webhook to the gateway now; returns the HTTP status (0: not reachable).
        Extra `headers`/`query` replace the signed ones (tests forge signatures this way)."""
        if not self.webhook_url:
            raise RuntimeError(f"{self.name} simulator has no webhook_url (call connect())")
        signed_headers, signed_query = self.signed(body, dict(query or {}))
        all_headers = {"Content-Type": content_type, **signed_headers, **(headers or {})}
        params = {**signed_query, **(query or {})}
        url = self.webhook_url + (f"?{urlencode(params)}" if params else "")
        status, answer = post(url, body, all_headers)
        with self.lock:
            self.webhook_answers.append(status)
        self.webhook_answered(status, answer)
        return status

    def webhook_answered(self, status: int, body: bytes) -> None:
        """What the gateway answered a webhook with; a provider that reads answers overrides this."""
        return None

    def later(self, job: Callable[[], object], delay: float | None = None) -> None:
        """Run `job` (usually a post_webhook) from the simulator's callback thread."""
        if self._later is not None:
            self._later.schedule(self.callback_delay if delay is None else delay, job)

    # -- the API ---------------------------------------------------------------------------------

    def handle(self, request: Request) -> Reply:
        """The `/_sim/…` control endpoints, else the provider's API (`route`)."""
        if request.path == "/_sim/messages" and request.method == "GET":
            return Reply(200, self.snapshot())
        if request.path == "/_sim/reset" and request.method == "POST":
            self.reset()
            return Reply(200, {"ok": True})
        if request.path == "/_sim/behaviours" and request.method == "POST":
            try:
                wanted = {who: Behaviour(**spec) for who, spec in request.json().items()}
            except (ValueError, TypeError, AttributeError) as exc:
                return Reply(400, {"error": f"bad behaviours: {exc}"})
            for who, behaviour in wanted.items():
                self.set_behaviour(who, behaviour)
            return Reply(200, {"ok": True, "recipients": sorted(wanted)})
        return self.route(request)

    @abstractmethod
    def route(self, request: Request) -> Reply:
        """Answer one call to the provider's API."""


def serve(simulator: SocialSimulator) -> None:
    """Run a simulator in the foreground until interrupted (the modules' `main`)."""
    with simulator:
        print(simulator.base_url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopped", flush=True)
