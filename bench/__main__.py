"""`python -m bench [--quick] [--cases accept,email,...] [--profile] [--out FILE] [--docs FILE]`.

Starts the simulators once, runs each case, writes the results (JSON) and, for a full run, the report
(docs/benchmarks.md with charts in docs/benchmarks/). PostgreSQL cases run when `--postgres-url`,
BENCH_POSTGRES_URL or GATEWAY_TEST_POSTGRES_URL names a database; they are skipped otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import procs
from bench.context import Context
from bench.procs import ROOT
from bench.sims import Sims

CASES = ["accept", "email", "sms", "reaction", "backlog"]
FULL: dict[str, Any] = {
    "reps": 3,
    "gateways": [
        "gateway-sqlite-serve",
        "gateway-sqlite-serve-512",
        "gateway-sqlite-serve-worker",
        "gateway-postgres-split",
    ],
    # Five runs: the one-insert baseline alone swings by a third from run to run on a shared machine.
    "accept": {"seconds": 6, "warmup": 1, "reps": 5},
    "email": {"n": 2000, "apprise_tuned": 300, "apprise": 3, "apprise_reps": 3},
    "sms": {"n": 1500, "latencies": [0.0, 0.05], "sdk_n": {"0ms": 1000, "50ms": 100}},
    "reaction": {"m": 30, "gap": 0.37},
    "backlog": {"sqlite": {"1000": 3, "10000": 2, "100000": 1}, "postgres": {"1000": 3, "10000": 1}},
    "profile": {"n": 3000},
}
QUICK: dict[str, Any] = {
    "reps": 1,
    "gateways": ["gateway-sqlite-serve", "gateway-sqlite-serve-512", "gateway-sqlite-serve-worker"],
    "accept": {"seconds": 1.0, "warmup": 0.3},
    "email": {"n": 200, "apprise_tuned": 40, "apprise": 2, "apprise_reps": 1},
    "sms": {"n": 100, "latencies": [0.0, 0.05], "sdk_n": {"0ms": 100, "50ms": 10}},
    "reaction": {"m": 5, "gap": 0.37},
    "backlog": {"sqlite": {"200": 1, "1000": 1}},
    "profile": {"n": 300, "accept_seconds": 2},
}
RESULTS = ROOT / "bench" / "results"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small N, one run each (a smoke test)")
    parser.add_argument(
        "--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES) + " (or none)"
    )
    parser.add_argument("--profile", action="store_true", help="also profile the worker with py-spy")
    parser.add_argument(
        "--out",
        type=Path,
        help="results file (default bench/results/latest.json, or bench/results/quick.json with --quick)",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        help="write the report here (default docs/benchmarks.md "
        "for a full run of every case, none otherwise)",
    )
    parser.add_argument(
        "--quiet-load",
        type=float,
        help="before each case, wait (up to 10 minutes) until the 1-minute load average is below this",
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other cases of the existing results file (re-measure only --cases)",
    )
    parser.add_argument(
        "--gateway-ref",
        help="benchmark the gateway's code at this git ref (e.g. HEAD) instead of the working tree",
    )
    parser.add_argument(
        "--postgres-url",
        default=os.environ.get("BENCH_POSTGRES_URL") or os.environ.get("GATEWAY_TEST_POSTGRES_URL"),
    )
    return parser


def _machine() -> dict[str, Any]:
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {
        "cpus": os.cpu_count(),
        "memory_gib": memory,
        "python": platform.python_version(),
        "platform": platform.platform(terse=True),
    }


def _commit() -> str | None:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "gateway", "fallbacks"], cwd=ROOT, capture_output=True, text=True
    )
    if done.returncode != 0:
        return None
    return done.stdout.strip() + (" + uncommitted changes" if dirty.stdout.strip() else "")


def _postgres(url: str | None) -> str | None:
    if not url:
        return None
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return url
    except Exception as exc:  # noqa: BLE001 - an unreachable database only skips the PostgreSQL runs
        print(f"bench: PostgreSQL at {url} is not reachable ({exc}); its runs are skipped", file=sys.stderr)
        return None


def argv_of(args: argparse.Namespace) -> list[str]:
    """The options this run was given, for the report (without the PostgreSQL URL's value)."""
    out = ["--quick"] * args.quick + ["--profile"] * args.profile + ["--merge"] * args.merge
    if args.cases != ",".join(CASES):
        out += ["--cases", args.cases]
    if args.quiet_load:
        out += ["--quiet-load", f"{args.quiet_load:g}"]
    if args.gateway_ref:
        out += ["--gateway-ref", args.gateway_ref]
    return out


def wait_for_quiet(ctx: Context, below: float, longest: float = 600.0) -> None:
    """Other work on this machine skews every figure: give it a chance to finish first."""
    deadline = time.monotonic() + longest
    if os.getloadavg()[0] >= below:
        ctx.log(f"waiting for the 1-minute load average ({os.getloadavg()[0]:.1f}) to fall below {below}")
    while os.getloadavg()[0] >= below and time.monotonic() < deadline:
        time.sleep(5)


def _modules() -> dict[str, Any]:
    """The case modules, imported once the gateway's code is chosen (they import parts of it)."""
    from bench import case_accept, case_backlog, case_email, case_reaction, case_sms

    return {"accept": case_accept, "email": case_email, "sms": case_sms, "reaction": case_reaction,
            "backlog": case_backlog}  # fmt: skip


def write_json(path: Path, results: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(results, indent=1, default=str) + "\n")
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    names = [n.strip() for n in args.cases.split(",") if n.strip() and n.strip() != "none"]
    unknown = sorted(set(names) - set(CASES))
    if unknown:
        print(f"bench: unknown case {unknown[0]!r}", file=sys.stderr)
        return 2
    out = args.out or RESULTS / ("quick.json" if args.quick else "latest.json")
    docs = args.docs or (
        ROOT / "docs" / "benchmarks.md"
        if not args.quick and (args.merge or len(names) == len(CASES))
        else None
    )
    with tempfile.TemporaryDirectory(prefix="bench-") as scratch:
        workdir = Path(scratch)
        commit = _commit()
        if args.gateway_ref:
            commit = procs.use_gateway_snapshot(args.gateway_ref, workdir / "gateway-snapshot")
        return run(args, names, sizes, workdir, commit, out, docs)


def run(
    args: argparse.Namespace,
    names: list[str],
    sizes: dict[str, Any],
    workdir: Path,
    commit: str | None,
    out: Path,
    docs: Path | None,
) -> int:
    results: dict[str, Any] = {
        "schema": 1,
        "mode": "quick" if args.quick else "full",
        "started_at": datetime.now(UTC).isoformat(),
        "machine": _machine(),
        "commit": commit,
        "reps": sizes["reps"],
        "sizes": sizes,
        "cases": {},
        "commands": [" ".join(["python -m bench", *(argv_of(args))])],
    }
    started = time.monotonic()
    failed = False
    modules = _modules()
    sims = Sims.start(workdir)
    ctx = Context(args.quick, workdir, sims, _postgres(args.postgres_url), sizes["reps"], sizes)
    ctx.log(f"bench: {results['mode']} run of {', '.join(names)}; databases: {', '.join(ctx.databases)}")
    try:
        for name in names:
            if args.quiet_load:
                wait_for_quiet(ctx, args.quiet_load)
            load, case_started = os.getloadavg()[0], time.monotonic()
            try:
                results["cases"][name] = modules[name].run(ctx)
                # Other work on the machine skews every figure; the 1-minute load average shows it.
                results["cases"][name]["load_average"] = {"before": load, "after": os.getloadavg()[0]}
                results["cases"][name]["measured"] = {
                    "at": datetime.now(UTC).isoformat(timespec="seconds"),
                    "seconds": time.monotonic() - case_started,
                    "commit": commit,
                }
            except Exception as exc:  # noqa: BLE001 - record the failure, run the other cases
                failed = True
                traceback.print_exc()
                results["cases"][name] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            # Progress so far, beside the results file (which --merge still needs intact).
            write_json(out.with_name(out.name + ".partial.tmp"), results)
        if args.profile:
            from bench import profile

            reason = profile.available()
            try:
                # Flame graphs go beside the report's charts (a scratch folder when there is no report).
                graphs = docs.parent / docs.stem if docs else workdir / "profile"
                results["profile"] = profile.run(ctx, graphs) if reason is None else {}
            except Exception as exc:  # noqa: BLE001 - a profiler that fails must not cost the run's figures
                failed = True
                traceback.print_exc()
                results["profile"] = {"error": f"{type(exc).__name__}: {exc}"[:2000]}
            if reason:
                ctx.log(f"profile skipped: {reason}")
    finally:
        sims.stop()
    from bench.targets import evaluate

    if args.merge and out.exists():
        previous = json.loads(out.read_text())
        results["merged_from"] = {"started_at": previous["started_at"], "commit": previous.get("commit")}
        results["cases"] = {**previous["cases"], **results["cases"]}
        results["commands"] = previous.get("commands", []) + results["commands"]
        results["profile"] = results.get("profile") or previous.get("profile")
    results["finished_at"] = datetime.now(UTC).isoformat()
    results["duration_s"] = time.monotonic() - started
    results["targets"] = evaluate(results["cases"])
    write_json(out, results)
    print(f"bench: results in {out}", file=sys.stderr)
    if docs is not None:
        render_docs(results, docs)
        print(f"bench: report in {docs}", file=sys.stderr)
    return 1 if failed else 0


def render_docs(results: dict[str, Any], docs: Path) -> None:
    from bench import charts, report

    drawn = charts.draw(results["cases"], docs.parent / docs.stem)
    methods = {name: module.__doc__ or "" for name, module in _modules().items()}
    docs.write_text(report.render(results, drawn, docs, methods))


if __name__ == "__main__":
    sys.exit(main())
