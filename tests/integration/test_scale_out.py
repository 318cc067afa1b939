"""Scale-out on PostgreSQL: one `gateway serve` and three `gateway worker` processes on one database.

Each test gets a fresh PostgreSQL schema (as conftest's `database_url` does) and runs the real commands
as subprocesses against the Twilio and SMTP simulators of this process. What is shown:

- 5,000 messages across SMS and email end final, each provider sees each message exactly once, and the
  sends (`attempt.sent_by`) are spread over the dispatchers;
- `kill -9` of a worker mid-run: its leases are retaken, every message ends final, and duplicates are at
  most the messages it held claimed (its sends in flight or not yet recorded among them);
- pacing: three workers together keep an SMS rate of 20/s (measured from the simulator's receive times);
- the database going away under a running gateway (cut at a TCP proxy, so the machine's shared server is
  never restarted): 503 problem answers with Retry-After while it is away, then 202 again on its own,
  and everything accepted before the cut is still sent.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from gateway.dispatch import CLAIM_AHEAD
from gateway.local import LocalGateway, free_port, simulator_settings
from gateway.simulators.smtp import SmtpSimulator
from gateway.simulators.twilio import Behaviour, TwilioSimulator
from tests.conftest import process_env

POSTGRES_URL = os.environ.get("GATEWAY_TEST_POSTGRES_URL")

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.skipif(not POSTGRES_URL, reason="GATEWAY_TEST_POSTGRES_URL is not set (CI sets it)"),
]


# -- the database: one fresh schema per test ---------------------------------------------------------


def schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@pytest.fixture
def schema() -> Iterator[str]:
    """The name of a new, empty PostgreSQL schema, dropped afterwards."""
    assert POSTGRES_URL
    name = "t_" + secrets.token_hex(6)
    admin = create_engine(POSTGRES_URL, poolclass=NullPool)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {name}"))
    try:
        yield name
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {name} CASCADE"))
        admin.dispose()


@pytest.fixture
def db(schema: str) -> Iterator[Engine]:
    """An engine on the test's schema for reading what the processes wrote (no pooled connections)."""
    assert POSTGRES_URL
    engine = create_engine(schema_url(POSTGRES_URL, schema), poolclass=NullPool)
    yield engine
    engine.dispose()


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(sql), params).scalar_one()


def rows(engine: Engine, sql: str, **params: Any) -> list[Any]:
    with engine.connect() as conn:
        return list(conn.execute(text(sql), params))


# -- the processes -------------------------------------------------------------------------------------


@dataclass
class Cluster:
    """`gateway serve` on `port` and `gateway worker`s, all with the same environment."""

    env: dict[str, str]
    port: int
    tmp: Path
    key: str = ""
    serve: subprocess.Popen[bytes] | None = None
    api: LocalGateway | None = None  # an API-only gateway in this process, instead of `gateway serve`
    workers: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)  # worker id -> process
    logs: list[Path] = field(default_factory=list)

    def command(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "gateway.cli", *args]

    def create_key(self) -> str:
        self.key = subprocess.run(
            self.command("keys", "create", "--scope", "admin", "--name", "scale"),
            env=self.env, cwd=self.tmp, check=True, capture_output=True, text=True, timeout=60,
        ).stdout.strip()  # fmt: skip
        return self.key

    def _spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        log = self.tmp / f"{name}.log"
        self.logs.append(log)
        with log.open("wb") as out:  # the child keeps its own copy of the descriptor
            return subprocess.Popen(
                self.command(*args), env=env or self.env, cwd=self.tmp, stdout=out, stderr=subprocess.STDOUT
            )

    def start_serve(self) -> None:
        self.serve = self._spawn("serve", "serve", "--port", str(self.port))
        client = self.client(key="")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.serve.poll() is None, self.output("serve")
            try:
                if client.call("GET", "/healthz").status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError("gateway serve did not come up:\n" + self.output("serve"))

    def start_workers(self, count: int, **extra_env: str) -> list[str]:
        """Start `count` workers at once; return their dispatcher ids (as in `attempt.sent_by`)."""
        started = [
            (f"worker-{len(self.workers) + i}", self._spawn(
                f"worker-{len(self.workers) + i}", "worker", env={**self.env, **extra_env}
            ))
            for i in range(count)
        ]  # fmt: skip
        ids = []
        for name, process in started:
            deadline = time.monotonic() + 60
            while True:
                found = [
                    line.split()[2]
                    for line in self.output(name).splitlines()
                    if line.startswith("gateway: worker ") and line.endswith(" running")
                ]
                if found:
                    break
                assert process.poll() is None, self.output(name)
                assert time.monotonic() < deadline, f"{name} did not start:\n{self.output(name)}"
                time.sleep(0.05)
            self.workers[found[0]] = process
            ids.append(found[0])
        return ids

    def output(self, name: str) -> str:
        return (self.tmp / f"{name}.log").read_text(errors="replace")

    def client(self, key: str | None = None) -> LocalGateway:
        client = LocalGateway()
        client.url = f"http://127.0.0.1:{self.port}"
        client.key = self.key if key is None else key
        return client

    def stop_all(self) -> dict[str, int | None]:
        """SIGTERM every process still running; return each one's exit code."""
        if self.api is not None:
            self.api.stop()
            self.api = None
        processes = {"serve": self.serve} if self.serve is not None else {}
        processes |= self.workers
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        for name, process in processes.items():
            try:
                codes[name] = process.wait(40)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(10)
                codes[name] = None
        return codes


