"""Case 3, SMS dispatch through the Twilio simulator, with 0 ms and 50 ms of simulated provider latency:
the gateway (N messages accepted through the batch API, sent by its dispatcher) versus the official
`twilio` SDK in a sequential loop. Both are measured from their first request to the simulator's answer
to the last send (the last request's arrival plus the latency). Beside each rate: the CPU time a message of
the sender's own processes and of the simulators' process (which answers the sends and, for the gateway,
posts the status callbacks), read from /proc and, for the loop, by the loop itself. Each gateway run then
waits until its messages' status callbacks (two each) are applied: when the last one was, and the CPU a
message until then, are in a table of their own."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bench.case_email import cpu_figures, cpu_ms, submit, variants
from bench.context import Context
from bench.procs import PYTHON, Api, clean_env, run_json
from bench.stack import GatewayStack, fresh_database, running
from bench.stats import figure, rate, ratio

TEXT = "Your code is {i}. It expires in 10 minutes."


def numbers(n: int, series: int = 200) -> list[str]:
    """Valid US numbers whose last five digits pick no simulator error (+1415200xxxx)."""
    return [f"+1415{series:03d}{i:04d}" for i in range(n)]


def set_latency(ctx: Context, phones: list[str], latency: float) -> None:
    ctx.sims.behaviours({p: {"kind": "deliver", "latency": latency} for p in phones})


def gateway_run(
    ctx: Context,
    db: str,
    n: int,
    latency: float,
    mode: str = "serve",
    watch: Callable[[GatewayStack], Callable[[], None]] | None = None,
    settings: dict[str, str] | None = None,
) -> dict[str, Any]:
    """One run on a fresh database; `watch` sees the started stack and returns what to call at the end,
    `settings` are the deployment's own GATEWAY_* variables."""
    ctx.sims.reset()
    phones = numbers(n)
    set_latency(ctx, phones, latency)
    bodies = [{"to": {"phone": p}, "content": {"text": TEXT.format(i=i)}} for i, p in enumerate(phones)]
    with fresh_database(db, ctx.workdir, ctx.postgres_url) as url:
        stack = GatewayStack(url, ctx.sims, ctx.workdir, dict(settings or {}))
        with running(stack.deploy(mode)):
            api = Api(stack.port, stack.key)
            watcher = watch(stack) if watch else None
            cpu = stack.cpu_seconds(), ctx.sims.cpu_seconds()
            start = time.time()
            submit(api, bodies)
            accepted = time.time()
            seen = ctx.sims.wait_twilio(n, timeout=60 + n / 10, key="ok")
            used = stack.cpu_seconds() - cpu[0], ctx.sims.cpu_seconds() - cpu[1]
            # Then every message's two status callbacks (sent, delivered), applied: the rest of the work.
            receipts = None
            if ctx.sims.twilio()["receipts"] is not None:
                receipts = ctx.sims.wait_twilio(2 * n, timeout=60 + n / 5, key="receipts")
            used_all = stack.cpu_seconds() - cpu[0], ctx.sims.cpu_seconds() - cpu[1]
            api.close()
            if watcher is not None:
                watcher()
    end = seen["last_ok"] + latency
    return {
        "rate": rate(n, start, end),
        "accept_s": accepted - start,
        "total_s": end - start,
        "cpu_ms": cpu_ms(n, *used),
        "receipts_s": receipts["last_receipt"] - start if receipts else None,
        "cpu_ms_with_receipts": cpu_ms(n, *used_all) if receipts else None,
    }


def sdk_run(ctx: Context, n: int, latency: float) -> dict[str, Any]:
    ctx.sims.reset()
    phones = numbers(n, series=201)
    set_latency(ctx, phones, latency)
    argv = [PYTHON, "-m", "bench.peers", "twilio", "--port", str(ctx.sims.twilio_port), "--n", str(n)]
    argv += ["--sid", ctx.sims.account_sid, "--token", ctx.sims.auth_token, "--numbers", ",".join(phones)]
    simulator = ctx.sims.cpu_seconds()
    result = run_json(argv, clean_env(), timeout=120 + n * (latency + 0.05) * 2)
    seen = ctx.sims.wait_twilio(n, timeout=30, key="ok")
    end = seen["last_ok"] + latency
    return {
        "rate": rate(n, result["start"], end),
        "total_s": end - result["start"],
        "cpu_ms": cpu_ms(n, result["cpu_s"], ctx.sims.cpu_seconds() - simulator),
    }


def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes["sms"]
    gateways = variants(ctx)
    out: dict[str, Any] = {"latencies": {}, "deployments": {g: v.describe() for g, v in gateways.items()}}
    for latency in sizes["latencies"]:
        ms = f"{latency * 1000:.0f}ms"
        n_gw, n_sdk = sizes["n"], sizes["sdk_n"][ms]
        runs: dict[str, list[dict[str, Any]]] = {**{g: [] for g in gateways}, "twilio-sdk": []}
        for rep in range(ctx.reps):
            for name, v in gateways.items():
                ctx.log(f"sms {ms} rep {rep + 1}/{ctx.reps}: {name} N={n_gw}")
                runs[name].append(gateway_run(ctx, v.db, n_gw, latency, v.mode, settings=v.settings))
            ctx.log(f"sms {ms} rep {rep + 1}/{ctx.reps}: twilio SDK loop N={n_sdk}")
            runs["twilio-sdk"].append(sdk_run(ctx, n_sdk, latency))
        rates = {name: [r["rate"] for r in done] for name, done in runs.items()}
        with_receipts = {g: [r for r in runs[g] if r["receipts_s"] is not None] for g in gateways}
        out["latencies"][ms] = {
            "n": {**{g: n_gw for g in gateways}, "twilio-sdk": n_sdk},
            "rates": {name: figure(values, "msg/s") for name, values in rates.items()},
            "ratios": {g: ratio(rates[g], rates["twilio-sdk"]) for g in gateways},
            "cpu_ms_per_message": {name: cpu_figures(done) for name, done in runs.items()},
            # When the last status callback was applied, and the CPU a message until then.
            "receipts_s": {
                g: figure([r["receipts_s"] for r in rs], "s") for g, rs in with_receipts.items() if rs
            },
            "cpu_ms_with_receipts": {
                g: cpu_figures([{"cpu_ms": r["cpu_ms_with_receipts"]} for r in rs])
                for g, rs in with_receipts.items()
                if rs
            },
        }
    return out
