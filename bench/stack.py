"""Fresh databases and the gateway's processes (`gateway serve`, gunicorn `wsgi:app`, `gateway worker`)."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench import procs
from bench.procs import PYTHON, Proc, clean_env, free_port, http_ok, log_says, spawn
from bench.sims import Sims

SENDER_NUMBER = "+14155550000"
SENDER_EMAIL = "gateway@bench.test"
# Same server settings for the gateway and the baseline app.
GUNICORN_WORKERS = 2
GUNICORN_THREADS = 4
MODES = ("serve", "serve+worker", "split")


def postgres_schema_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


@contextlib.contextmanager
def fresh_database(kind: str, workdir: Path, postgres_url: str | None) -> Iterator[str]:
    """A new, empty database: a SQLite file in `workdir`, or a new PostgreSQL schema dropped afterwards."""
    if kind == "sqlite":
        path = workdir / f"db-{secrets.token_hex(4)}.sqlite"
        yield f"sqlite:///{path}"
        for suffix in ("", "-wal", "-shm", ".writer"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    if not postgres_url:
        raise RuntimeError("no PostgreSQL URL")
    from sqlalchemy import create_engine, text

    schema = "bench_" + secrets.token_hex(5)
    admin = create_engine(postgres_url)
    with admin.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    try:
        yield postgres_schema_url(postgres_url, schema)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


@dataclass
class GatewayStack:
    """One gateway deployment on one database, pointed at the shared simulators."""

    db_url: str
    sims: Sims
    workdir: Path
    settings: dict[str, str] = field(default_factory=dict)
    port: int = 0
    key: str = ""
    procs: list[Proc] = field(default_factory=list)

    def env(self) -> dict[str, str]:
        config = self.workdir / "empty.toml"
        config.write_text("# the bench sets everything through the environment\n")
        values = {
            "GATEWAY_CONFIG_FILE": str(config),
            "GATEWAY_DATABASE_URL": self.db_url,
            "GATEWAY_PUBLIC_URL": f"http://127.0.0.1:{self.port}",
            "GATEWAY_TWILIO_ACCOUNT_SID": self.sims.account_sid,
            "GATEWAY_TWILIO_AUTH_TOKEN": self.sims.auth_token,
            "GATEWAY_TWILIO_FROM": SENDER_NUMBER,
            "GATEWAY_TWILIO_BASE_URL": f"http://127.0.0.1:{self.sims.twilio_port}",
            "GATEWAY_SMTP_HOST": "127.0.0.1",
            "GATEWAY_SMTP_PORT": str(self.sims.smtp_port),
            "GATEWAY_SMTP_TLS": "none",
            "GATEWAY_SMTP_FROM": SENDER_EMAIL,
            # Pacing would cap SMS at 10/s; the benchmark measures the dispatcher, not the pacer.
            "GATEWAY_CHANNEL_RATES": "sms=0",
            # The per-key API rate limit (100/s by default) would cap every case that accepts messages.
            "GATEWAY_API_RATE_LIMIT": "0",
            "GATEWAY_LOG_LEVEL": "warning",
        }
        return clean_env(**(values | self.settings))

    def create_key(self) -> str:
        argv = [PYTHON, "-m", "gateway.cli", "keys", "create", "--scope", "admin", "--name", "bench"]
        done = subprocess.run(
            argv, env=self.env(), cwd=procs.GATEWAY_ROOT, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"gateway keys create failed: {done.stderr}")
        self.key = done.stdout.strip().splitlines()[-1]
        return self.key

    def serve(self) -> GatewayStack:
        """`gateway serve`: API and dispatcher in one process."""
        self.port = self.port or free_port()
        self.create_key()
        argv = [PYTHON, "-m", "gateway.cli", "serve", "--port", str(self.port)]
        self.procs.append(spawn("gateway-serve", argv, self.env(), self.workdir, http_ok(self.port)))
        return self

    def api_only(self) -> GatewayStack:
        """gunicorn `wsgi:app` (API only), with the same settings as the baseline app."""
        self.port = self.port or free_port()
        self.create_key()
        self.procs.append(gunicorn("gateway-gunicorn", "wsgi:app", self.port, self.env(), self.workdir))
        return self

    def worker(self) -> Proc:
        """`gateway worker` (dispatcher only); ready once it says it runs."""
        log = self.workdir / "gateway-worker.log"
        log.unlink(missing_ok=True)
        argv = [PYTHON, "-m", "gateway.cli", "worker"]
        proc = spawn("gateway-worker", argv, self.env(), self.workdir, log_says(log, "running"))
        self.procs.append(proc)
        return proc

    def deploy(self, mode: str) -> GatewayStack:
        """Start a deployment: `serve` (one process), `serve+worker` (a `gateway worker` beside it, on the
        same database: the dispatching spread over two processes), or `split` (gunicorn API + a worker)."""
        if mode not in MODES:
            raise ValueError(f"unknown deployment mode {mode!r}")
        if mode == "split":
            self.api_only()
        else:
            self.serve()
        if mode != "serve":
            self.worker()
        return self

    def cpu_seconds(self) -> float:
        """CPU time the gateway's processes (gunicorn's workers included) have used so far."""
        return procs.cpu_seconds(proc.pid for proc in self.procs)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        self.procs.clear()


def gunicorn(name: str, app: str, port: int, env: dict[str, str], workdir: Path) -> Proc:
    argv = [
        PYTHON,
        "-m",
        "gunicorn",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(GUNICORN_WORKERS),
        "--worker-class",
        "gthread",
        "--threads",
        str(GUNICORN_THREADS),
        "--keep-alive",
        "30",
        "--chdir",
        str(procs.GATEWAY_ROOT),
        "--log-level",
        "warning",
        app,
    ]
    probe = http_ok(port, "/healthz")
    return spawn(name, argv, env, workdir, probe, timeout=90)


@contextlib.contextmanager
def running(stack: GatewayStack) -> Iterator[GatewayStack]:
    try:
        yield stack
    finally:
        stack.stop()