def cluster_env(
    database_url: str, twilio: TwilioSimulator, smtp: SmtpSimulator, port: int, tmp: Path, **extra: str
) -> dict[str, str]:
    settings = {
        "GATEWAY_DB_POOL_SIZE": "6",
        "GATEWAY_DISPATCH_INTERVAL": "0.2s",
        "GATEWAY_DISPATCH_LEASE": "10s",
        "GATEWAY_CHANNEL_RATES": "sms=0,email=0",
        "GATEWAY_API_RATE_LIMIT": "0",
        "GATEWAY_RETRY_BACKOFF": "0.2s",
        "GATEWAY_RETRY_JITTER": "0",
        "GATEWAY_LOG_LEVEL": "warning",
        # Receipts the simulator could not post (gateway busy or away) end the step as `sent` after this.
        "GATEWAY_DEFAULT_AFTER": "20s",
    }
    return process_env(database_url, twilio, smtp, port, tmp, **(settings | extra))


def make_cluster(
    schema: str,
    twilio: TwilioSimulator,
    smtp: SmtpSimulator,
    tmp: Path,
    url: str | None = None,
    api_only: bool = False,
    **extra: str,
) -> Cluster:
    """Settings for `gateway serve`/`worker` and an admin key; with `api_only`, the API is served by a
    LocalGateway without a dispatcher in this process (so only the workers send), as in test_processes."""
    assert POSTGRES_URL
    database_url = url or schema_url(POSTGRES_URL, schema)
    if api_only:
        settings = simulator_settings(twilio, smtp) | {"database_url": database_url, "api_rate_limit": 0}
        api = LocalGateway(settings, with_dispatcher=False).start()
        port = int(api.url.rsplit(":", 1)[1])
        cluster = Cluster(
            cluster_env(database_url, twilio, smtp, port, tmp, **extra), port, tmp, api.key, api=api
        )
        return cluster
    port = free_port()
    cluster = Cluster(cluster_env(database_url, twilio, smtp, port, tmp, **extra), port, tmp)
    cluster.create_key()
    return cluster


@pytest.fixture
def clusters() -> Iterator[list[Cluster]]:
    """Clusters a test started; whatever still runs at the end is stopped (and killed if it hangs)."""
    started: list[Cluster] = []
    yield started
    for cluster in started:
        cluster.stop_all()


def send_batches(client: LocalGateway, bodies: list[dict[str, Any]], parallel: int = 1) -> list[str]:
    """POST /v1/messages/batch, 1000 at a time (`parallel` calls at once); every message is accepted."""

    def post(chunk: list[dict[str, Any]]) -> list[str]:
        data = json.dumps({"messages": chunk}).encode()
        request = urllib.request.Request(client.url + "/v1/messages/batch", data, method="POST")
        request.add_header("Content-Type", "application/json")
        request.add_header("Authorization", f"Bearer {client.key}")
        # A thousand accepts take a while when the workers are busy on the same database.
        with urllib.request.urlopen(request, timeout=300) as response:
            assert response.status == 202, response.status
            results = json.loads(response.read())["results"]
        refused = [r for r in results if "id" not in r]
        assert not refused, refused[:3]
        return [r["id"] for r in results]

    chunks = [bodies[start : start + 1000] for start in range(0, len(bodies), 1000)]
    with ThreadPoolExecutor(parallel) as pool:
        return [message_id for ids in pool.map(post, chunks) for message_id in ids]


