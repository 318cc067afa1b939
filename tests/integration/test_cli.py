"""The `gateway` command line, run as a real subprocess against a fresh SQLite database."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlmodel import Session, col, create_engine, select

from gateway.local import LocalGateway
from gateway.models import RoutingRule

ROOT = Path(__file__).resolve().parents[2]
CHANNELS = tuple("sms email whatsapp messenger instagram telegram line viber x wechat discord".split())
STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z"

TWO_RULES = """
[[rules]]
name = "japan-line-first"
order = 10
when = { country = ["JP"], category = ["transactional", "otp"] }
route = [
  { channel = "line", after = "2m", until = "accepted" },
  { channel = "sms", after = "10m", until = "delivered" },
  { channel = "email" },
]
retry = { attempts = 3, backoff = "30s", multiplier = 2, max_backoff = "30m" }
quiet_hours = { start = "21:00", end = "08:00" }

[[rules]]
name = "sms-then-email"
order = 20
route = [{ channel = "sms" }, { channel = "email" }]
"""


class Cli:
    """Runs `python -m gateway.cli` in `tmp` with a clean GATEWAY_* environment."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.database_url = f"sqlite:///{tmp}/g.db"
        config = tmp / "gateway.toml"
        config.write_text("", encoding="utf-8")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        self.env |= {
            "GATEWAY_DATABASE_URL": self.database_url,
            "GATEWAY_CONFIG_FILE": str(config),
            "PYTHONPATH": str(ROOT),
        }

    def __call__(self, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "gateway.cli", *args],
            cwd=self.tmp,
            env=self.env | env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def ok(self, *args: str) -> list[str]:
        done = self(*args)
        assert done.returncode == 0, done
        return done.stdout.splitlines()

    def rule_names(self) -> list[str]:
        engine = create_engine(self.database_url)
        try:
            with Session(engine) as session:
                query = select(RoutingRule).order_by(col(RoutingRule.order))
                return [r.name for r in session.exec(query)]
        finally:
            engine.dispose()


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    return Cli(tmp_path)


def test_keys_create_list_revoke(cli: Cli) -> None:
    assert not (cli.tmp / "g.db").exists()
    created = cli("keys", "create", "--scope", "admin", "--name", "ops")
    assert created.returncode == 0, created
    assert created.stdout.count("\n") == 1
    [secret] = created.stdout.splitlines()
    assert secret and secret == secret.strip() and " " not in secret

    [line] = cli.ok("keys", "list")
    fields = line.split(" ")
    assert len(fields) == 5, line
    key_id, name, scopes, created_at, last_used_at = fields
    assert key_id.startswith("key_")
    assert (name, scopes) == ("ops", "admin")
    assert re.fullmatch(STAMP, created_at), line
    assert last_used_at == "-" or re.fullmatch(STAMP, last_used_at), line
    assert secret not in line

    with LocalGateway({"database_url": cli.database_url}, with_dispatcher=False) as local:
        assert local.call("GET", "/v1/routing-rules", key=secret).status == 200

    revoked = cli("keys", "revoke", key_id)
    assert revoked.returncode == 0, revoked
    # The LocalGateway above made a key of its own; ours is the one with our id.
    [line] = [line for line in cli.ok("keys", "list") if line.startswith(key_id + " ")]
    assert line.startswith(f"{key_id} ops admin ")
    assert "revoked" in line.split(" ")[5:], line

    with LocalGateway({"database_url": cli.database_url}, with_dispatcher=False) as local:
        assert local.call("GET", "/v1/routing-rules", key=secret).status == 401


def test_keys_revoke_unknown_id_fails(cli: Cli) -> None:
    cli.ok("keys", "create", "--scope", "read", "--name", "reader")
    done = cli("keys", "revoke", "key_doesnotexist")
    assert done.returncode != 0, done
    assert "revoked" not in cli.ok("keys", "list")[0]


