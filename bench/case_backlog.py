"""Case 5, backlog scaling: N emails already queued, then one `gateway worker` drains them into the SMTP sink.

Queueing N messages through the API would take longer than draining them, so one message is accepted
through the real API (an API-only gateway, no dispatcher) and copied N-1 times in SQL: every copy has its
own message id, attempt id and address and is otherwise the row the API wrote. The copies' ids sort in the
order they were queued, as the API's time-sortable ids do. The drain rate is measured
at the sink (first to last message received); the worker's peak RSS is its VmHWM just before it stops.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, inspect, text

from bench.context import Context
from bench.procs import Api, Proc
from bench.stack import GatewayStack, fresh_database, running
from bench.stats import figure, rate, ratio

SERIES = "WITH RECURSIVE series(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM series WHERE n < :count) "


def _copy_sql(table: str, columns: list[str], replace: dict[str, str]) -> str:
    names = ", ".join(f'"{c}"' for c in columns)
    values = ", ".join(replace.get(c, f't."{c}"') for c in columns)
    return (
        f'{SERIES}INSERT INTO "{table}" ({names}) SELECT {values} FROM "{table}" t, series WHERE t.id = :tid'
    )


def copy_id(dialect: str, prefix: str) -> str:
    """SQL for the id of copy n: shaped like `gateway.ids.new_id` (prefix, 10 characters of time, 16 more)
    and sorting in the order of the copies, as ids of messages accepted one after the other do, so that the
    copies sit in the primary-key index where the API's own messages would."""
    counter = "printf('%016d', series.n)" if dialect == "sqlite" else "lpad(CAST(series.n AS TEXT), 16, '0')"
    return f"'{prefix}_' || '0000000000' || {counter}"


def enqueue(url: str, template_id: str, count: int, email: bool = True) -> None:
    """Copy the accepted template message (and its attempt) `count` times; emails get their own address."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            if conn.dialect.name == "sqlite":
                conn.exec_driver_sql("PRAGMA recursive_triggers = 0")
            inspector = inspect(conn)
            message_cols = [c["name"] for c in inspector.get_columns("message")]
            attempt_cols = [c["name"] for c in inspector.get_columns("attempt")]
            row = conn.execute(
                text("SELECT current_attempt_id FROM message WHERE id = :id"), {"id": template_id}
            )
            attempt_id = row.scalar_one()
            n = "CAST(series.n AS VARCHAR(12))"
            message_id, attempt_id_sql = copy_id(conn.dialect.name, "msg"), copy_id(conn.dialect.name, "att")
            message_sql = _copy_sql(
                "message",
                message_cols,
                {"id": message_id, "current_attempt_id": attempt_id_sql},
            )
            attempt_replace = {"id": attempt_id_sql, "message_id": message_id}
            if email:
                attempt_replace["address"] = f"'backlog' || {n} || '@example.test'"
            attempt_sql = _copy_sql("attempt", attempt_cols, attempt_replace)
            conn.execute(text(message_sql), {"count": count, "tid": template_id})
            conn.execute(text(attempt_sql), {"count": count, "tid": attempt_id})
    finally:
        engine.dispose()


EMAIL = {"to": {"email": "backlog0@example.test"}, "content": {"subject": "Statement", "text": "Hi"}}
SMS = {"to": {"phone": "+14155000001"}, "content": {"text": "Your code is 1234"}}


def drain_run(
    ctx: Context, db: str, n: int, channel: str = "email", on_worker: Callable[[Proc], Any] | None = None
) -> dict[str, Any]:
    """Queue n messages, start a worker, wait for the last one at the sink; `on_worker` sees the worker."""
    ctx.sims.reset()
    with fresh_database(db, ctx.workdir, ctx.postgres_url) as url:
        with running(GatewayStack(url, ctx.sims, ctx.workdir).api_only()) as stack:
            api = Api(stack.port, stack.key)
            status, answer = api.call("POST", "/v1/messages", EMAIL if channel == "email" else SMS)
            api.close()
            if status != 202:
                raise RuntimeError(f"template refused: {status} {answer}")
            started = time.monotonic()
            enqueue(url, answer["id"], n - 1, email=channel == "email")
            queued_s = time.monotonic() - started
            worker = stack.worker()
            watcher = on_worker(worker) if on_worker else None
            if channel == "email":
                seen = ctx.sims.wait_smtp(n, timeout=120 + n / 20)
            else:
                seen = ctx.sims.wait_twilio(n, timeout=120 + n / 20, key="ok")
            peak = worker.peak_rss_mb()
            if watcher is not None:
                watcher()
    return {"rate": rate(n - 1, seen["first"], seen["last"]), "peak_rss_mb": peak, "queue_s": queued_s}


def run(ctx: Context) -> dict[str, Any]:
    """Sizes per database: {"sqlite": {"1000": reps, ...}, ...}; PostgreSQL only with a URL."""
    out: dict[str, Any] = {"channel": "email", "mode": "one gateway worker", "databases": {}}
    for db, plan in ctx.sizes["backlog"].items():
        if db not in ctx.databases:
            continue
        rows: dict[str, Any] = {}
        for size, reps in plan.items():
            n = int(size)
            results = []
            for rep in range(reps):
                ctx.log(f"backlog {db} N={n:,} rep {rep + 1}/{reps}")
                results.append(drain_run(ctx, db, n))
            rows[size] = {
                "rate": figure([r["rate"] for r in results], "msg/s"),
                "peak_rss_mb": figure([r["peak_rss_mb"] for r in results], "MiB"),
                "queue_s": figure([r["queue_s"] for r in results], "s"),
            }
        sizes = sorted(plan, key=int)
        # One pair of medians from this invocation: the largest backlog's rate over the smallest's.
        rows["ratio_largest_to_smallest"] = ratio(
            [rows[sizes[-1]]["rate"]["median"]], [rows[sizes[0]]["rate"]["median"]]
        )
        out["databases"][db] = rows
    return out
