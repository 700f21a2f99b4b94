#!/usr/bin/env bash
# Lint, format check and type check with the venv's tools. Runs every check, then
# exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=.venv/bin
[[ -x "$BIN/ruff" && -x "$BIN/mypy" ]] || {
  echo "[check] error: $BIN/ruff or $BIN/mypy missing; run scripts/install.sh --dev" >&2
  exit 1
}

failed=()
run() {
  printf '[check] %s\n' "$*"
  "$@" || failed+=("$*")
}

run "$BIN/ruff" check .
run "$BIN/ruff" format --check .
run "$BIN/mypy"  # targets and strictness: [tool.mypy] in pyproject.toml

if ((${#failed[@]})); then
  printf '[check] FAILED: %s\n' "${failed[@]}" >&2
  exit 1
fi
echo "[check] all passed"
