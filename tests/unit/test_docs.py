"""Docs that tests keep honest: every setting and every CLI command is documented."""

from __future__ import annotations

from pathlib import Path

import typer

from lichen.cli.main import app
from lichen.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def _commands(typer_app: typer.Typer) -> set[str]:
    names = {
        c.name or (c.callback.__name__ if c.callback else "") for c in typer_app.registered_commands
    }
    names |= {g.name or "" for g in typer_app.registered_groups}
    return {n for n in names if n}


def test_every_setting_is_in_the_configuration_doc() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    missing = [
        name
        for name in Settings.model_fields
        if f"`{name}`" not in doc or f"`LICHEN_{name.upper()}`" not in doc
    ]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_every_command_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = _commands(app) - {"version"}
    assert commands >= {"up", "models", "tracker", "node"}
    missing = sorted(c for c in commands if f"`lichen {c}" not in readme)
    assert not missing, f"commands missing from README.md: {missing}"


def test_readme_names_the_two_setup_commands() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "bash scripts/up.sh" in readme
    assert "bash scripts/test.sh" in readme
    assert "scripts/test.sh" in ci
