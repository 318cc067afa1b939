"""A small HTTP load generator: `python -m bench.loadgen --port P --key K --conns C --seconds S`.

Each of C threads keeps one connection open (TCP_NODELAY) and sends `POST /v1/messages` with a JSON body
back to back, parsing only the status line and Content-Length, so the generator stays cheap next to the
server. The connections are opened `--stagger` seconds apart, as clients arrive over time: opened all at
once, gunicorn's workers race for them and one often takes most (a keep-alive connection stays with the
worker that accepted it); opened apart, the least busy worker takes the next. Requests in the first
`--warmup` seconds are not counted. Prints one JSON line: requests/s, errors, and latency percentiles in ms.
"""

from __future__ import annotations

import argparse
import json
import socket
import threading
import time
from typing import Any

from bench.stats import latency_ms

RECIPIENTS = 1000  # the body names one of this many people in turn: contacts are created, then found


def body_for(i: int) -> bytes:
    return json.dumps(
        {
            "to": {"email": f"person{i % RECIPIENTS}@example.test"},
            "content": {"subject": "Order shipped", "text": f"Your order {i} has shipped."},
        }
    ).encode()


def _read_response(sock: socket.socket, buffer: bytearray) -> int:
    """Read one response from `sock` (leftovers stay in `buffer`); return its status code."""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk
    head = bytes(buffer[:end]).decode("latin-1")
    status = int(head.split(" ", 2)[1])
    length = 0
    for line in head.split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    total = end + 4 + length
    while len(buffer) < total:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        buffer += chunk
    del buffer[:total]
    return status


def _connect(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=30)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def drive(port: int, key: str, conns: int, seconds: float, warmup: float, stagger: float) -> dict[str, Any]:
    head = f"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAuthorization: Bearer {key}\r\n"
    head += "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n"
    counter = iter(range(10**9))
    lock = threading.Lock()
    latencies: list[list[float]] = [[] for _ in range(conns)]
    errors = [0] * conns
    statuses: dict[int, int] = {}
    begin = time.perf_counter()
    measure_from, stop_at = begin + warmup, begin + warmup + seconds

    def work(slot: int) -> None:
        time.sleep(slot * stagger)
        sock, buffer = _connect(port), bytearray()
        while (now := time.perf_counter()) < stop_at:
            with lock:
                i = next(counter)
            body = body_for(i)
            try:
                sock.sendall(head.format(len(body)).encode() + body)
                status = _read_response(sock, buffer)
            except OSError:
                sock.close()
                sock, buffer = _connect(port), bytearray()
                status = 0
            done = time.perf_counter()
            if now >= measure_from and done <= stop_at:
                if 200 <= status < 300:
                    latencies[slot].append(done - now)
                else:
                    errors[slot] += 1
                    with lock:
                        statuses[status] = statuses.get(status, 0) + 1
        sock.close()

    threads = [threading.Thread(target=work, args=(slot,)) for slot in range(conns)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    samples = [s for per in latencies for s in per]
    return {
        "requests": len(samples),
        "errors": sum(errors),
        "error_statuses": statuses,
        "seconds": seconds,
        "rps": len(samples) / seconds,
        "latency_ms": latency_ms(samples),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--key", default="")
    parser.add_argument("--conns", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--stagger", type=float, default=0.05, help="seconds between opening connections")
    args = parser.parse_args()
    result = drive(args.port, args.key, args.conns, args.seconds, args.warmup, args.stagger)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
