"""A local stand-in for Twilio's Messages API: a real HTTP server with signed status callbacks.

The destination number picks the outcome (see docs/simulators-twilio.md): by default its last
five digits, e.g. +14155521211 answers error 21211; +14155530005 is accepted, then undelivered.
Run it alone with `python -m gateway.simulators.twilio --port 8801`.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import re
import secrets
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode

from gateway.simulators.poster import OrderedPoster

SYNC_CODES = {21211: 400, 21614: 400, 21408: 400, 21610: 400, 20429: 429}  # code -> HTTP status
ASYNC_CODES = {30003, 30004, 30005, 30006, 30007, 30008}
SILENT_SUFFIX, SLOW_SUFFIX = "99999", "99998"
DEFAULT_ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
DEFAULT_AUTH_TOKEN = "simulator-token"
_MESSAGES_PATH = re.compile(r"^/2010-04-01/Accounts/(?P<sid>[^/]+)/Messages\.json$")


@dataclass(frozen=True)
class Behaviour:
    """What the simulator does with sends to one number."""

    kind: Literal["deliver", "error", "silence"] = "deliver"
    code: int | None = None
    latency: float = 0.0
    # Fail with `code` only on the first N sends, then deliver; None fails every time.
    fail_times: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("deliver", "error", "silence"):
            raise ValueError(f"unknown behaviour kind {self.kind!r}")
        if self.kind == "error" and self.code is None:
            raise ValueError("an error behaviour needs a code")


def default_behaviour(number: str, slow_latency: float) -> Behaviour:
    """Pick a behaviour from the last five digits of the number."""
    suffix = re.sub(r"\D", "", number)[-5:]
    if suffix == SILENT_SUFFIX:
        return Behaviour("silence")
    if suffix == SLOW_SUFFIX:
        return Behaviour("deliver", latency=slow_latency)
    if suffix.isdigit() and (int(suffix) in SYNC_CODES or int(suffix) in ASYNC_CODES):
        return Behaviour("error", int(suffix))
    return Behaviour("deliver")


def twilio_signature(auth_token: str, url: str, params: dict[str, str]) -> str:
    """Sign like Twilio: base64 HMAC-SHA1 over the URL and the sorted key+value pairs."""
    payload = url + "".join(key + params[key] for key in sorted(params))
    digest = hmac.new(auth_token.encode(), payload.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


MAX_MEDIA = 10  # MediaUrl values Twilio accepts on one message


def error_body(code: int, message: str, status: int) -> dict[str, Any]:
    """Twilio's legacy error shape; `type`/`title` keys would make the SDK raise another class."""
    more_info = f"https://www.twilio.com/docs/errors/{code}"
    return {"code": code, "message": message, "more_info": more_info, "status": status}