def test_rules_load(cli: Cli) -> None:
    rules = cli.tmp / "rules.toml"
    rules.write_text(TWO_RULES, encoding="utf-8")
    cli.ok("rules", "load", str(rules))
    assert cli.rule_names() == ["japan-line-first", "sms-then-email"]

    [secret] = cli.ok("keys", "create", "--scope", "admin", "--name", "ops")
    with LocalGateway({"database_url": cli.database_url}, with_dispatcher=False) as local:
        answer = local.call("GET", "/v1/routing-rules", key=secret)
    assert answer.status == 200, answer
    first, second = answer.body["data"]
    assert first["name"] == "japan-line-first"
    assert first["when"]["country"] == ["JP"]
    assert first["route"] == [
        {"channel": "line", "after": "2m", "until": "accepted"},
        {"channel": "sms", "after": "10m", "until": "delivered"},
        {"channel": "email"},
    ]
    assert first["quiet_hours"] == {"start": "21:00", "end": "08:00"}
    assert (second["name"], second["order"]) == ("sms-then-email", 20)

    cli.ok("rules", "load", str(rules))  # loading again replaces by name
    assert cli.rule_names() == ["japan-line-first", "sms-then-email"]


BAD_SECOND_RULES = {
    "unknown-channel": 'name = "bad"\nroute = [{ channel = "pager" }]\n',
    "impossible-receipt": 'name = "bad"\nroute = [{ channel = "email", until = "delivered" }]\n',
    "bad-duration": 'name = "bad"\nroute = [{ channel = "sms", after = "soon" }]\n',
    "unknown-field": 'name = "bad"\nroute = [{ channel = "sms" }]\ncolour = "red"\n',
}


@pytest.mark.parametrize("bad", BAD_SECOND_RULES.values(), ids=BAD_SECOND_RULES.keys())
def test_rules_load_is_all_or_nothing(cli: Cli, bad: str) -> None:
    rules = cli.tmp / "rules.toml"
    rules.write_text('[[rules]]\nname = "good"\nroute = [{ channel = "sms" }]\n\n[[rules]]\n' + bad)
    done = cli("rules", "load", str(rules))
    assert done.returncode != 0, done
    assert done.stderr.strip(), done
    assert cli.rule_names() == []


def test_check_config_lists_every_channel(cli: Cli) -> None:
    lines = cli.ok("check-config")
    for channel in CHANNELS:
        mine = [line for line in lines if re.match(rf"{channel}\b", line)]
        assert len(mine) == 1, (channel, lines)
        assert re.match(rf"{channel}: (enabled|disabled)\b", mine[0]), mine
    by_name = {line.split(":")[0]: line for line in lines}
    assert by_name["sms"].startswith("sms: disabled")
    assert by_name["email"].startswith("email: disabled")


def test_check_config_reports_enabled_channels(cli: Cli) -> None:
    done = cli("check-config", GATEWAY_SMTP_HOST="127.0.0.1", GATEWAY_SMTP_FROM="gw@example.com")
    assert done.returncode == 0, done
    by_name = {line.split(":")[0]: line for line in done.stdout.splitlines()}
    assert by_name["email"].startswith("email: enabled")
    assert by_name["sms"].startswith("sms: disabled")


def test_check_config_rejects_an_invalid_value(cli: Cli) -> None:
    done = cli("check-config", GATEWAY_SMTP_PORT="abc")
    assert done.returncode == 2, done
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    assert "GATEWAY_SMTP_PORT" in lines[0]


def test_the_wsgi_app_settles_its_garbage_collector(cli: Cli) -> None:
    """What start-up built is frozen out of the collector's walks; the young generation is collected less
    often (gateway/gctune.py; `gateway serve` and `gateway worker` call the same function)."""
    probe = "import gc, wsgi; print(gc.get_freeze_count(), gc.get_threshold()[0], wsgi.app.name)"
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=cli.env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    frozen, young, name = done.stdout.split()
    assert int(frozen) > 10_000, done.stdout  # the modules, the app and the mappers
    assert int(young) == 10_000 and name == "gateway"
