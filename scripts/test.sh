#!/usr/bin/env bash
# The whole test run, as CI runs it: set up (including Debian packages), static
# checks, then pytest over tests/ with a JUnit report in artifacts/junit.xml.
# Arguments go to pytest instead of the default "tests" (e.g. scripts/test.sh tests/unit -x).
# Exits non-zero when the checks or any test fail, or when pytest collects no tests.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

bash scripts/install.sh --dev --system-deps
# The models the e2e tests use, fetched here so no download counts against a test's timeout.
.venv/bin/python tests/prefetch.py

check_rc=0
bash scripts/check.sh || check_rc=$?

mkdir -p artifacts
export PYTHONUNBUFFERED=1
(($#)) || set -- tests
pytest_rc=0
.venv/bin/python -m pytest -p no:cacheprovider --junitxml=artifacts/junit.xml "$@" || pytest_rc=$?

if ((pytest_rc == 5)); then
  echo "[test] FAILED: pytest collected no tests" >&2
elif ((pytest_rc != 0)); then
  echo "[test] FAILED: pytest exited with $pytest_rc" >&2
fi
if ((check_rc != 0)); then
  echo "[test] FAILED: scripts/check.sh (see [check] lines above)" >&2
fi
if ((pytest_rc != 0 || check_rc != 0)); then
  exit 1
fi
echo "[test] all passed"
