"""`python -m bench --quick` runs every case end to end and writes a well-formed results file and report.

This checks the form of the results, never the speed they show.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = {"accept", "email", "sms", "reaction", "backlog"}

for module in ("gunicorn", "apprise", "matplotlib"):
    pytest.importorskip(module, reason=f"{module} is a bench extra: pip install -e '.[bench]'")


def figures(node: Any) -> list[dict[str, Any]]:
    """Every summarised figure (a dict with median/min/max/runs) anywhere in the results."""
    if isinstance(node, dict):
        found = [node] if {"median", "min", "max", "runs"} <= node.keys() else []
        return found + [f for value in node.values() for f in figures(value)]
    if isinstance(node, list):
        return [f for value in node for f in figures(value)]
    return []


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("bench")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GATEWAY_") or k == "GATEWAY_TEST_POSTGRES_URL"
    }
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench",
            "--quick",
            "--out",
            str(out / "quick.json"),
            "--docs",
            str(out / "bench.md"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,  # only a guard against a hang: the quick run takes one to three minutes, by the machine
    )
    assert done.returncode == 0, done.stderr[-6000:]
    return json.loads((out / "quick.json").read_text()), out


def test_every_case_has_results_and_no_errors(quick_run: tuple[dict[str, Any], Path]) -> None:
    results, _ = quick_run
    assert results["schema"] == 1 and results["mode"] == "quick"
    assert set(results["cases"]) == CASES
    for name, data in results["cases"].items():
        assert "error" not in data, (name, data.get("error"))
    assert results["cases"]["accept"]["databases"]["sqlite"]["gateway"]["rps"]["median"] > 0
    assert results["cases"]["email"]["rates"]["smtplib"]["median"] > 0
    assert set(results["cases"]["sms"]["latencies"]) == {"0ms", "50ms"}
    assert results["cases"]["reaction"]["fallback_ms"]["count"] > 0
    assert results["cases"]["backlog"]["databases"]["sqlite"]["1000"]["peak_rss_mb"]["median"] > 0


@pytest.mark.skipif(shutil.which("ss") is None, reason="the accept case reads connections with ss (iproute2)")
def test_the_accept_case_records_each_worker_s_share_of_the_connections(
    quick_run: tuple[dict[str, Any], Path],
) -> None:
    results, out = quick_run
    accept = results["cases"]["accept"]
    for row in accept["databases"].values():
        for app in ("gateway", "baseline"):
            shares = row[app]["connections_per_worker"]
            assert len(shares) == len(row[app]["rps"]["runs"]), shares
            for share in shares:  # one count per gunicorn worker holding a connection, fewest first
                assert share and len(share) <= 2 and share == sorted(share), share
                assert 0 < sum(share) <= accept["connections"], share
    assert (
        "Connections held by each gunicorn worker, run by run: sqlite gateway: "
        in (out / "bench.md").read_text()
    )


def test_the_dispatch_cases_record_the_cpu_a_message_of_every_sender_and_of_the_simulators(
    quick_run: tuple[dict[str, Any], Path],
) -> None:
    results, out = quick_run
    email, sms = results["cases"]["email"], results["cases"]["sms"]
    tables = [email["cpu_ms_per_message"]] + [row["cpu_ms_per_message"] for row in sms["latencies"].values()]
    assert set(email["cpu_ms_per_message"]) == set(email["rates"])
    for row in sms["latencies"].values():
        assert set(row["cpu_ms_per_message"]) == set(row["rates"])
    for cpu in tables:
        for who, parts in cpu.items():
            assert len(parts["own"]["runs"]) == len(parts["simulator"]["runs"]) > 0, who
            # Every sender used the CPU to send; the simulators' process is read in 10 ms clock ticks, which
            # ten SDK sends at 50 ms may not reach.
            assert parts["own"]["median"] > 0 and parts["simulator"]["median"] >= 0, (who, parts)
    # The gateway's runs put every message, and its status callbacks, through the simulators' process.
    for cpu in (email["cpu_ms_per_message"], sms["latencies"]["0ms"]["cpu_ms_per_message"]):
        assert cpu["gateway-sqlite-serve"]["simulator"]["median"] > 0, cpu
    report = (out / "bench.md").read_text()
    assert report.count("CPU time a message, in ms") == 1 + len(sms["latencies"])
    email_table = report.split("CPU time a message, in ms")[1]
    assert "| who | its own processes | CPUs busy | the SMTP sink (simulators' process) |" in email_table
    # CPUs busy: each run's CPU a message times its rate, so the serve row's cell is that run's product.
    serve_cpu = email["cpu_ms_per_message"]["gateway-sqlite-serve"]["own"]["runs"]
    serve_rate = email["rates"]["gateway-sqlite-serve"]["runs"]
    busy = [ms * r / 1000 for ms, r in zip(serve_cpu, serve_rate, strict=True)]
    row = next(line for line in email_table.splitlines() if line.startswith("| gateway serve, SQLite | "))
    assert row.split(" | ")[2].split(" ")[0] == f"{statistics.median(busy):.2f}", (row, busy)


def test_the_embedded_gateway_is_measured_with_default_settings_more_sends_in_flight_and_a_worker(
    quick_run: tuple[dict[str, Any], Path],
) -> None:
    results, out = quick_run
    email, sms = results["cases"]["email"], results["cases"]["sms"]
    wide = {"database": "sqlite", "mode": "serve", "settings": {"GATEWAY_DISPATCH_CONCURRENCY": "512"}}
    beside = {"database": "sqlite", "mode": "serve+worker", "settings": {}}
    for case in (email, sms):
        assert case["deployments"]["gateway-sqlite-serve"] == {
            "database": "sqlite",
            "mode": "serve",
            "settings": {},
        }
        assert case["deployments"]["gateway-sqlite-serve-512"] == wide
        assert case["deployments"]["gateway-sqlite-serve-worker"] == beside
    for name in ("gateway-sqlite-serve-512", "gateway-sqlite-serve-worker"):
        assert email["rates"][name]["median"] > 0
        assert email["ratios"][name]["smtplib"]["median"] > 0
        for row in sms["latencies"].values():
            assert row["ratios"][name]["median"] > 0
    report = (out / "bench.md").read_text()
    line = (
        "Gateway deployments: gateway serve, SQLite: default settings; gateway serve, SQLite, 512 sends in "
        "flight: `GATEWAY_DISPATCH_CONCURRENCY=512`; gateway serve + gateway worker, SQLite: default "
        "settings."
    )
    assert report.count(line) == 2  # under the email and the SMS section's heading
    # Every gateway run waited for its messages' status callbacks: when the last was applied, and what a
    # message cost until then (more than until its last send).
    for row in sms["latencies"].values():
        assert set(row["receipts_s"]) == set(row["cpu_ms_with_receipts"]) == set(sms["deployments"])
        for name, fig in row["receipts_s"].items():
            assert len(fig["runs"]) == len(row["rates"][name]["runs"]) and fig["min"] > 0, (name, fig)
            cpu, until_last_send = row["cpu_ms_with_receipts"][name], row["cpu_ms_per_message"][name]
            assert cpu["own"]["median"] >= until_last_send["own"]["median"], (cpu, until_last_send)
    assert report.count("| who | last callback applied, s | CPU a message until then, ms |") == 2
    # The targets name the deployment that did best.
    labels = {
        "gateway serve, SQLite",
        "gateway serve, SQLite, 512 sends in flight",
        "gateway serve + gateway worker, SQLite",
    }
    sms_targets = [t for t in results["targets"] if t["case"] == "sms"]
    assert sms_targets and all(t["how"] in labels for t in sms_targets), sms_targets


SPIN = """
import time
end = time.process_time() + 0.5
while time.process_time() < end:
    pass
