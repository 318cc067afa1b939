"""The dispatcher's plain rows (`gateway.rows`) leave the database exactly as the ORM path does.

Two copies of one SQLite database, with messages of every kind: the dispatcher claims, starts and records
the same outcomes in both at the same frozen time, on one copy with plain rows where `gateway.rows` allows,
on the other through the ORM alone; every row of every table must then be the same.
"""

from __future__ import annotations

import itertools
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlmodel import SQLModel

from gateway import events, progress, rows, store
from gateway.channels.base import SendResult
from gateway.core import Gateway, build_gateway
from gateway.dispatch import Dispatcher, Outcome
from gateway.errors import ChannelError, ErrorKind
from gateway.local import LocalGateway
from gateway.models import ChannelState, EarlyStatus, WebhookSubscription
from gateway.settings import load_settings
from gateway.timeutil import utcnow

SETTINGS = {
    "twilio_account_sid": "AC1",
    "twilio_auth_token": "t",
    "twilio_from": "+14155550000",
    "smtp_host": "127.0.0.1",
    "smtp_port": 9,
    "smtp_tls": "none",
    "smtp_from": "gateway@example.test",
    "retry_jitter": 0,
}


def _bodies() -> list[dict[str, Any]]:
    both = {"phone": "+14155550100", "email": "both@example.test"}
    return [
        {"to": {"email": "plain@example.test"}, "content": {"subject": "s", "text": "an email"}},
        {"to": {"phone": "+14155550101"}, "content": {"text": "an sms"}},
        {
            "to": {"phone": "+14155550102"},
            "content": {"text": "x"},
            "status_callback": "http://127.0.0.1:9/cb",
        },
        {"to": {"email": "late@example.test"}, "content": {"text": "x"}, "ttl": "1s"},
        {"to": {"phone": "+14155550103", "email": "out@example.test"}, "content": {"text": "opted out"}},
        {"to": both, "content": {"text": "falls back"}, "channels": ["sms", "email"]},
        {"to": {"phone": "+14155550104"}, "content": {"text": "early"}},
        {"to": {"phone": "+14155550105"}, "content": {"text": "known reachable"}},
        *({"to": {"phone": f"+1415555020{i}"}, "content": {"text": f"sms {i}"}} for i in range(5)),
        *({"to": {"email": f"e{i}@example.test"}, "content": {"text": f"email {i}"}} for i in range(5)),
    ]


def _outcome(n: int, job: Any) -> SendResult | ChannelError:
    if job.address == "+14155550104":
        return SendResult("early-id", "accepted")  # its report came first: an EarlyStatus row waits
    kinds: list[SendResult | ChannelError] = [
        SendResult(f"p{n}", "accepted"),
        SendResult(f"p{n}", "sent"),
        SendResult(f"p{n}", "delivered"),
        ChannelError(ErrorKind.TRANSIENT, "try later"),
        ChannelError(ErrorKind.REJECTED, "no", code="21211"),
    ]
    return kinds[n % len(kinds)]


@pytest.fixture
def accepted(tmp_path: Path) -> Path:
    """A SQLite file with the messages accepted, an opt-out, a reachable contact and an early status."""
    path = tmp_path / "accepted.db"
    local = LocalGateway({"database_url": f"sqlite:///{path}", **SETTINGS}, with_dispatcher=False).start()
    try:
        answer = local.call("POST", "/v1/messages/batch", {"messages": _bodies()})
        assert answer.status == 202 and all("id" in r for r in answer.body["results"]), answer.body
        with store.transaction(local.gw.engine) as session:
            opted_out, reachable = (
                session.exec(
                    text(f"SELECT id FROM contact WHERE phone = '{phone}'")  # type: ignore[call-overload]
                ).one()[0]
                for phone in ("+14155550103", "+14155550105")
            )
            session.add(ChannelState(contact_id=opted_out, channel="sms", opted_out=True))
            session.add(ChannelState(contact_id=reachable, channel="sms", reachability="reachable"))
            session.add(EarlyStatus(provider_message_id="early-id", status="delivered"))
    finally:
        local.stop()
    return path


def _run(
    path: Path, now: datetime, plain: bool, listen: bool, monkeypatch: pytest.MonkeyPatch
) -> dict[str, list[Any]]:
    """Two claim rounds and one record round at `now`; every table's rows after each."""
    settings = load_settings(environ={}, overrides={"database_url": f"sqlite:///{path}", **SETTINGS})
    gw = build_gateway(settings, clock=lambda: now)
    counter = itertools.count()
    monkeypatch.setattr(progress, "new_id", lambda prefix: f"{prefix}_{next(counter):04d}")
    monkeypatch.setattr(events, "new_id", lambda prefix: f"{prefix}_{next(counter):04d}")
    used = {"plain": 0, "orm": 0}
    for name in ("plain_start", "plain_finish"):
        real: Callable[..., bool] = getattr(rows, name)

        def spy(*args: Any, real: Callable[..., bool] = real) -> bool:
            allowed = plain and real(*args)
            used["plain" if allowed else "orm"] += 1
            return allowed

        monkeypatch.setattr(rows, name, spy)
    if listen:
        with store.transaction(gw.engine) as session:
            hook = WebhookSubscription(
                id="sub_1", url="http://127.0.0.1:9/h", events=["message.status"], secret="s"
            )
            hook.created_at = now
            session.add(hook)
    dispatcher = Dispatcher(gw, channels={})
    dispatcher.worker = "worker-1"
    snapshots: dict[str, list[Any]] = {}
    try:
        jobs, _, _ = dispatcher._claim_round(100, 100, {})
        snapshots["claimed"] = _dump(gw)
        jobs.sort(key=lambda job: job.message_id)  # the same outcome for the same message in both copies
        outcomes = [Outcome(job, _outcome(n, job), 0.01) for n, job in enumerate(jobs)]
        dispatcher._finish_batch(outcomes)
        snapshots["recorded"] = _dump(gw)
        dispatcher._claim_round(100, 100, {})  # the fallbacks' next steps, due at once
        snapshots["claimed again"] = _dump(gw)
    finally:
        monkeypatch.undo()
        gw.engine.dispose()
    snapshots["paths"] = [used]
    return snapshots


def _dump(gw: Gateway) -> list[Any]:
    with gw.engine.connect() as connection:
        return [
            (table.name, connection.execute(table.select().order_by(*table.primary_key.columns)).all())
            for table in SQLModel.metadata.sorted_tables
        ]


@pytest.fixture
def copies(accepted: Path, tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    one, other = tmp_path / "plain.db", tmp_path / "orm.db"
    shutil.copy(accepted, one)
    shutil.copy(accepted, other)
    yield one, other


@pytest.mark.parametrize("listen", [False, True], ids=["nobody-listens", "a-subscription-listens"])
def test_plain_rows_leave_every_table_as_the_orm_does(
    copies: tuple[Path, Path], listen: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utcnow() + timedelta(minutes=1)  # the messages are due, the one with a ttl of 1 s expired
    plain = _run(copies[0], now, True, listen, monkeypatch)
    orm = _run(copies[1], now, False, listen, monkeypatch)
    paths = plain.pop("paths")[0]
    assert orm.pop("paths")[0]["plain"] == 0
    if listen:
        assert paths["plain"] == 0  # an event about every status change: the ORM path writes it
    else:
        assert paths["plain"] >= 10 and paths["orm"] >= 5, paths  # both paths were taken
    for phase, tables in orm.items():
        for (name, expected), (_, got) in zip(tables, plain[phase], strict=True):
            assert got == expected, f"{name} differs after '{phase}'"
