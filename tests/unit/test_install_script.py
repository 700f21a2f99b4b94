"""``scripts/install.sh``: runtime by default, ``--dev`` for the test tools, and a stamp that
knows which, run against a fake venv whose ``python`` only records what pip was asked."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

FAKE_PYTHON = """#!/usr/bin/env bash
# Records pip calls; "import lichen" always works; prints a version when asked.
if [[ "$1" == "-m" && "$2" == "pip" ]]; then
  echo "pip ${*:3}" >>"$(dirname "$0")/../pip.log"
  exit 0
fi
if [[ "$1" == "-c" ]]; then
  [[ "$2" == *print* ]] && echo "lichen 0.0.0"
  exit 0
fi
exit 1
"""


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of the repo's scripts and pyproject.toml with a fake, existing venv."""
    root = tmp_path / "repo"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "install.sh", root / "scripts" / "install.sh")
    shutil.copy2(REPO / "pyproject.toml", root / "pyproject.toml")
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text(FAKE_PYTHON)
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    (root / ".venv" / "pyvenv.cfg").write_text("version = 3.11.7\n")
    return root


def install(root: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LICHEN_")}
    result = subprocess.run(
        ["bash", str(root / "scripts" / "install.sh"), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def pip_calls(root: Path) -> list[str]:
    log = root / ".venv" / "pip.log"
    return log.read_text().splitlines() if log.exists() else []


def test_runtime_by_default_then_dev_on_request(tree: Path) -> None:
    out = install(tree)
    installs = [c for c in pip_calls(tree) if "--editable" in c]
    assert installs == [f"pip install --editable {tree}"]  # no [dev]: no test tools
    assert "step 2/2" in out and "(runtime)" in out
    assert "--quiet" not in installs[0]  # pip's own progress stays visible
    stamp = (tree / ".venv" / ".lichen-install").read_text().split()
    assert stamp[0] == "runtime" and len(stamp[1]) == 64

    assert "up to date (runtime" in install(tree)  # nothing changed: nothing runs
    assert len(pip_calls(tree)) == 2  # pip upgrade + the one install

    install(tree, "--dev")  # what scripts/test.sh asks for
    assert pip_calls(tree)[-1] == f"pip install --editable {tree}[dev]"
    assert (tree / ".venv" / ".lichen-install").read_text().startswith("dev ")
    calls = len(pip_calls(tree))
    assert "up to date (dev" in install(tree)  # a dev install serves running too
    assert "up to date (dev" in install(tree, "--dev")
    assert len(pip_calls(tree)) == calls


def test_a_changed_pyproject_reinstalls(tree: Path) -> None:
    install(tree, "--dev")
    with (tree / "pyproject.toml").open("a") as f:
        f.write("\n# a new dependency\n")
    install(tree)
    assert pip_calls(tree)[-1] == f"pip install --editable {tree}"


def test_the_test_script_asks_for_dev_tools() -> None:
    text = (REPO / "scripts" / "test.sh").read_text()
    assert "scripts/install.sh --dev --system-deps" in text
    assert "scripts/install.sh\n" in (REPO / "scripts" / "up.sh").read_text().replace('"', "")
