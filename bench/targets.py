"""The issue's targets, checked against one invocation's results."""

from __future__ import annotations

from typing import Any

# Reference points from the issue (2-core machine, N=200, loopback sinks), for the absolute comparison.
ISSUE_NOTIFME_BEST = 410.0
GATEWAY_LABELS = {
    "gateway-sqlite-serve": "gateway serve, SQLite",
    "gateway-sqlite-serve-512": "gateway serve, SQLite, 512 sends in flight",
    "gateway-sqlite-serve-worker": "gateway serve + gateway worker, SQLite",
    "gateway-postgres-split": "gunicorn + gateway worker, PostgreSQL",
}


def _median(fig: dict[str, Any] | None) -> float | None:
    return None if not fig else fig.get("median")


def _target(
    case: str, what: str, op: str, goal: float, measured: float | None, unit: str, how: str
) -> dict[str, Any]:
    met = None
    if measured is not None:
        met = measured >= goal if op == "≥" else measured < goal
    if measured is None:
        gap = "not measured"
    elif met:
        margin = measured / goal if op == "≥" else (goal / measured if measured > 0 else float("inf"))
        gap = f"{margin:.1f}× inside the target"
    elif op == "≥":
        gap = f"{goal / measured:.1f}× short" if measured > 0 else "nothing measured"
    else:
        gap = f"{measured / goal:.1f}× over"
    return {
        "case": case,
        "what": what,
        "target": f"{op} {goal:g}{unit}",
        "measured": measured,
        "unit": unit,
        "met": met,
        "gap": gap,
        "how": how,
    }


def _best(ratios: dict[str, dict[str, Any]], peer: str) -> tuple[float | None, str]:
    """The gateway deployment with the best median ratio against `peer`."""
    best: tuple[float | None, str] = (None, "")
    for gateway, against in ratios.items():
        value = _median(against.get(peer))
        if value is not None and (best[0] is None or value > best[0]):
            best = (value, GATEWAY_LABELS.get(gateway, gateway))
    return best


def evaluate(cases: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    accept = cases.get("accept", {})
    for db, row in (accept.get("databases") or {}).items():
        out.append(
            _target(
                "accept",
                f"gateway / one-insert baseline, {db}",
                "≥",
                0.5,
                _median(row.get("ratio")),
                "×",
                "same gunicorn settings, same database",
            )
        )
    email = cases.get("email", {})
    if "ratios" in email:
        value, who = _best(email["ratios"], "notifme")
        out.append(_target("email", "gateway / notifme-sdk (same run)", "≥", 1.0, value, "×", who))
        rates = email.get("rates", {})
        best_rate = max((_median(rates.get(g)) or 0.0 for g in email["ratios"]), default=None)
        out.append(
            _target(
                "email",
                f"gateway / notifme-sdk's best figure in the issue ({ISSUE_NOTIFME_BEST:g}/s)",
                "≥",
                1.0,
                best_rate / ISSUE_NOTIFME_BEST if best_rate else None,
                "×",
                "absolute messages/s of the best deployment",
            )
        )
        value, who = _best(email["ratios"], "smtplib")
        out.append(_target("email", "gateway / smtplib shared connection", "≥", 0.6, value, "×", who))
    sms = cases.get("sms", {}).get("latencies", {})
    for ms, goal in (("0ms", 1.0), ("50ms", 15.0)):
        if ms in sms:
            value, who = _best({g: {"sdk": r} for g, r in sms[ms]["ratios"].items()}, "sdk")
            out.append(
                _target(
                    "sms", f"gateway / sequential twilio SDK loop, {ms} latency", "≥", goal, value, "×", who
                )
            )
    reaction = cases.get("reaction", {})
    if "fallback_ms" in reaction:
        out.append(
            _target(
                "reaction",
                "fallback reaction p99",
                "<",
                250,
                reaction["fallback_ms"]["p99"],
                " ms",
                "failure answer at the simulator → email at the sink",
            )
        )
        out.append(
            _target(
                "reaction",
                "retry lateness p99",
                "<",
                500,
                reaction["retry_late_ms"]["p99"],
                " ms",
                "retry request at the simulator − scheduled time",
            )
        )
    for db, rows in (cases.get("backlog", {}).get("databases") or {}).items():
        sizes = sorted(int(k) for k in rows if k.isdigit())
        if len(sizes) < 2:
            continue
        largest = str(sizes[-1])
        ratio = _median(rows.get("ratio_largest_to_smallest"))
        out.append(
            _target(
                "backlog",
                f"drain rate at {sizes[-1]:,} / at {sizes[0]:,} queued, {db}",
                "≥",
                0.8,
                ratio,
                "×",
                "one gateway worker",
            )
        )
        if sizes[-1] >= 100_000:
            rss = _median(rows[largest].get("peak_rss_mb"))
            out.append(
                _target(
                    "backlog",
                    f"worker peak RSS at {sizes[-1]:,} queued, {db}",
                    "<",
                    200,
                    rss,
                    " MiB",
                    "VmHWM of the worker process",
                )
            )
    return out
