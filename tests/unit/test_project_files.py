"""Keep the docs honest: README's commands are what CI runs; every setting is documented."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from gateway.settings import Settings, config_template

ROOT = Path(__file__).resolve().parents[2]


def test_ci_runs_the_readme_test_command() -> None:
    commands = re.findall(r"^(python3 -m venv .*)$", (ROOT / "README.md").read_text(), re.M)
    assert len(commands) >= 2
    assert commands[0].endswith("gateway demo")
    assert commands[1] in (ROOT / ".ci/run").read_text()


def test_every_setting_is_in_config_gateway_toml() -> None:
    text = (ROOT / "config/gateway.toml").read_text()
    assert text == config_template(), "regenerate: python -m gateway.settings > config/gateway.toml"
    for f in fields(Settings):
        assert f"# {f.name} = " in text, f.name
        assert f"GATEWAY_{f.name.upper()}" in text


def test_the_project_stands_on_its_own() -> None:
    for path in [ROOT / "README.md", *ROOT.glob("docs/*.md")]:
        assert "../shared" not in path.read_text(), path
