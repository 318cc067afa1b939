"""Case 2, email dispatch end to end: N messages accepted through the batch API, then delivered into the
SMTP sink; measured from the first accept to the last message at the sink. Peers send the same messages
into the same sink: smtplib on one shared connection, notifme-sdk (Node), Apprise (tuned, and defaults).
Beside each rate: the CPU time a message of the sender's own processes and of the sink's."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bench import notifme
from bench.context import Context, chunks
from bench.procs import PYTHON, Api, clean_env, run_json
from bench.stack import GatewayStack, fresh_database, running
from bench.stats import figure, rate, ratio

BATCH = 500
SUBJECT = "Order {i} shipped"
TEXT = "Your order {i} has shipped. Track it at https://biz.example/track/{i}."


def email_bodies(prefix: str, n: int) -> list[dict[str, Any]]:
    return [
        {
            "to": {"email": f"{prefix}{i}@example.test"},
            "content": {"subject": SUBJECT.format(i=i), "text": TEXT.format(i=i)},
        }
        for i in range(n)
    ]


def submit(api: Api, bodies: list[dict[str, Any]]) -> None:
    """Accept every body through POST /v1/messages/batch; fail loudly on any refusal."""
    for chunk in chunks(bodies, BATCH):
        status, answer = api.call("POST", "/v1/messages/batch", {"messages": chunk})
        errors = [r["error"] for r in (answer or {}).get("results", []) if "error" in r]
        if status != 202 or errors:
            raise RuntimeError(f"batch refused: {status} {errors[:1] or answer}")


def gateway_run(
    ctx: Context,
    db: str,
    n: int,
    tag: str,
    mode: str = "serve",
    settings: dict[str, str] | None = None,
    watch: Callable[[GatewayStack], Callable[[], None]] | None = None,
) -> dict[str, Any]:
    """One end-to-end run on a fresh database; `mode` is one of `GatewayStack.deploy`'s, `settings` the
    deployment's own GATEWAY_* variables; `watch` sees the started stack and returns what to call at the
    end (as in `case_sms.gateway_run`)."""
    ctx.sims.reset()
    with fresh_database(db, ctx.workdir, ctx.postgres_url) as url:
        stack = GatewayStack(url, ctx.sims, ctx.workdir, dict(settings or {}))
        with running(stack.deploy(mode)):
            api = Api(stack.port, stack.key)
            watcher = watch(stack) if watch else None
            cpu = stack.cpu_seconds(), ctx.sims.cpu_seconds()
            start = time.time()
            submit(api, email_bodies(f"gw{tag}-", n))
            accepted = time.time()
            seen = ctx.sims.wait_smtp(n, timeout=60 + n / 20)
            used = stack.cpu_seconds() - cpu[0], ctx.sims.cpu_seconds() - cpu[1]
            api.close()
            if watcher is not None:
                watcher()
    return {
        "rate": rate(n, start, seen["last"]),
        "accept_s": accepted - start,
        "total_s": seen["last"] - start,
        "cpu_ms": cpu_ms(n, *used),
    }


def peer_run(ctx: Context, peer: str, n: int, tag: str) -> dict[str, Any]:
    ctx.sims.reset()
    port = str(ctx.sims.smtp_port)
    sink = ctx.sims.cpu_seconds()
    if peer == "notifme":
        result = notifme.run(port, n, f"nm{tag}-")
    else:
        argv = [PYTHON, "-m", "bench.peers", peer, "--port", port, "--n", str(n), "--prefix", f"{peer}{tag}-"]
        result = run_json(argv, clean_env(), timeout=120 + n * 6)
    seen = ctx.sims.wait_smtp(n, timeout=30)
    return {
        "rate": rate(n, result["start"], seen["last"]),
        "total_s": seen["last"] - result["start"],
        "cpu_ms": cpu_ms(n, result["cpu_s"], ctx.sims.cpu_seconds() - sink),
    }


def cpu_ms(n: int, own: float, simulator: float) -> dict[str, float]:
    """CPU milliseconds a message: of the sender's own processes, and of the simulators' process."""
    return {"own": own * 1000 / n, "simulator": simulator * 1000 / n}


def cpu_figures(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The CPU a message of each run, summarised as figures."""
    return {part: figure([r["cpu_ms"][part] for r in runs], "ms") for part in ("own", "simulator")}


@dataclass(frozen=True)
class Variant:
    """A deployment of the gateway: its database, `serve` or `split`, and settings beyond the bench's own."""

    db: str
    mode: str
    settings: dict[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"database": self.db, "mode": self.mode, "settings": self.settings}


# The deployments: the embedded one with the default settings and with more sends in flight (the default,
# 64, stays under providers' concurrency limits such as Twilio's; more in flight means bigger batches of
# claims and records, so less work a message), the embedded one with a `gateway worker` beside it on the
# same SQLite file (a second process, so a second CPU, for the dispatching), and the scale-out one.
VARIANTS = {
    "gateway-sqlite-serve": Variant("sqlite", "serve"),
    "gateway-sqlite-serve-512": Variant("sqlite", "serve", {"GATEWAY_DISPATCH_CONCURRENCY": "512"}),
    "gateway-sqlite-serve-worker": Variant("sqlite", "serve+worker"),
    "gateway-postgres-split": Variant("postgres", "split"),
}


def variants(ctx: Context) -> dict[str, Variant]:
    """The deployments this run measures: those the sizes name, on databases it has."""
    wanted = ctx.sizes.get("gateways", list(VARIANTS))
    return {name: v for name, v in VARIANTS.items() if name in wanted and v.db in ctx.databases}


def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes["email"]
    peers = {"smtplib": sizes["n"], "notifme": sizes["n"], "apprise-tuned": sizes["apprise_tuned"]}
    peers["apprise"] = sizes["apprise"]
    if notifme.available() is not None:
        del peers["notifme"]
    gateways = variants(ctx)
    runs: dict[str, list[dict[str, Any]]] = {**{g: [] for g in gateways}, **{p: [] for p in peers}}
    for rep in range(ctx.reps):
        for name, v in gateways.items():
            ctx.log(f"email rep {rep + 1}/{ctx.reps}: {name}, N={sizes['n']}")
            runs[name].append(gateway_run(ctx, v.db, sizes["n"], f"{rep}", v.mode, v.settings))
        for peer, n in peers.items():
            if peer == "apprise" and rep >= sizes["apprise_reps"]:
                continue
            ctx.log(f"email rep {rep + 1}/{ctx.reps}: {peer}, N={n}")
            runs[peer].append(peer_run(ctx, peer, n, f"{rep}"))
    rates = {name: [r["rate"] for r in rs] for name, rs in runs.items()}
    return {
        "n": {**{g: sizes["n"] for g in gateways}, **peers},
        "deployments": {g: v.describe() for g, v in gateways.items()},
        "skipped": {"notifme": notifme.available()} if "notifme" not in peers else {},
        "rates": {name: figure(values, "msg/s") for name, values in rates.items()},
        "accept_s": {g: figure([r["accept_s"] for r in runs[g]], "s") for g in gateways},
        "ratios": {g: {p: ratio(rates[g], rates[p]) for p in peers} for g in gateways},
        "cpu_ms_per_message": {name: cpu_figures(rs) for name, rs in runs.items() if rs},
    }