def wait_all_final(db: Engine, expected: int, timeout: float) -> float:
    """Wait until `expected` messages exist and all are completed; return the seconds it took."""
    started = time.monotonic()
    deadline = started + timeout
    while True:
        total, open_ = rows(db, "SELECT count(*), count(*) FILTER (WHERE NOT completed) FROM message")[0]
        if total == expected and open_ == 0:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            statuses = rows(db, "SELECT status, completed, count(*) FROM message GROUP BY 1, 2")
            raise AssertionError(f"{open_} of {total} messages not final after {timeout}s: {statuses}")
        time.sleep(0.25)


def sent_by(db: Engine) -> Counter[str]:
    found = rows(db, "SELECT sent_by, count(*) FROM attempt WHERE sends > 0 GROUP BY sent_by")
    return Counter({who or "(none)": n for who, n in found})


def split_text(split: Counter[str], worker_ids: list[str]) -> str:
    total = sum(split.values()) or 1
    names = {w: f"worker-{i}" for i, w in enumerate(worker_ids)} | {"(none)": "(none)"}
    return ", ".join(
        f"{names.get(who, 'serve')} {n} ({100 * n / total:.0f}%)" for who, n in sorted(split.items())
    )


def phones(count: int, first: int = 2000) -> list[str]:
    # +1 415 555 2000…: valid US numbers whose last five digits ask the simulator for a plain delivery.
    return [f"+1415555{first + i:04d}" for i in range(count)]


# -- 1. 5,000 messages, three workers ---------------------------------------------------------------

SCALE_SMS = 2500
SCALE_EMAIL = 2500


def test_three_workers_send_5000_messages_once_each_and_share_the_work(
    schema: str,
    db: Engine,
    twilio: TwilioSimulator,
    smtp: SmtpSimulator,
    tmp_path: Path,
    clusters: list[Cluster],
) -> None:
    cluster = make_cluster(schema, twilio, smtp, tmp_path, GATEWAY_DISPATCH_CONCURRENCY="32")
    clusters.append(cluster)
    cluster.start_serve()
    worker_ids = cluster.start_workers(3)

    numbers = phones(SCALE_SMS)
    addresses = [f"person{i}@scale.test" for i in range(SCALE_EMAIL)]
    bodies: list[dict[str, Any]] = []
    for number, address in zip(numbers, addresses, strict=True):
        bodies.append({"to": {"phone": number}, "content": {"text": f"scale sms {number}"}})
        bodies.append({"to": {"email": address}, "content": {"subject": "scale", "text": f"scale {address}"}})
    started = time.monotonic()
    ids = send_batches(cluster.client(), bodies, parallel=5)
    accepted_in = time.monotonic() - started
    assert len(set(ids)) == SCALE_SMS + SCALE_EMAIL

    final_in = wait_all_final(db, SCALE_SMS + SCALE_EMAIL, timeout=120) + accepted_in
    codes = cluster.stop_all()

    sms_sent = Counter(m["to"] for m in twilio.snapshot())
    email_sent = Counter(r.lower() for m in smtp.messages for r in m["rcpt_tos"])
    statuses = dict(rows(db, "SELECT status, count(*) FROM message GROUP BY status"))
    by_channel = {
        f"{c} {s}": n for c, s, n in rows(db, "SELECT channel, status, count(*) FROM message GROUP BY 1, 2")
    }
    split = sent_by(db)
    print(
        f"\nscale-out: {len(ids)} messages accepted in {accepted_in:.1f}s, all final after {final_in:.1f}s "
        f"({len(ids) / final_in:.0f}/s); statuses {by_channel} (SMS `sent`: its receipt came after the "
        f"step's 20 s timer); SMS sends {sum(sms_sent.values())} to "
        f"{len(sms_sent)} numbers, emails {sum(email_sent.values())} to {len(email_sent)} addresses; "
        f"sends by dispatcher: {split_text(split, worker_ids)}"
    )
    assert codes == {"serve": 0, **{w: 0 for w in worker_ids}}, codes  # graceful stop on SIGTERM
    # Every message reached its provider exactly once.
    assert sorted(sms_sent) == sorted(numbers)
    assert set(sms_sent.values()) == {1}, sms_sent.most_common(5)
    assert all(twilio.sends_to(n) == 1 for n in numbers)
    assert sorted(email_sent) == sorted(addresses)
    assert set(email_sent.values()) == {1}, email_sent.most_common(5)
    assert scalar(db, "SELECT count(*) FROM attempt") == SCALE_SMS + SCALE_EMAIL
    # `sends` counts starts: a claim left to expire while it waited for a call slot (gateway_claims_abandoned)
    # is started again when retaken, without a second send (checked at the providers above).
    assert scalar(db, "SELECT count(*) FROM attempt WHERE sends = 0") == 0
    assert not set(statuses) - {"delivered", "sent"}, statuses
    # The work is spread: at least two of the three workers sent, and no dispatcher did almost all.
    assert len([w for w in worker_ids if split[w] > 0]) >= 2, split
    assert max(split.values()) <= 0.8 * sum(split.values()), split


