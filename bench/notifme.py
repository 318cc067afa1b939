"""The notifme-sdk peer: `bench/node/notifme_email.js`, installed with `npm ci` on first use."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

NODE_DIR = Path(__file__).resolve().parent / "node"
# Four pooled connections, as the gateway's default GATEWAY_SMTP_POOL_SIZE; 16 sends in flight.
POOL, CONCURRENCY = 4, 16


def available() -> str | None:
    """None when the peer can run, else why not."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return "node and npm are not installed"
    return None


def install() -> None:
    if not (NODE_DIR / "node_modules" / "notifme-sdk").exists():
        subprocess.run(
            ["npm", "ci", "--silent", "--no-audit", "--no-fund"], cwd=NODE_DIR, check=True, timeout=600
        )


def run(port: str, n: int, prefix: str) -> dict[str, Any]:
    install()
    argv = ["node", "notifme_email.js", "--port", port, "--n", str(n), "--prefix", prefix]
    argv += ["--pool", str(POOL), "--concurrency", str(CONCURRENCY)]
    done = subprocess.run(argv, cwd=NODE_DIR, capture_output=True, text=True, timeout=120 + n / 10)
    if done.returncode != 0:
        raise RuntimeError(f"notifme failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result