def num_segments(body: str) -> int:
    """Count SMS segments: 160/153 characters in GSM-ish text, 70/67 in UCS-2."""
    single, multi = (160, 153) if body.isascii() else (70, 67)
    return 1 if len(body) <= single else -(-len(body) // multi)


def _post_callback(auth_token: str, url: str, params: dict[str, str]) -> bool:
    """Post one signed form; a refused connection or an error status counts as a failure."""
    headers = {
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Twilio-Signature": twilio_signature(auth_token, url, params),
    }
    data = urlencode(params).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data, headers), timeout=5):
            return True
    except (OSError, ValueError, http.client.HTTPException):
        return False


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that accepts bursts of connections."""

    daemon_threads = True
    # socketserver's default backlog of 5 drops connections when a client opens many at once.
    request_queue_size = 128


class TwilioSimulator:
    """Twilio's `Messages.json` endpoint on a local port, with per-number behaviours."""

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        account_sid: str = DEFAULT_ACCOUNT_SID,
        auth_token: str = DEFAULT_AUTH_TOKEN,
        callback_delay: float = 0.05,
        slow_latency: float = 2.0,
        callback_workers: int = 3,
    ) -> None:
        self.host, self.port = host, port
        self.callback_workers = callback_workers  # status callbacks posted at once
        self.account_sid, self.auth_token = account_sid, auth_token
        self.callback_delay, self.slow_latency = callback_delay, slow_latency
        self.messages: list[dict[str, Any]] = []
        self._behaviours: dict[str, Behaviour] = {}
        self._attempts: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()  # failures served since the behaviour was set
        self._lock = threading.Lock()
        self.in_flight = 0  # send requests being answered now
        self.peak_in_flight = 0  # the most there were at once
        self._server: ThreadingHTTPServer | None = None
        self._callbacks: OrderedPoster | None = None

    def post_callback(self, url: str, params: dict[str, str]) -> bool:
        """Post one signed status callback; whether the receiver took it (2xx)."""
        return _post_callback(self.auth_token, url, params)

    @property
    def base_url(self) -> str:
        """Where the API listens, e.g. http://127.0.0.1:8801."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> TwilioSimulator:
        """Listen and serve from a daemon thread; port 0 picks a free port."""
        simulator = self

        class Handler(_Handler):
            sim = simulator

        self._server = _Server((self.host, self.port), Handler)
        self.port = self._server.server_address[1]
        self._callbacks = OrderedPoster(self.post_callback, workers=self.callback_workers)
        self._callbacks.start()
        # A short poll interval keeps stop() (and so test teardown) quick.
        serve = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        serve.start()
        return self

    def stop(self) -> None:
        """Stop serving and drop callbacks not yet posted."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._callbacks is not None:
            self._callbacks.stop()
            self._callbacks = None

    def __enter__(self) -> TwilioSimulator:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def set_behaviour(self, number: str, behaviour: Behaviour) -> None:
        """Override what happens to sends to `number` (exactly as sent in To)."""
        with self._lock:
            self._behaviours[number] = behaviour
            self._failures[number] = 0

    def reset(self) -> None:
        """Forget messages, behaviours and send counts, and drop status callbacks not yet posted."""
        with self._lock:
            self.messages.clear()
            self._behaviours.clear()
            self._attempts.clear()
            self._failures.clear()
        if self._callbacks is not None:
            self._callbacks.clear()

    @contextlib.contextmanager
    def answering(self) -> Iterator[None]:
        """Count a send request in flight while it is answered."""
        with self._lock:
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            yield
        finally:
            with self._lock:
                self.in_flight -= 1

    def sends_to(self, number: str) -> int:
        """Count authenticated send requests to `number`, including those answered with an error."""
        with self._lock:
            return self._attempts[number]

    def snapshot(self) -> list[dict[str, Any]]:
        """Copy the accepted messages."""
        with self._lock:
            return [dict(message) for message in self.messages]

    def plan(self, number: str) -> Behaviour:
        """Count a send to `number` and decide what happens to it."""
        with self._lock:
            self._attempts[number] += 1
            behaviour = self._behaviours.get(number)
            behaviour = behaviour or default_behaviour(number, self.slow_latency)
            if behaviour.fail_times is None or behaviour.kind != "error":
                return behaviour
            if self._failures[number] >= behaviour.fail_times:
                return Behaviour("deliver", latency=behaviour.latency)
            self._failures[number] += 1
            return behaviour

    def accept(self, form: dict[str, str], media: list[str] | None = None) -> dict[str, Any]:
        """Record an accepted send (with its MediaUrl values, in order) and build Twilio's Message JSON."""
        sid = "SM" + secrets.token_hex(16)
        now = datetime.now(UTC)
        record = {
            "sid": sid,
            "to": form["To"],
            "from": form.get("From"),
            "body": form.get("Body", ""),
            "content_sid": form.get("ContentSid"),
            "content_variables": form.get("ContentVariables"),
            "media_urls": list(media or []),
        }
        record["messaging_service_sid"] = form.get("MessagingServiceSid")
        record["status_callback"] = form.get("StatusCallback")
        record["validity_period"] = form.get("ValidityPeriod")
        record["received_at"] = now.isoformat()
        with self._lock:
            self.messages.append(record)
        uri = f"/2010-04-01/Accounts/{self.account_sid}/Messages/{sid}.json"
        # With only a messaging service Twilio answers "accepted": it picks the sender later.
        status = "queued" if form.get("From") else "accepted"
        return {
            "sid": sid, "account_sid": self.account_sid, "api_version": "2010-04-01",
            "to": form["To"], "from": form.get("From"), "body": form.get("Body", ""), "status": status,
            "messaging_service_sid": form.get("MessagingServiceSid"), "direction": "outbound-api",
            "date_created": format_datetime(now), "date_updated": format_datetime(now),
            "date_sent": None, "num_segments": str(num_segments(form.get("Body", ""))),
            "num_media": str(len(media or [])), "error_code": None, "error_message": None, "price": None,
            "price_unit": "USD",
            "uri": uri, "subresource_uris": {"media": uri.replace(".json", "/Media.json")},
        }  # fmt: skip

    def report(self, message: dict[str, Any], form: dict[str, str], behaviour: Behaviour) -> None:
        """Queue the status callbacks an accepted message will get, if any."""
        url = form.get("StatusCallback")
        if not url or behaviour.kind == "silence" or self._callbacks is None:
            return
        base = {"MessageSid": message["sid"], "AccountSid": self.account_sid, "To": form["To"]}
        base["From"] = form.get("From") or form.get("MessagingServiceSid", "")
        events: tuple[dict[str, str], ...]
        if behaviour.kind == "deliver":
            events = ({**base, "MessageStatus": "sent"}, {**base, "MessageStatus": "delivered"})
        else:
            status = "undelivered" if behaviour.code in (30005, 30006) else "failed"
            events = ({**base, "MessageStatus": status, "ErrorCode": str(behaviour.code)},)
        self._callbacks.schedule(self.callback_delay, url, events, self.callback_delay)