# -- 2. kill -9 one of three workers mid-run --------------------------------------------------------

KILL_COUNT = 1000
KILL_CONCURRENCY = 8
KILL_LEASE = 2.0


def test_kill_9_of_a_worker_mid_run_its_leases_are_retaken(
    schema: str,
    db: Engine,
    twilio: TwilioSimulator,
    smtp: SmtpSimulator,
    tmp_path: Path,
    clusters: list[Cluster],
) -> None:
    numbers = phones(KILL_COUNT)
    # Accepted after 0.1 s and never reported on: a send the dead worker made is known to the gateway only
    # if it recorded it, so every claim it held must be retaken (a receipt cannot finish it instead).
    for number in numbers:
        twilio.set_behaviour(number, Behaviour(kind="silence", latency=0.1))
    cluster = make_cluster(
        schema, twilio, smtp, tmp_path, api_only=True,
        GATEWAY_DISPATCH_CONCURRENCY=str(KILL_CONCURRENCY),
        GATEWAY_DISPATCH_LEASE=f"{KILL_LEASE:g}s",
    )  # fmt: skip
    clusters.append(cluster)
    bodies = [
        {"to": {"phone": n}, "content": {"text": f"kill test {n}"}, "fallback": {"until": "accepted"}}
        for n in numbers
    ]
    # Everything is accepted first (by an API without a dispatcher), so the three workers share the run.
    ids = send_batches(cluster.client(), bodies)
    assert len(ids) == KILL_COUNT
    worker_ids = cluster.start_workers(3)

    # Wait until the run is well under way and a worker holds claims, then kill that worker.
    deadline = time.monotonic() + 60
    while True:
        claims = dict(
            rows(db, "SELECT claimed_by, count(*) FROM message WHERE claimed_by IS NOT NULL GROUP BY 1")
        )
        busy = [w for w in worker_ids if claims.get(w)]
        if len(twilio.messages) >= KILL_COUNT // 5 and busy:
            break
        assert time.monotonic() < deadline, f"dispatch did not get going: {len(twilio.messages)} sent"
        time.sleep(0.01)
    victim = max(busy, key=lambda w: claims[w])
    cluster.workers[victim].send_signal(signal.SIGKILL)
    cluster.workers[victim].wait(10)
    killed_at = time.monotonic()
    sent_at_kill = len(twilio.messages)
    # The dead worker's claims are exactly the messages it had in flight.
    in_flight = [
        message_id for (message_id,) in rows(db, "SELECT id FROM message WHERE claimed_by = :w", w=victim)
    ]
    assert sent_at_kill < KILL_COUNT, "the kill came too late to test anything"

    wait_all_final(db, KILL_COUNT, timeout=90)
    # Who made the last send of each message the dead worker held.
    retaken = rows(
        db,
        "SELECT m.id, a.sent_by, m.completed FROM message m JOIN attempt a ON a.id = m.current_attempt_id "
        "WHERE m.id = ANY(:ids)",
        ids=in_flight,
    )
    recovered_in = time.monotonic() - killed_at
    codes = cluster.stop_all()

    duplicates = {n: twilio.sends_to(n) - 1 for n in numbers if twilio.sends_to(n) > 1}
    split = sent_by(db)
    print(
        f"\nkill -9: {sent_at_kill}/{KILL_COUNT} sent when {victim} was killed holding {len(in_flight)} "
        f"claims (concurrency {KILL_CONCURRENCY}); all final {recovered_in:.1f}s later "
        f"(lease {KILL_LEASE:g}s); {sum(duplicates.values())} duplicate sends; retaken by "
        f"{dict(Counter(who for _, who, _ in retaken))}; sends by dispatcher: "
        f"{split_text(split, worker_ids)}"
    )
    survivors = {w: 0 for w in worker_ids if w != victim}
    assert codes == {victim: -signal.SIGKILL, **survivors}, codes
    assert all(twilio.sends_to(n) >= 1 for n in numbers), "a message never reached Twilio"
    assert (
        len(in_flight) <= CLAIM_AHEAD * KILL_CONCURRENCY
    )  # claims: those sending and those waiting for a slot
    # Every message the dead worker held was finished by another dispatcher after its lease ran out.
    assert len(retaken) == len(in_flight)
    assert all(completed and who != victim for _, who, completed in retaken), retaken
    # Only sends in flight at the kill, or made and not yet recorded, may have been repeated.
    assert sum(duplicates.values()) <= len(in_flight), duplicates


