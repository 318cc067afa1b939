"""Where the gateway spends its time: py-spy samples a `gateway worker` draining a queued backlog of
emails, then of SMS, `gateway serve` taking emails end to end as in the email case and SMS end to end
(accepts, sends, status callbacks), both with each thread's share, and gunicorn's workers accepting
messages (SQLite), outside the timed runs.
`python -m bench --profile` adds the summaries to the results and flame graphs beside the report's charts
(docs/benchmarks/ for the default report).

Shares are of samples of the thread holding the GIL (py-spy --gil), that is of the time a process ran Python:
`self` counts the innermost frame only, `total` every sample with the function anywhere on the stack.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from bench import case_email, case_sms
from bench.case_backlog import drain_run
from bench.context import Context
from bench.procs import PYTHON, clean_env, run_json
from bench.stack import GatewayStack, fresh_database, running

RATE = 200  # samples per second


def _pyspy() -> str | None:
    found = shutil.which("py-spy")
    if found:
        return found
    import sys

    candidate = Path(sys.executable).with_name("py-spy")
    return str(candidate) if candidate.exists() else None


def available() -> str | None:
    return None if _pyspy() else "py-spy is not installed (pip install '.[bench]')"


def summarise(raw: Path, top: int = 15) -> dict[str, Any]:
    """Top functions by self and by total share of the collapsed stacks py-spy wrote; with `--threads`,
    each thread's share too (threads of one pool counted together)."""
    self_counts: Counter[str] = Counter()
    total_counts: Counter[str] = Counter()
    thread_counts: Counter[str] = Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        names = stack.split(";")
        if names[0].startswith("thread ("):  # 'thread (0x7f…): waitress-3' under --threads
            thread = names.pop(0).rpartition("): ")[2]
            thread_counts[thread.rstrip("0123456789").rstrip("-_") or thread] += count
        frames = [f.split(" (", 1)[0] + _where(f) for f in names]
        self_counts[frames[-1]] += count
        for frame in set(frames):
            total_counts[frame] += count

    def share(counter: Counter[str], keep: Any) -> list[dict[str, Any]]:
        rows = [(name, n) for name, n in counter.most_common() if keep(name)][:top]
        return [{"function": name, "share": round(n / samples, 4)} for name, n in rows]

    summary = {
        "samples": samples,
        "self": share(self_counts, lambda _: True),
        "total_gateway": share(total_counts, lambda name: "gateway/" in name or "fallbacks/" in name),
    }
    if thread_counts:
        summary["threads"] = [
            {"thread": name, "share": round(n / samples, 4)} for name, n in thread_counts.most_common()
        ]
    return summary


