"""What every case gets: the shared simulators, a scratch folder, sizes and repetitions, a logger."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.sims import Sims


@dataclass
class Context:
    quick: bool
    workdir: Path
    sims: Sims
    postgres_url: str | None
    reps: int
    sizes: dict[str, Any]
    started: float = field(default_factory=time.monotonic)

    def log(self, message: str) -> None:
        print(f"[{time.monotonic() - self.started:7.1f}s] {message}", file=sys.stderr, flush=True)

    @property
    def databases(self) -> list[str]:
        return ["sqlite", "postgres"] if self.postgres_url else ["sqlite"]


def chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]
