"""``lichen chat`` driven through a pipe against a real gateway."""

from __future__ import annotations

import subprocess

import pytest
from clients import NO_ANONYMOUS_LIMITS
from harness import DEFAULT_MODEL, Harness, LichenProcess, lichen_argv, scrubbed_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def up(module_harness: Harness) -> LichenProcess:
    return module_harness.up(env=NO_ANONYMOUS_LIMITS)


def chat(up: LichenProcess, stdin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *lichen_argv(),
            "chat",
            "--url",
            up.url,
            "--max-tokens",
            "16",
            "--temperature",
            "0",
            *args,
        ],
        input=stdin,
        env=scrubbed_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_chat_through_a_pipe_answers_each_line(up: LichenProcess) -> None:
    result = chat(up, f"Say hi\n\n/model {DEFAULT_MODEL}\nWhat is the capital of France?\n")
    assert result.returncode == 0, result.stderr
    answers = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(answers) >= 2, result.stdout
    assert f"model: {DEFAULT_MODEL}" in result.stderr
    assert "you>" not in result.stdout + result.stderr  # no prompts when not a terminal


def test_quit_stops_reading(up: LichenProcess) -> None:
    result = chat(up, "/quit\nSay hi\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""


def test_a_failing_request_is_reported_and_the_exit_status_says_so(up: LichenProcess) -> None:
    result = chat(up, "Say hi\n", "--model", "no-such-model")
    assert result.returncode == 1
    assert "no-such-model" in result.stderr and "404" in result.stderr
    assert result.stdout == ""