class _Handler(BaseHTTPRequestHandler):
    """One HTTP/1.1 keep-alive connection to the simulator."""

    protocol_version = "HTTP/1.1"
    timeout = 60  # idle keep-alive connections close after a minute
    # TCP_NODELAY: an answer goes out in two writes (headers, body), and with Nagle on, a keep-alive client
    # waited for its own delayed ACK (~40 ms) before the body came. Real providers answer at once.
    disable_nagle_algorithm = True
    sim: TwilioSimulator

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: tests and the CLI print what matters themselves."""

    def do_GET(self) -> None:
        if self.path == "/_sim/messages":
            self._json(200, self.sim.snapshot())
        else:
            self._json(404, error_body(20404, "The requested resource was not found", 404))

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        match = _MESSAGES_PATH.match(self.path)
        if self.path == "/_sim/behaviours":
            self._set_behaviours(body)
        elif self.path == "/_sim/reset":
            self.sim.reset()
            self._json(200, {"ok": True})
        elif match is None:
            self._json(404, error_body(20404, "The requested resource was not found", 404))
        elif not self._authorized(match["sid"]):
            self._json(401, error_body(20003, "Authenticate", 401))
        else:
            pairs = parse_qsl(body.decode(), keep_blank_values=True)
            media = [value for name, value in pairs if name == "MediaUrl"]
            self._create_message(dict(pairs), media)

    def _authorized(self, path_sid: str) -> bool:
        expected = f"{self.sim.account_sid}:{self.sim.auth_token}"
        given = self.headers.get("Authorization", "").removeprefix("Basic ")
        try:
            credentials = base64.b64decode(given, validate=True).decode()
        except ValueError:
            return False
        return hmac.compare_digest(credentials, expected) and path_sid == self.sim.account_sid

    def _create_message(self, form: dict[str, str], media: list[str]) -> None:
        invalid = _invalid_form(form, media)
        if invalid is not None:
            self._json(400, invalid)
            return
        behaviour = self.sim.plan(form["To"])
        with self.sim.answering():
            time.sleep(behaviour.latency)
            if behaviour.kind == "error" and behaviour.code not in ASYNC_CODES:
                code = behaviour.code or 0
                # Codes 500-599 stand for a Twilio outage answered with that HTTP status.
                status = SYNC_CODES.get(code, code if 500 <= code < 600 else 400)
                self._json(status, error_body(code, f"Simulated error {code}", status))
                return
            message = self.sim.accept(form, media)
            self._json(201, message)
        self.sim.report(message, form, behaviour)

    def _set_behaviours(self, body: bytes) -> None:
        try:
            wanted = {number: Behaviour(**spec) for number, spec in json.loads(body).items()}
        except (ValueError, TypeError, AttributeError) as exc:
            self._json(400, {"error": f"bad behaviours: {exc}"})
            return
        for number, behaviour in wanted.items():
            self.sim.set_behaviour(number, behaviour)
        self._json(200, {"ok": True, "numbers": sorted(wanted)})

    def _json(self, status: int, payload: object) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        try:
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            # The client gave up (e.g. its timeout was shorter than the latency).
            self.close_connection = True


def _invalid_form(form: dict[str, str], media: list[str]) -> dict[str, Any] | None:
    """Twilio's error for a send request missing a required field, or None."""
    if not form.get("To"):
        return error_body(21604, "A 'To' phone number is required.", 400)
    if any(not url.startswith(("http://", "https://")) for url in media):
        return error_body(21620, "Invalid media URL(s).", 400)
    if len(media) > MAX_MEDIA:
        return error_body(21623, f"Number of media files exceeds allowed limit of {MAX_MEDIA}.", 400)
    # A content template needs no Body, nor does a message with media.
    if not (form.get("Body") or form.get("ContentSid") or media):
        return error_body(21602, "Message body is required.", 400)
    if not (form.get("From") or form.get("MessagingServiceSid")):
        return error_body(21603, "A 'From' phone number is required.", 400)
    return None


def main(argv: list[str] | None = None) -> None:
    """Run the simulator in the foreground until interrupted."""
    parser = argparse.ArgumentParser(description="Local Twilio Messages API simulator")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8801)
    parser.add_argument("--account-sid", default=DEFAULT_ACCOUNT_SID)
    parser.add_argument("--auth-token", default=DEFAULT_AUTH_TOKEN)
    parser.add_argument("--callback-delay", type=float, default=0.05)
    parser.add_argument("--slow-latency", type=float, default=2.0)
    args = parser.parse_args(argv)
    simulator = TwilioSimulator(
        args.host, args.port, args.account_sid, args.auth_token,
        args.callback_delay, args.slow_latency,
    )  # fmt: skip
    with simulator:
        print(simulator.base_url, flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("stopped", flush=True)


if __name__ == "__main__":
    main()
