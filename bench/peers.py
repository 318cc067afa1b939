"""What people use today, each as its own process: `python -m bench.peers NAME --port P --n N …`.

Each prints one JSON line `{"start": t, "end": t, "sent": n, "cpu_s": s}` (time.time(); the CPU time the
process spent from the start on); the case measures the end at the sink. Messages are built inside the
loop, as a program sending real notifications would.
- `smtplib`: one shared connection, sequential `send_message`.
- `apprise`: Apprise email with its defaults, one configured recipient notified N times (a plugin waits
  `request_rate_per_sec` = 5.5 s between its sends).
- `apprise-tuned`: a plugin per recipient, throttle off (`request_rate_per_sec = 0`), `--threads` threads.
- `twilio`: the official SDK's synchronous client in a sequential loop.
"""

from __future__ import annotations

import argparse
import json
import smtplib
import threading
import time
from email.message import EmailMessage
from typing import Any
from urllib.parse import urlsplit, urlunsplit

FROM = "peer@bench.test"
SUBJECT = "Order {i} shipped"
TEXT = "Your order {i} has shipped. Track it at https://biz.example/track/{i}."


def address(prefix: str, i: int) -> str:
    return f"{prefix}{i}@example.test"


def _result(start: float, cpu: float, sent: int) -> dict[str, Any]:
    return {"start": start, "end": time.time(), "sent": sent, "cpu_s": time.process_time() - cpu}


def run_smtplib(args: argparse.Namespace) -> dict[str, Any]:
    start, cpu = time.time(), time.process_time()
    with smtplib.SMTP("127.0.0.1", args.port) as client:
        client.ehlo()
        for i in range(args.n):
            message = EmailMessage()
            message["From"], message["To"] = FROM, address(args.prefix, i)
            message["Subject"] = SUBJECT.format(i=i)
            message.set_content(TEXT.format(i=i))
            client.send_message(message)
    return _result(start, cpu, args.n)


def _apprise_unthrottled(args: argparse.Namespace) -> Any:
    import apprise

    def send(i: int) -> bool:
        url = f"mailto://127.0.0.1:{args.port}?from={FROM}&to={address(args.prefix, i)}&mode=insecure"
        plugin = apprise.Apprise.instantiate(url)
        if plugin is None:
            raise RuntimeError(f"Apprise does not understand {url}")
        plugin.request_rate_per_sec = 0
        ok: bool = plugin.notify(body=TEXT.format(i=i), title=SUBJECT.format(i=i))
        return ok

    return send


def run_apprise(args: argparse.Namespace) -> dict[str, Any]:
    """Apprise as configured once and notified repeatedly: its throttle spaces the sends."""
    import apprise

    notifier = apprise.Apprise()
    notifier.add(f"mailto://127.0.0.1:{args.port}?from={FROM}&to={address(args.prefix, 0)}&mode=insecure")
    start, cpu = time.time(), time.process_time()
    sent = sum(bool(notifier.notify(body=TEXT.format(i=i), title=SUBJECT.format(i=i))) for i in range(args.n))
    return _result(start, cpu, sent)


def run_apprise_tuned(args: argparse.Namespace) -> dict[str, Any]:
    send = _apprise_unthrottled(args)
    counter = iter(range(args.n))
    lock = threading.Lock()
    sent = [0]

    def work() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            if send(i):
                with lock:
                    sent[0] += 1

    start, cpu = time.time(), time.process_time()
    threads = [threading.Thread(target=work) for _ in range(args.threads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return _result(start, cpu, sent[0])


def run_twilio(args: argparse.Namespace) -> dict[str, Any]:
    from twilio.http.http_client import TwilioHttpClient
    from twilio.rest import Client

    base = urlsplit(f"http://127.0.0.1:{args.port}")

    class LocalHttpClient(TwilioHttpClient):  # type: ignore[misc]
        """The SDK's own requests-based client, with Twilio's host swapped for the simulator's."""

        def request(self, method: str, url: str, *rest: Any, **kwargs: Any) -> Any:
            parts = urlsplit(url)
            local = urlunsplit((base.scheme, base.netloc, parts.path, parts.query, ""))
            return super().request(method, local, *rest, **kwargs)

    client = Client(args.sid, args.token, http_client=LocalHttpClient())
    # The SDK loads its Messages resource on first use (~35 ms); the gateway loads it when its SMS channel
    # opens, before any timing, so the loop loads it before its clock starts too.
    assert client.messages is not None
    numbers = args.numbers.split(",")
    start, cpu = time.time(), time.process_time()
    for i in range(args.n):
        client.messages.create(to=numbers[i % len(numbers)], from_="+14155550000", body=TEXT.format(i=i))
    return _result(start, cpu, args.n)


PEERS = {
    "smtplib": run_smtplib,
    "apprise": run_apprise,
    "apprise-tuned": run_apprise_tuned,
    "twilio": run_twilio,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("peer", choices=sorted(PEERS))
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--prefix", default="peer")
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--sid", default="")
    parser.add_argument("--token", default="")
    parser.add_argument("--numbers", default="")
    args = parser.parse_args()
    print(json.dumps(PEERS[args.peer](args)), flush=True)


if __name__ == "__main__":
    main()
