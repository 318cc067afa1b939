"""PNG charts of one results file (matplotlib, no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.axes import Axes  # noqa: E402

GATEWAY_COLOR, PEER_COLOR = "#1f6feb", "#8c959f"


def _bars(ax: Axes, labels: list[str], figs: list[dict[str, Any]], colors: list[str]) -> None:
    medians = [f["median"] or 0 for f in figs]
    low = [max(0.0, m - (f["min"] or m)) for m, f in zip(medians, figs, strict=True)]
    high = [max(0.0, (f["max"] or m) - m) for m, f in zip(medians, figs, strict=True)]
    ax.barh(labels, medians, xerr=[low, high], color=colors, capsize=3)
    ax.invert_yaxis()
    ax.margins(x=0.15)
    for i, value in enumerate(medians):
        text = f"{value:,.0f}" if value >= 10 else f"{value:.2f}"
        ax.annotate(
            text, (value + high[i], i), xytext=(5, 0), textcoords="offset points", va="center", fontsize=8
        )


def _color(name: str) -> str:
    return GATEWAY_COLOR if name.startswith("gateway") else PEER_COLOR


def accept(data: dict[str, Any], path: Path) -> None:
    rows = data["databases"]
    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 2.6), squeeze=False)
    for ax, (db, row) in zip(axes[0], rows.items(), strict=True):
        _bars(
            ax,
            ["gateway", "baseline"],
            [row["gateway"]["rps"], row["baseline"]["rps"]],
            [GATEWAY_COLOR, PEER_COLOR],
        )
        ax.set_title(f"{db}: requests/s (ratio {row['ratio']['median']:.2f}×)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def email(data: dict[str, Any], path: Path) -> None:
    names = list(data["rates"])
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(names) + 1.2))
    _bars(ax, names, [data["rates"][n] for n in names], [_color(n) for n in names])
    ax.set_xscale("log")
    ax.set_xlabel("messages/s, end to end into the SMTP sink (log scale)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def sms(data: dict[str, Any], path: Path) -> None:
    rows = data["latencies"]
    fig, axes = plt.subplots(1, len(rows), figsize=(5 * len(rows), 2.6), squeeze=False)
    for ax, (ms, row) in zip(axes[0], rows.items(), strict=True):
        names = list(row["rates"])
        _bars(ax, names, [row["rates"][n] for n in names], [_color(n) for n in names])
        ax.set_title(f"SMS, {ms} provider latency: messages/s", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def reaction(data: dict[str, Any], path: Path) -> None:
    fig, axes = plt.subplots(1, 2, figsize=(10, 2.8))
    for ax, key, goal, title in (
        (axes[0], "fallback_ms", 250, "fallback reaction (ms)"),
        (axes[1], "retry_late_ms", 500, "retry lateness (ms)"),
    ):
        samples = data["samples"][key]
        ax.hist(samples, bins=30, color=GATEWAY_COLOR)
        ax.axvline(goal, color="#cf222e", linestyle="--", label=f"target p99 < {goal} ms")
        ax.axvline(data[key]["p99"], color="black", linestyle=":", label=f"p99 {data[key]['p99']:.0f} ms")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def backlog(data: dict[str, Any], path: Path) -> None:
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3))
    every: set[int] = set()
    top_rss = 0.0
    for db, rows in data["databases"].items():
        sizes = sorted(int(k) for k in rows if k.isdigit())
        every.update(sizes)
        rates = [rows[str(n)]["rate"] for n in sizes]
        spread = [[r["median"] - r["min"] for r in rates], [r["max"] - r["median"] for r in rates]]
        left.errorbar(sizes, [r["median"] for r in rates], yerr=spread, marker="o", capsize=3, label=db)
        rss = [rows[str(n)]["peak_rss_mb"]["median"] or 0.0 for n in sizes]
        top_rss = max(top_rss, *rss)
        right.plot(sizes, rss, marker="o", label=db)
    right.axhline(200, color="#cf222e", linestyle="--", label="target < 200")
    left.set(xscale="log", xlabel="messages queued", ylabel="drain rate (messages/s)", ylim=(0, None))
    right.set(xscale="log", xlabel="messages queued", ylabel="worker peak RSS (MiB)")
    right.set_ylim(0, max(250.0, top_rss * 1.2))
    for ax in (left, right):
        ax.set_xticks(sorted(every), [f"{n // 1000}k" if n >= 1000 else str(n) for n in sorted(every)])
        ax.minorticks_off()
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


CHARTS = {"accept": accept, "email": email, "sms": sms, "reaction": reaction, "backlog": backlog}


def draw(cases: dict[str, Any], outdir: Path) -> dict[str, Path]:
    """One PNG per case that has results; returns case -> path."""
    outdir.mkdir(parents=True, exist_ok=True)
    drawn = {}
    for name, chart in CHARTS.items():
        data = cases.get(name)
        if data and "error" not in data:
            path = outdir / f"{name}.png"
            chart(data, path)
            drawn[name] = path
    return drawn