# -- 3. pacing shared by three workers --------------------------------------------------------------

PACED_RATE = 20
PACED_COUNT = 60


def test_three_workers_together_keep_the_sms_rate(
    schema: str,
    db: Engine,
    twilio: TwilioSimulator,
    smtp: SmtpSimulator,
    tmp_path: Path,
    clusters: list[Cluster],
) -> None:
    cluster = make_cluster(
        schema, twilio, smtp, tmp_path, api_only=True, GATEWAY_CHANNEL_RATES=f"sms={PACED_RATE}"
    )
    clusters.append(cluster)
    numbers = phones(PACED_COUNT, first=6000)
    # The API has no dispatcher, so only the three workers send; they are idle when the batch arrives.
    worker_ids = cluster.start_workers(3)
    ids = send_batches(
        cluster.client(), [{"to": {"phone": n}, "content": {"text": "paced"}} for n in numbers]
    )
    assert len(ids) == PACED_COUNT
    wait_all_final(db, PACED_COUNT, timeout=60)
    codes = cluster.stop_all()

    times = sorted(datetime.fromisoformat(m["received_at"]).timestamp() for m in twilio.snapshot())
    busiest = max(sum(1 for t in times[i:] if t - start < 1.0) for i, start in enumerate(times))
    took = times[-1] - times[0]
    split = sent_by(db)
    print(
        f"\npacing: {len(times)} SMS at sms={PACED_RATE}/s took {took:.2f}s from first to last; busiest "
        f"1-second window held {busiest}; sends by dispatcher: {split_text(split, worker_ids)}"
    )
    assert codes == {w: 0 for w in worker_ids}, codes
    assert len(times) == PACED_COUNT
    print(f"pacing: first receive times (s after the first): {[round(t - times[0], 3) for t in times[:10]]}")
    # +1: a window's two ends may both catch a slot boundary; +1: a send may go up to one slot after its own
    # (SharedPacer.wait takes a fresh slot only when woken later than that), so the first send of a window
    # can arrive late and a later one on time. The slots themselves are at most PACED_RATE a second.
    assert busiest <= PACED_RATE + 2
    assert took >= 2.5  # 60 sends at 20/s cannot take less than 2.95 s
    assert len([w for w in split if w in worker_ids]) >= 2, split  # the workers shared the channel


# -- 4. the database goes away under a running gateway ----------------------------------------------