def _where(frame: str) -> str:
    """' (gateway/dispatch.py)' from 'Dispatcher._take (/…/gateway/dispatch.py:170)'."""
    if " (" not in frame:
        return ""
    path = frame.split(" (", 1)[1].rstrip(")").rsplit(":", 1)[0]
    for marker in ("site-packages/", "/main/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f" ({path})"


def _record(pid: int, raw: Path, svg: Path, children: bool = False, threads: bool = False) -> Any:
    """Start py-spy on `pid` (raw stacks and a flame graph); returns a function that stops it."""
    # --gil: only the thread holding the GIL is sampled, so a thread waiting (for a lock, the database, the
    # network) does not count as busy.
    argv = [str(_pyspy()), "record", "--pid", str(pid), "--rate", str(RATE), "--gil"]
    argv += ["--subprocesses"] * children + ["--threads"] * threads
    spies = [
        subprocess.Popen([*argv, "--format", "raw", "-o", str(raw)], stdout=subprocess.DEVNULL),
        subprocess.Popen([*argv, "--format", "flamegraph", "-o", str(svg)], stdout=subprocess.DEVNULL),
    ]

    def detach() -> None:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            spy.wait(60)

    return detach


def _finish(summary: dict[str, Any], svg: Path) -> dict[str, Any]:
    summary["flamegraph"] = svg.name if svg.exists() else None  # beside the report's charts
    return summary


def profile_drain(ctx: Context, channel: str, n: int, outdir: Path) -> dict[str, Any]:
    raw, svg = ctx.workdir / f"profile-{channel}.txt", outdir / f"profile-{channel}.svg"
    ctx.log(f"profile: worker draining {n:,} queued {channel} messages under py-spy")
    result = drain_run(ctx, "sqlite", n, channel, on_worker=lambda worker: _record(worker.pid, raw, svg))
    summary = summarise(raw)
    summary["rate_under_profiler"] = result["rate"]
    summary["what"] = f"one gateway worker draining {n:,} queued {channel} messages (SQLite)"
    return _finish(summary, svg)


def profile_accept(ctx: Context, seconds: float, outdir: Path) -> dict[str, Any]:
    raw, svg = ctx.workdir / "profile-accept.txt", outdir / "profile-accept.svg"
    ctx.log(f"profile: gunicorn wsgi:app accepting for {seconds:.0f} s under py-spy")
    with fresh_database("sqlite", ctx.workdir, None) as url:
        with running(GatewayStack(url, ctx.sims, ctx.workdir).api_only()) as stack:
            detach = _record(stack.procs[0].pid, raw, svg, children=True)
            argv = [PYTHON, "-m", "bench.loadgen", "--port", str(stack.port), "--key", stack.key]
            result = run_json([*argv, "--seconds", str(seconds), "--warmup", "0"], clean_env(), timeout=300)
            detach()
    summary = summarise(raw)
    summary["rate_under_profiler"] = result["rps"]
    summary["what"] = "gunicorn wsgi:app (both workers) accepting POST /v1/messages (SQLite)"
    return _finish(summary, svg)


def profile_serve_email(ctx: Context, n: int, outdir: Path) -> dict[str, Any]:
    """`gateway serve` as in the email case with the default settings: accepting n emails through the
    batch API and sending them into the sink in one process, until the last one arrived."""
    raw, svg = ctx.workdir / "profile-serve-email.txt", outdir / "profile-serve-email.svg"
    ctx.log(f"profile: gateway serve taking {n:,} emails end to end under py-spy")

    def watch(stack: GatewayStack) -> Any:
        return _record(stack.procs[0].pid, raw, svg, threads=True)

    result = case_email.gateway_run(ctx, "sqlite", n, "profile", watch=watch)
    summary = summarise(raw)
    summary["rate_under_profiler"] = result["rate"]
    summary["what"] = f"gateway serve taking {n:,} emails end to end (SQLite), by thread too"
    return _finish(summary, svg)


def profile_serve_sms(ctx: Context, n: int, outdir: Path) -> dict[str, Any]:
    """`gateway serve` as in the SMS case at 0 ms latency: accepting, sending and taking the status
    callbacks of n SMS in one process, until the last callback is applied."""
    raw, svg = ctx.workdir / "profile-serve-sms.txt", outdir / "profile-serve-sms.svg"
    ctx.log(f"profile: gateway serve taking {n:,} SMS end to end under py-spy")

    def watch(stack: GatewayStack) -> Any:
        return _record(stack.procs[0].pid, raw, svg, threads=True)

    result = case_sms.gateway_run(ctx, "sqlite", n, 0.0, watch=watch)
    summary = summarise(raw)
    summary["rate_under_profiler"] = result["rate"]
    summary["what"] = (
        f"gateway serve taking {n:,} SMS end to end at 0 ms latency (SQLite) until their status callbacks "
        "were applied, by thread too"
    )
    return _finish(summary, svg)


def run(ctx: Context, outdir: Path) -> dict[str, Any]:
    outdir.mkdir(parents=True, exist_ok=True)
    n = ctx.sizes["profile"]["n"]
    out = {channel: profile_drain(ctx, channel, n, outdir) for channel in ("email", "sms")}
    out["serve-email"] = profile_serve_email(ctx, n, outdir)
    out["serve-sms"] = profile_serve_sms(ctx, n, outdir)
    out["accept"] = profile_accept(ctx, ctx.sizes["profile"].get("accept_seconds", 8), outdir)
    return out
