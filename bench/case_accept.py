"""Case 1, accept: `POST /v1/messages` under gunicorn (2 workers x 4 threads, gthread), the gateway's
`wsgi:app` (API only) versus `bench.baseline_app` (parse the same JSON, insert one row), on the same kind of
fresh database, driven by `bench.loadgen` in its own process with 8 keep-alive connections, opened 50 ms
apart. Each run records how many of them each gunicorn worker holds (from `ss`), since a worker holding
most of them leaves the other CPU partly idle."""

from __future__ import annotations

import re
import subprocess
import threading
from collections import Counter
from typing import Any

from bench.context import Context
from bench.procs import PYTHON, clean_env, free_port, run_json
from bench.stack import GUNICORN_THREADS, GUNICORN_WORKERS, GatewayStack, fresh_database, gunicorn, running
from bench.stats import figure, ratio

CONNECTIONS = 8
STAGGER = 0.05  # seconds between opening two of the load's connections


def connections_per_worker(port: int) -> list[int] | None:
    """How many established connections to `port` each server process holds, fewest first (None without
    `ss`)."""
    try:
        argv = ["ss", "-tnpH", "state", "established", f"sport = :{port}"]
        listing = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sorted(Counter(re.findall(r"pid=(\d+)", listing)).values())


def load(ctx: Context, port: int, key: str) -> dict[str, Any]:
    sizes = ctx.sizes["accept"]
    argv = [PYTHON, "-m", "bench.loadgen", "--port", str(port), "--key", key, "--conns", str(CONNECTIONS)]
    argv += ["--seconds", str(sizes["seconds"]), "--warmup", str(sizes["warmup"]), "--stagger", str(STAGGER)]
    seen: list[list[int] | None] = []
    look = threading.Timer(
        sizes["warmup"] + sizes["seconds"] / 2, lambda: seen.append(connections_per_worker(port))
    )
    look.start()
    try:
        result: dict[str, Any] = run_json(argv, clean_env(), timeout=120 + sizes["seconds"] * 2)
    finally:
        look.cancel()
        look.join()
    result["connections_per_worker"] = seen[0] if seen else None
    if result["errors"] or not result["requests"]:
        raise RuntimeError(
            f"load generator saw {result['errors']} errors ({result['error_statuses']}) "
            f"and {result['requests']} successes"
        )
    return result


def gateway_run(ctx: Context, db: str) -> dict[str, Any]:
    ctx.sims.reset()
    with fresh_database(db, ctx.workdir, ctx.postgres_url) as url:
        with running(GatewayStack(url, ctx.sims, ctx.workdir).api_only()) as stack:
            return load(ctx, stack.port, stack.key)


def baseline_run(ctx: Context, db: str) -> dict[str, Any]:
    from bench import baseline_app  # imports the gateway's engine setup: only once the gateway tree is chosen

    with fresh_database(db, ctx.workdir, ctx.postgres_url) as url:
        baseline_app.create_schema(url)
        port = free_port()
        server = gunicorn(
            "baseline-gunicorn", "bench.baseline_app:app", port, clean_env(BENCH_BASELINE_DB=url), ctx.workdir
        )
        try:
            return load(ctx, port, "")
        finally:
            server.stop()


def run(ctx: Context) -> dict[str, Any]:
    reps = ctx.sizes["accept"].get("reps", ctx.reps)
    out: dict[str, Any] = {
        "server": f"gunicorn, {GUNICORN_WORKERS} workers x {GUNICORN_THREADS} threads (gthread)",
        "connections": CONNECTIONS,
        "stagger_s": STAGGER,
        "seconds": ctx.sizes["accept"]["seconds"],
        "runs": reps,
        "databases": {},
    }
    for db in ctx.databases:
        runs: dict[str, list[dict[str, Any]]] = {"gateway": [], "baseline": []}
        for rep in range(reps):
            ctx.log(f"accept {db} rep {rep + 1}/{reps}: gateway, then baseline")
            runs["gateway"].append(gateway_run(ctx, db))
            runs["baseline"].append(baseline_run(ctx, db))
        row: dict[str, Any] = {}
        for app, results in runs.items():
            row[app] = {
                "rps": figure([r["rps"] for r in results], "req/s"),
                "p50_ms": figure([r["latency_ms"]["p50"] for r in results], "ms"),
                "p99_ms": figure([r["latency_ms"]["p99"] for r in results], "ms"),
                "connections_per_worker": [r["connections_per_worker"] for r in results],
            }
        row["ratio"] = ratio([r["rps"] for r in runs["gateway"]], [r["rps"] for r in runs["baseline"]])
        out["databases"][db] = row
    return out