time.sleep(30)
"""
WAIT = "import subprocess, sys\nsubprocess.run([sys.executable, '-c', sys.argv[1]])\n"
READ = """
import os, signal, subprocess, sys, time
from bench.procs import cpu_seconds
waiter = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[2]], start_new_session=True)
deadline, charged = time.monotonic() + 20, 0.0
while charged < 0.45 and time.monotonic() < deadline:
    time.sleep(0.2)
    charged = cpu_seconds([waiter.pid])
print(charged, cpu_seconds([]))
os.killpg(waiter.pid, signal.SIGKILL)
"""


def test_cpu_seconds_counts_a_process_and_its_descendants() -> None:
    """`bench.procs.cpu_seconds` (run as the bench runs it, from the project root): a process that only
    waits on its child is charged the child's 0.5 s of spinning; no process, no CPU."""
    argv = [sys.executable, "-c", READ, WAIT, SPIN]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    charged, nobody = map(float, done.stdout.split())
    assert 0.45 <= charged < 2.0, charged
    assert nobody == 0.0


RAW_STACKS = """\
thread (0x7f01): dispatcher-db_0;_finish_batch (/main/gateway/dispatch.py:400);flush (/site-packages/o.py:9) 6
thread (0x7f02): waitress-1;receive (/w/main/gateway/api/provider_hooks.py:30) 2
thread (0x7f03): waitress-7;send_batch (/w/main/gateway/api/messages.py:50) 1
thread (0x7f04): dispatcher;_send (/w/main/gateway/dispatch.py:290) 1
"""
SUMMARISE = """
import json, sys
from pathlib import Path
from bench.profile import summarise
print(json.dumps(summarise(Path(sys.argv[1]))))
"""


