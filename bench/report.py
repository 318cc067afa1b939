"""docs/benchmarks.md from a results file: tables, charts, targets, and the analysis in bench/notes.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.stats import figure, fmt, fmt_figure
from bench.targets import GATEWAY_LABELS

NOTES = Path(__file__).resolve().parent / "notes.md"
PEER_LABELS = {
    "smtplib": "`smtplib`, one shared connection, sequential",
    "notifme": "notifme-sdk (Node), pooled (4), 16 in parallel, TCP_NODELAY",
    "apprise-tuned": "Apprise, throttle off, 8 threads",
    "apprise": "Apprise, defaults (5.5 s between sends)",
    "twilio-sdk": "`twilio` SDK, sequential loop",
}


def _minutes(results: dict[str, Any]) -> float:
    """The full run's length: the cases' own durations when they were measured in separate invocations."""
    timed = [c["measured"]["seconds"] for c in results["cases"].values() if "measured" in c]
    return float(sum(timed) if timed else results["duration_s"]) / 60


def label(name: str) -> str:
    return GATEWAY_LABELS.get(name, PEER_LABELS.get(name, name))


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _targets(results: dict[str, Any]) -> str:
    rows = []
    for t in results.get("targets", []):
        verdict = {True: "**met**", False: "not met", None: "–"}[t["met"]]
        measured = fmt(t["measured"], 2 if t["unit"] == "×" else 0)
        rows.append(
            [t["case"], t["what"], t["target"], f"{measured}{t['unit']}", f"{verdict} ({t['gap']})", t["how"]]
        )
    return table(["case", "what", "target", "measured (median)", "verdict", "how"], rows)


def _accept(data: dict[str, Any]) -> str:
    rows = []
    for db, row in data["databases"].items():
        for app in ("gateway", "baseline"):
            r = row[app]
            ratio = fmt_figure(row["ratio"], 2) + "×" if app == "gateway" else ""
            rows.append(
                [db, app, fmt_figure(r["rps"]), fmt_figure(r["p50_ms"], 1), fmt_figure(r["p99_ms"], 1), ratio]
            )
    text = f"Server: {data['server']}; load: {data['connections']} keep-alive connections "
    if data.get("stagger_s"):
        text += f"opened {data['stagger_s'] * 1000:.0f} ms apart, "
    text += f"for {data['seconds']} s per run, after a warm-up; {data.get('runs', 3)} runs, "
    text += "gateway and baseline alternating.\n\n"
    text += table(["database", "app", "requests/s", "p50 ms", "p99 ms", "gateway / baseline"], rows)
    spread = [
        f"{db} {app}: "
        + ", ".join("+".join(map(str, c)) if c else "?" for c in row[app]["connections_per_worker"])
        for db, row in data["databases"].items()
        for app in ("gateway", "baseline")
        if row[app].get("connections_per_worker")
    ]
    if spread:
        text += "\nConnections held by each gunicorn worker, run by run: " + "; ".join(spread) + ".\n"
    return text


def _deployments(data: dict[str, Any]) -> str:
    """Which settings each gateway deployment ran with beyond the bench's own (old results name none)."""
    described = data.get("deployments") or {}
    parts = [
        f"{label(name)}: " + (", ".join(f"`{k}={v}`" for k, v in d["settings"].items()) or "default settings")
        for name, d in described.items()
    ]
    return "Gateway deployments: " + "; ".join(parts) + ".\n\n" if parts else ""


def _email(data: dict[str, Any]) -> str:
    gateways = list(data["ratios"])
    header = ["who", "N", "messages/s"] + [f"{label(g)} ÷ this row" for g in gateways]
    rows = []
    for name, fig in data["rates"].items():
        ratios = [
            fmt_figure(data["ratios"][g].get(name), 2) + "×" if name in data["ratios"][g] else ""
            for g in gateways
        ]
        rows.append([label(name), f"{data['n'][name]:,}", fmt_figure(fig), *ratios])
    skipped = "".join(f"\n{k} was skipped: {v}.\n" for k, v in (data.get("skipped") or {}).items())
    cpu = _cpu(data.get("cpu_ms_per_message"), "the SMTP sink", data["rates"])
    return _deployments(data) + table(header, rows) + skipped + cpu


