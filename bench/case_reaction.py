"""Case 4, timing of the dispatcher's reactions, on `gateway serve` with SQLite and default wake-ups.

- Fallback reaction: SMS to numbers the Twilio simulator refuses permanently (21211, invalid number) with an
  email fallback; the time from the simulator's failure answer to the email arriving at the SMTP sink.
- Retry punctuality: SMS to numbers that fail twice with a 503 (transient), then deliver, with
  GATEWAY_RETRY_BACKOFF=1s, GATEWAY_RETRY_MULTIPLIER=1 and GATEWAY_RETRY_JITTER=0; how late each retry's
  request reaches the simulator after its scheduled time (the retry attempt's created_at + backoff). The
  circuit breaker is kept closed (GATEWAY_BREAKER_MIN_CALLS=10000), as these failures are no outage.

Messages are sent one at a time, spaced by `gap`, so each reaction is measured without a queue in front.
"""

from __future__ import annotations

import time
from collections import defaultdict
from datetime import datetime
from typing import Any

from bench.case_sms import numbers
from bench.context import Context
from bench.procs import Api
from bench.stack import GatewayStack, fresh_database, running
from bench.stats import figure, latency_ms

BACKOFF = 1.0
RETRY_SETTINGS = {
    "GATEWAY_RETRY_BACKOFF": f"{BACKOFF}s",
    "GATEWAY_RETRY_MULTIPLIER": "1",
    "GATEWAY_RETRY_JITTER": "0",
    "GATEWAY_RETRY_ATTEMPTS": "3",
    # Two thirds of this case's calls fail on purpose; the SMS circuit breaker would (rightly) take that for
    # an outage and hold the retries back for its cool-down. It must never open here.
    "GATEWAY_BREAKER_WINDOW": "10000",
    "GATEWAY_BREAKER_MIN_CALLS": "10000",
}


def _send_spaced(api: Api, bodies: list[dict[str, Any]], gap: float) -> list[str]:
    ids = []
    for body in bodies:
        status, answer = api.call("POST", "/v1/messages", body)
        if status != 202:
            raise RuntimeError(f"send refused: {status} {answer}")
        ids.append(answer["id"])
        time.sleep(gap)
    return ids


def fallback_run(ctx: Context, m: int, gap: float, series: int) -> list[float]:
    """Seconds from each 21211 answer to its fallback email at the sink."""
    ctx.sims.reset()
    phones = numbers(m, series=series)
    ctx.sims.behaviours({p: {"kind": "error", "code": 21211} for p in phones})
    emails = [f"fallback{series}-{i}@example.test" for i in range(m)]
    bodies = [
        {"to": {"phone": p, "email": e}, "content": {"text": "Order shipped"}}
        for p, e in zip(phones, emails, strict=True)
    ]
    with fresh_database("sqlite", ctx.workdir, None) as url:
        with running(GatewayStack(url, ctx.sims, ctx.workdir).serve()) as stack:
            api = Api(stack.port, stack.key)
            _send_spaced(api, bodies, gap)
            ctx.sims.wait_smtp(m, timeout=60)
            api.close()
    failed = {who: at for at, who, outcome in ctx.sims.twilio(records=True)["records"] if outcome == "21211"}
    received = {who: at for at, who, _ in ctx.sims.smtp(records=True)["records"]}
    return [
        received[e] - failed[p] for p, e in zip(phones, emails, strict=True) if p in failed and e in received
    ]


def retry_run(ctx: Context, m: int, gap: float, series: int) -> list[float]:
    """Seconds each retry request arrived after its scheduled time."""
    ctx.sims.reset()
    phones = numbers(m, series=series)
    ctx.sims.behaviours({p: {"kind": "error", "code": 503, "fail_times": 2} for p in phones})
    bodies = [
        {"to": {"phone": p}, "channels": ["sms"], "content": {"text": "Your code is 1234"}} for p in phones
    ]
    with fresh_database("sqlite", ctx.workdir, None) as url:
        stack = GatewayStack(url, ctx.sims, ctx.workdir, settings=RETRY_SETTINGS)
        with running(stack.serve()):
            api = Api(stack.port, stack.key)
            ids = _send_spaced(api, bodies, gap)
            ctx.sims.wait_twilio(m, timeout=60 + 3 * BACKOFF, key="ok")
            messages = [api.call("GET", f"/v1/messages/{i}")[1] for i in ids]
            api.close()
    requests: dict[str, list[float]] = defaultdict(list)
    for at, who, _ in ctx.sims.twilio(records=True)["records"]:
        requests[who].append(at)
    late = []
    for phone, message in zip(phones, messages, strict=True):
        tries = sorted(requests[phone])
        attempts = sorted(message["attempts"], key=lambda a: a["created_at"])
        if len(attempts) != len(tries):
            continue  # an attempt the simulator never saw (or the reverse): no sure pairing
        for attempt, arrived in zip(attempts[1:], tries[1:], strict=True):
            scheduled = datetime.fromisoformat(attempt["created_at"]).timestamp() + BACKOFF
            late.append(arrived - scheduled)
    return late


def run(ctx: Context) -> dict[str, Any]:
    sizes = ctx.sizes["reaction"]
    m, gap = sizes["m"], sizes["gap"]
    fallback_all: list[float] = []
    retry_all: list[float] = []
    fallback_p99: list[float] = []
    retry_p99: list[float] = []
    for rep in range(ctx.reps):
        ctx.log(f"fallback reaction rep {rep + 1}/{ctx.reps}: {m} messages, one every {gap * 1000:.0f} ms")
        samples = fallback_run(ctx, m, gap, series=300 + rep)
        fallback_all += samples
        fallback_p99.append(latency_ms(samples)["p99"])
        ctx.log(f"retry punctuality rep {rep + 1}/{ctx.reps}: {m} messages x 2 retries")
        samples = retry_run(ctx, m, gap, series=400 + rep)
        retry_all += samples
        retry_p99.append(latency_ms(samples)["p99"])
    return {
        "database": "sqlite",
        "mode": "gateway serve",
        "messages_per_run": m,
        "gap_s": gap,
        "settings": RETRY_SETTINGS | {"GATEWAY_DISPATCH_INTERVAL": "1s (default)"},
        "fallback_ms": latency_ms(fallback_all),
        "fallback_p99_per_run": figure(fallback_p99, "ms"),
        "retry_late_ms": latency_ms(retry_all),
        "retry_p99_per_run": figure(retry_p99, "ms"),
        "samples": {
            "fallback_ms": [round(s * 1000, 2) for s in fallback_all],
            "retry_late_ms": [round(s * 1000, 2) for s in retry_all],
        },
    }