class TcpProxy:
    """A TCP relay to `upstream` that can be cut (listener and every connection closed) and restored."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()

    def start(self) -> TcpProxy:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(128)
        listener.settimeout(0.05)
        self._listener, self._stop = listener, threading.Event()
        threading.Thread(target=self._accept, args=(listener, self._stop), daemon=True).start()
        return self

    def cut(self) -> None:
        self._stop.set()
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            _close(sock)

    def _accept(self, listener: socket.socket, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                _close(client)
                continue
            with self._lock:
                if stop.is_set():
                    _close(client)
                    _close(server)
                    return
                self._sockets |= {client, server}
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._sockets -= {source, sink}
            _close(source)
            _close(sink)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


OUTAGE_COUNT = 40


def test_database_outage_answers_503_then_recovers_on_its_own(
    schema: str,
    db: Engine,
    twilio: TwilioSimulator,
    smtp: SmtpSimulator,
    tmp_path: Path,
    clusters: list[Cluster],
) -> None:
    assert POSTGRES_URL
    real = make_url(POSTGRES_URL)
    proxy = TcpProxy((real.host or "127.0.0.1", real.port or 5432)).start()
    through_proxy = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    numbers = phones(OUTAGE_COUNT, first=7000)
    for number in numbers:
        twilio.set_behaviour(number, Behaviour(kind="deliver", latency=0.2))
    cluster = make_cluster(
        schema, twilio, smtp, tmp_path, url=schema_url(through_proxy, schema),
        GATEWAY_DISPATCH_CONCURRENCY="4", GATEWAY_DEFAULT_AFTER="3s", GATEWAY_LOG_LEVEL="info",
    )  # fmt: skip
    clusters.append(cluster)
    try:
        cluster.start_serve()
        client = cluster.client()
        ids = send_batches(client, [{"to": {"phone": n}, "content": {"text": "outage"}} for n in numbers])
        assert len(ids) == OUTAGE_COUNT
        deadline = time.monotonic() + 30
        while len(twilio.messages) < 5:
            assert time.monotonic() < deadline, "dispatch did not start"
            time.sleep(0.01)

        proxy.cut()
        sent_at_cut = len(twilio.messages)
        during: list[tuple[int, Any, dict[str, str]]] = []
        for i in range(6):
            answer = client.call(
                "POST", "/v1/messages", {"to": {"phone": f"+1415555{8000 + i}"}, "content": {"text": "x"}}
            )
            during.append((answer.status, answer.body, answer.headers))
            time.sleep(0.4)
        assert len(twilio.messages) < OUTAGE_COUNT, "the cut came too late to test anything"

        proxy.start()
        restored_at = time.monotonic()
        while True:
            after = client.call(
                "POST", "/v1/messages", {"to": {"phone": "+14155558100"}, "content": {"text": "y"}}
            )
            if after.status == 202:
                break
            assert time.monotonic() - restored_at < 30, f"no 202 within 30s of the restore: {after}"
            time.sleep(0.2)
        recovered_in = time.monotonic() - restored_at

        # Everything accepted before the cut (and the message accepted after it) is sent and final.
        wait_all_final(db, OUTAGE_COUNT + 1, timeout=60)
    finally:
        codes = cluster.stop_all()
        proxy.cut()
    log = cluster.output("serve")
    statuses = dict(rows(db, "SELECT status, count(*) FROM message GROUP BY status"))
    print(
        f"\noutage: {sent_at_cut}/{OUTAGE_COUNT} sent at the cut; answers while cut "
        f"{[s for s, _, _ in during]} (Retry-After {[h.get('Retry-After') for _, _, h in during]}); "
        f"202 again {recovered_in:.1f}s after the restore; final statuses {statuses}; "
        f"{sum(max(0, twilio.sends_to(n) - 1) for n in numbers)} duplicate sends; "
        f"tracebacks in the serve log: {log.count('Traceback')}"
    )
    for status, body, headers in during:
        assert status == 503, (status, body)
        assert headers.get("Content-Type", "").startswith("application/problem+json"), headers
        assert body["type"] == "service-unavailable", body
        assert int(headers["Retry-After"]) >= 1, headers
        assert "Traceback" not in json.dumps(body) and "psycopg" not in json.dumps(body), body
    assert all(twilio.sends_to(n) >= 1 for n in numbers), "a message accepted before the cut was never sent"
    assert twilio.sends_to("+14155558100") == 1
    assert codes == {"serve": 0}, codes
