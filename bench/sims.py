"""The sinks every competitor sends into, in one process of their own: `python -m bench.sims`.

- an SMTP sink (aiosmtpd) that accepts everything and notes when each message arrived and for whom;
- the gateway's Twilio simulator (`gateway.simulators.twilio`), noting when each send request arrived and
  what it was answered (deliver, or the error code), and when each status callback was taken (a gateway
  answers one once it has applied it);
- a JSON control API: `GET /smtp` and `GET /twilio` (`?records=1` adds the records), `POST /reset`.
Times are `time.time()` of this machine, comparable with the other processes' clocks.
"""

from __future__ import annotations

import argparse
import http.client
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from bench.procs import PYTHON, Proc, clean_env, cpu_seconds, free_port, http_ok, spawn


class Records:
    """Thread-safe (time, who, outcome) records."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rows: list[tuple[float, str, str]] = []

    def add(self, who: str, outcome: str = "ok") -> None:
        now = time.time()
        with self._lock:
            self._rows.append((now, who, outcome))

    def clear(self) -> None:
        with self._lock:
            self._rows.clear()

    def summary(self, with_rows: bool) -> dict[str, Any]:
        with self._lock:
            rows = list(self._rows)
        ok = [r for r in rows if r[2] == "ok"]
        out: dict[str, Any] = {
            "count": len(rows),
            "ok": len(ok),
            "first": rows[0][0] if rows else None,
            "last": rows[-1][0] if rows else None,
            "last_ok": ok[-1][0] if ok else None,
        }
        if with_rows:
            out["records"] = rows
        return out


# Status callbacks the Twilio simulator posts at once. Twilio posts them from many servers; the simulator's
# own default (3, enough for the tests) held them back, so a gateway run's callbacks mostly arrived after its
# last send, outside the timed window.
CALLBACK_WORKERS = 16


def serve(smtp_port: int, twilio_port: int, control_port: int) -> None:
    from aiosmtpd.controller import Controller

    from gateway.simulators import twilio as twilio_module
    from gateway.simulators.twilio import Behaviour, TwilioSimulator

    # The simulator answers in two writes (headers, then body); with Nagle on, a keep-alive client waits for
    # its delayed ACK (~40 ms) each time. The simulator turns Nagle off itself since 2026-11-29; older
    # gateway commits measured with --gateway-ref do not.
    twilio_module._Handler.disable_nagle_algorithm = True

    mail, sms, receipts = Records(), Records(), Records()

    class SinkHandler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            mail.add(envelope.rcpt_tos[0] if envelope.rcpt_tos else "")
            return "250 2.0.0 OK"

    class RecordingTwilio(TwilioSimulator):
        def plan(self, number: str) -> Behaviour:
            behaviour = super().plan(number)
            sms.add(number, "ok" if behaviour.kind != "error" else str(behaviour.code))
            return behaviour

        def post_callback(self, url: str, params: dict[str, str]) -> bool:
            # The gateway answers a status callback once it has applied it: "ok" is a receipt applied.
            taken = super().post_callback(url, params)
            receipts.add(params.get("MessageStatus", ""), "ok" if taken else "refused")
            return taken

    smtp = Controller(SinkHandler(), hostname="127.0.0.1", port=smtp_port, server_hostname="sink.bench")
    smtp.start()
    # A gateway commit measured with --gateway-ref may predate `post_callback`: its receipts go unrecorded.
    recorded = hasattr(TwilioSimulator, "post_callback")
    options: dict[str, Any] = {"callback_workers": CALLBACK_WORKERS} if recorded else {}
    twilio = RecordingTwilio(port=twilio_port, **options).start()

    class Control(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            path, _, query = self.path.partition("?")
            records = "records=1" in query
            if path == "/smtp":
                self._json(mail.summary(records))
            elif path == "/twilio":
                done = receipts.summary(False) if recorded else {"ok": None, "last_ok": None}
                self._json(sms.summary(records) | {"receipts": done["ok"], "last_receipt": done["last_ok"]})
            else:
                self._json({"error": "not found"}, 404)

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if self.path == "/reset":
                twilio.reset()
                mail.clear()
                sms.clear()
                receipts.clear()
                self._json({"ok": True})
            else:
                self._json({"error": "not found"}, 404)

        def _json(self, payload: object, status: int = 200) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    print(f"sims ready smtp={smtp_port} twilio={twilio_port}", flush=True)
    try:
        ThreadingHTTPServer(("127.0.0.1", control_port), Control).serve_forever()
    finally:
        smtp.stop()
        twilio.stop()


@dataclass
class Sims:
    """The sims process as seen from the bench driver."""

    proc: Proc
    smtp_port: int
    twilio_port: int
    control_port: int
    account_sid: str
    auth_token: str

    @classmethod
    def start(cls, workdir: Path) -> Sims:
        from gateway.simulators.twilio import DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN

        smtp, twilio, control = free_port(), free_port(), free_port()
        argv = [PYTHON, "-m", "bench.sims", "--smtp", str(smtp), "--twilio", str(twilio)]
        argv += ["--control", str(control)]
        proc = spawn("sims", argv, clean_env(), workdir, http_ok(control, "/smtp"))
        return cls(proc, smtp, twilio, control, DEFAULT_ACCOUNT_SID, DEFAULT_AUTH_TOKEN)

    def _call(self, port: int, method: str, path: str, body: Any = None) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            data = None if body is None else json.dumps(body).encode()
            conn.request(method, path, data, {"Content-Type": "application/json"})
            response = conn.getresponse()
            payload = json.loads(response.read())
            if response.status != 200:
                raise RuntimeError(f"{path}: {response.status} {payload}")
            return payload
        finally:
            conn.close()

    def reset(self) -> None:
        self._call(self.control_port, "POST", "/reset", {})

    def smtp(self, records: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self._call(
            self.control_port, "GET", "/smtp" + ("?records=1" if records else "")
        )
        return result

    def twilio(self, records: bool = False) -> dict[str, Any]:
        path = "/twilio" + ("?records=1" if records else "")
        result: dict[str, Any] = self._call(self.control_port, "GET", path)
        return result

    def behaviours(self, numbers: dict[str, dict[str, Any]]) -> None:
        """Set Twilio simulator behaviours through its own control API."""
        self._call(self.twilio_port, "POST", "/_sim/behaviours", numbers)

    def wait_smtp(self, count: int, timeout: float) -> dict[str, Any]:
        return self._wait(self.smtp, count, timeout)

    def wait_twilio(self, count: int, timeout: float, key: str = "count") -> dict[str, Any]:
        return self._wait(self.twilio, count, timeout, key)

    @staticmethod
    def _wait(get: Any, count: int, timeout: float, key: str = "count") -> dict[str, Any]:
        """Poll until `count` arrived; raise TimeoutError with what did arrive."""
        deadline = time.monotonic() + timeout
        while True:
            seen: dict[str, Any] = get()
            if seen[key] >= count:
                return seen
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {seen[key]} of {count} arrived within {timeout:.0f}s")
            time.sleep(0.05)

    def cpu_seconds(self) -> float:
        """CPU time the simulators' process has used so far (answering sends, posting callbacks)."""
        return cpu_seconds([self.proc.pid])

    def stop(self) -> None:
        self.proc.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--smtp", type=int, required=True)
    parser.add_argument("--twilio", type=int, required=True)
    parser.add_argument("--control", type=int, required=True)
    args = parser.parse_args()
    serve(args.smtp, args.twilio, args.control)


if __name__ == "__main__":
    main()
