"""Benchmarks of the gateway against peers and baselines, all on loopback: `python -m bench [--quick]`.

Every case starts what it needs (simulators, the gateway, baselines) as separate processes, runs several
times, and reports medians with their spread; every comparison is a ratio between runs of the same
invocation. Results go to `bench/results/latest.json`, the report to `docs/benchmarks.md`.
"""