def test_a_profile_taken_by_thread_shares_the_samples_between_threads_and_pools(tmp_path: Path) -> None:
    """`bench.profile.summarise` of py-spy's raw stacks taken with --threads: one share a thread, the
    threads of a pool (waitress-1, waitress-7) together, and the functions without the thread frame."""
    raw = tmp_path / "raw.txt"
    raw.write_text(RAW_STACKS)
    done = subprocess.run(
        [sys.executable, "-c", SUMMARISE, str(raw)], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["samples"] == 10
    assert summary["threads"] == [
        {"thread": "dispatcher-db", "share": 0.6},
        {"thread": "waitress", "share": 0.3},
        {"thread": "dispatcher", "share": 0.1},
    ]
    assert summary["self"][0] == {"function": "flush (o.py)", "share": 0.6}
    assert {"function": "_finish_batch (gateway/dispatch.py)", "share": 0.6} in summary["total_gateway"]
    assert not any(r["function"].startswith("thread") for r in summary["self"] + summary["total_gateway"])


@pytest.mark.skipif(shutil.which("py-spy", path=str(Path(sys.executable).parent)) is None, reason="no py-spy")
def test_the_profile_samples_every_deployment_and_splits_gateway_serve_by_thread(tmp_path: Path) -> None:
    """`python -m bench --quick --cases none --profile`: the worker draining email and SMS, `gateway serve`
    taking emails and SMS end to end (with each thread's share) and gunicorn accepting, each summarised with
    its flame graph beside the report."""
    argv = [sys.executable, "-m", "bench", "--quick", "--cases", "none", "--profile"]
    argv += ["--out", str(tmp_path / "quick.json"), "--docs", str(tmp_path / "bench.md")]
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-6000:]
    profile = json.loads((tmp_path / "quick.json").read_text())["profile"]
    assert set(profile) == {"email", "sms", "serve-email", "serve-sms", "accept"}
    for name, summary in profile.items():
        assert summary["samples"] > 0 and summary["rate_under_profiler"] > 0, name
        assert (tmp_path / "bench" / summary["flamegraph"]).stat().st_size > 1000, name
    report = (tmp_path / "bench.md").read_text()
    for name in ("serve-email", "serve-sms"):
        threads = {row["thread"]: row["share"] for row in profile[name]["threads"]}
        assert {"dispatcher", "dispatcher-db", "waitress"} <= set(threads), (name, threads)
        assert 0.99 <= sum(threads.values()) <= 1.01
        assert f"](bench/profile-{name}.svg)" in report
    assert report.count("| `dispatcher-db` | ") == 2


def test_every_figure_is_a_median_with_its_spread(quick_run: tuple[dict[str, Any], Path]) -> None:
    results, _ = quick_run
    found = figures(results["cases"])
    assert len(found) > 20
    for fig in found:
        assert fig["runs"], fig
        assert fig["min"] <= fig["median"] <= fig["max"], fig
        assert all(math.isfinite(r) for r in fig["runs"]), fig


def test_targets_are_judged(quick_run: tuple[dict[str, Any], Path]) -> None:
    results, _ = quick_run
    cases = {t["case"] for t in results["targets"]}
    assert cases == CASES
    for target in results["targets"]:
        assert target["met"] in (True, False), target
        assert isinstance(target["measured"], int | float), target


def test_the_report_embeds_charts_that_exist(quick_run: tuple[dict[str, Any], Path]) -> None:
    _, out = quick_run
    report = (out / "bench.md").read_text()
    assert "## Targets" in report
    images = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report)
    assert len(images) == len(CASES)
    for image in images:
        assert (out / image).stat().st_size > 1000, image