def _cpu(figures: dict[str, Any] | None, simulator: str, rates: dict[str, Any]) -> str:
    """CPU milliseconds a message, of the sender's own processes and of the simulators' process, and how
    many CPUs the sender's processes kept busy (a run's CPU a message times its rate)."""
    if not figures:
        return ""
    rows = [
        [
            label(name),
            fmt_figure(parts["own"], 2),
            fmt_figure(_busy(parts["own"], rates.get(name)), 2),
            fmt_figure(parts["simulator"], 2),
        ]
        for name, parts in figures.items()
    ]
    text = "\nCPU time a message, in ms (from the first request until the last message arrived), and the "
    text += "CPUs the sender's processes kept busy meanwhile (a process's Python runs on one at a time):\n\n"
    head = ["who", "its own processes", "CPUs busy", f"{simulator} (simulators' process)"]
    return text + table(head, rows)


def _busy(cpu_ms: dict[str, Any], rate: dict[str, Any] | None) -> dict[str, Any] | None:
    """CPUs kept busy, run by run: CPU ms a message times messages a second (runs in the same order)."""
    if not rate or len(rate.get("runs", [])) != len(cpu_ms.get("runs", [])):
        return None
    return figure([ms * per_s / 1000 for ms, per_s in zip(cpu_ms["runs"], rate["runs"], strict=True)], "CPUs")


def _sms(data: dict[str, Any]) -> str:
    out = [_deployments(data)] if data.get("deployments") else []
    for ms, row in data["latencies"].items():
        rows = []
        for name, fig in row["rates"].items():
            ratio = fmt_figure(row["ratios"][name], 2) + "×" if name in row["ratios"] else ""
            rows.append([label(name), f"{row['n'][name]:,}", fmt_figure(fig), ratio])
        out.append(f"**{ms} simulated provider latency**\n\n")
        out.append(table(["who", "N", "messages/s", "gateway / SDK loop"], rows))
        out.append(_cpu(row.get("cpu_ms_per_message"), "the Twilio simulator", row["rates"]))
        out.append(_receipts(row))
    return "\n".join(out)


def _receipts(row: dict[str, Any]) -> str:
    """When the gateway had applied its messages' status callbacks, and what a message cost until then."""
    done, cpu = row.get("receipts_s") or {}, row.get("cpu_ms_with_receipts") or {}
    if not done:
        return ""
    rows = [
        [
            label(name),
            fmt_figure(fig, 2),
            fmt_figure(cpu[name]["own"], 2) if name in cpu else "",
            fmt_figure(cpu[name]["simulator"], 2) if name in cpu else "",
        ]
        for name, fig in done.items()
    ]
    text = (
        "\nThe status callbacks (sent, then delivered) of the gateway's messages, which go on after its last "
    )
    text += "send; the time is from the first accept:\n\n"
    head = ["who", "last callback applied, s", "CPU a message until then, ms", "the Twilio simulator, ms"]
    return text + table(head, rows)


def _reaction(data: dict[str, Any]) -> str:
    rows = []
    for key, name in (("fallback", "fallback reaction"), ("retry", "retry lateness")):
        d = data["fallback_ms" if key == "fallback" else "retry_late_ms"]
        per_run = data["fallback_p99_per_run" if key == "fallback" else "retry_p99_per_run"]
        rows.append(
            [
                name,
                str(d["count"]),
                fmt(d["p50"], 1),
                fmt(d["p90"], 1),
                fmt(d["p99"], 1),
                fmt(d["max"], 1),
                fmt_figure(per_run, 1),
            ]
        )
    head = ["measure", "samples", "p50 ms", "p90 ms", "p99 ms", "max ms", "p99 per run: median (min–max)"]
    text = f"{data['messages_per_run']} messages per run, one every {data['gap_s'] * 1000:.0f} ms; settings: "
    text += ", ".join(f"`{k}={v}`" for k, v in data["settings"].items()) + ".\n\n"
    return text + table(head, rows)


def _backlog(data: dict[str, Any]) -> str:
    rows = []
    for db, sizes in data["databases"].items():
        for size in sorted((k for k in sizes if k.isdigit()), key=int):
            r = sizes[size]
            rows.append(
                [
                    db,
                    f"{int(size):,}",
                    str(len(r["rate"]["runs"])),
                    fmt_figure(r["rate"]),
                    fmt_figure(r["peak_rss_mb"]),
                    fmt_figure(r["queue_s"], 1),
                ]
            )
        ratio = sizes.get("ratio_largest_to_smallest")
        rows.append([db, "largest / smallest", "", fmt_figure(ratio, 2) + "×", "", ""])
    head = ["database", "queued", "runs", "drain messages/s", "worker peak RSS MiB", "seconds to queue"]
    return table(head, rows)


def _profile(data: dict[str, Any], folder: str) -> str:
    """The profiles' tables; their flame graphs lie in `folder`, beside the report, with the charts."""
    if "error" in data:
        return f"The profile failed: `{data['error']}`\n"
    out = []
    for channel, summary in data.items():
        graph = Path(summary["flamegraph"]).name if summary.get("flamegraph") else None
        link = f"; flame graph: [{graph}]({folder}/{graph})" if graph else ""
        out.append(
            f"**{channel}**, {summary.get('what', '')}: {summary['samples']:,} samples; rate under the "
            f"profiler {summary['rate_under_profiler']:.0f}/s{link}.\n"
        )
        rows = [[f"`{r['function']}`", f"{r['share']:.1%}"] for r in summary["self"][:10]]
        out.append(table(["innermost frame (self)", "share of samples"], rows))
        rows = [[f"`{r['function']}`", f"{r['share']:.1%}"] for r in summary["total_gateway"][:10]]
        out.append(table(["gateway function (anywhere on the stack)", "share of samples"], rows))
        if summary.get("threads"):
            rows = [[f"`{r['thread']}`", f"{r['share']:.1%}"] for r in summary["threads"]]
            out.append(table(["thread (a pool's threads together)", "share of samples"], rows))
    return "\n".join(out)


SECTIONS = [
    ("accept", "1. Accept: `POST /v1/messages` under gunicorn", _accept),
    ("email", "2. Email dispatch, end to end", _email),
    ("sms", "3. SMS dispatch through the Twilio simulator", _sms),
    ("reaction", "4. Fallback reaction and retry punctuality", _reaction),
    ("backlog", "5. Backlog scaling", _backlog),
]


def render(results: dict[str, Any], charts: dict[str, Path], doc: Path, methods: dict[str, str]) -> str:
    m = results["machine"]
    when = str(results.get("finished_at") or results["started_at"])
    parts = [
        "# Benchmarks\n",
        "The gateway against the libraries people use today and against one-insert baselines, all on "
        "loopback on one machine, in one run. Every figure is the median of the runs with (min–max); every "
        "ratio is taken run by run within the same invocation, then summarised the same way.\n",
        f"Reproduce: `.venv/bin/pip install -e '.[bench]' && .venv/bin/python -m bench` "
        f"(this run: about {_minutes(results):.0f} minutes of measuring; `--quick` for a smoke run; "
        "`--cases email --merge` re-measures one case into the existing results).\n",
        f"Results of {when[:16]} UTC, mode `{results['mode']}`, {results['reps']} runs per figure "
        f"unless said otherwise, {m['cpus']} CPUs, {m['memory_gib']:.0f} GiB, Python {m['python']}, "
        f"{m['platform']}; "
        f"gateway commit `{results.get('commit') or 'unknown'}`.\n",
        "Commands of this results file, in order (later ones re-measured the cases they name): "
        + "; ".join(f"`{c}`" for c in results.get("commands", []))
        + ".\n",
        "## Targets\n",
        _targets(results),
    ]
    for key, title, render_case in SECTIONS:
        data = results["cases"].get(key)
        if data is None:
            continue
        parts.append(f"## {title}\n")
        if key in methods:
            parts.append(methods[key].strip() + "\n")
        if "error" in data:
            parts.append(f"This case failed: `{data['error']}`\n")
            continue
        parts.append(render_case(data))
        if "load_average" in data:
            la, when = data["load_average"], data.get("measured", {})
            parts.append(
                f"Measured {when.get('at', '')} in {when.get('seconds', 0) / 60:.1f} min on gateway commit "
                f"`{when.get('commit')}`; the machine's 1-minute load average was {la['before']:.1f} before "
                f"and {la['after']:.1f} after (2 CPUs: above 2 means other work competed for them).\n"
            )
        if key in charts:
            parts.append(f"![{key}]({charts[key].relative_to(doc.parent).as_posix()})\n")
    if results.get("profile"):
        parts += ["## Where the gateway spends its time\n", _profile(results["profile"], doc.stem)]
    if NOTES.exists():
        parts.append(NOTES.read_text())
    return "\n".join(parts)
