#!/usr/bin/env bash
# Run a whole Lichen network on this machine: set up .venv, then `lichen up`.
# Arguments go to `lichen up` unchanged (try: scripts/up.sh --help).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bash "$ROOT/scripts/install.sh"
exec "$ROOT/.venv/bin/lichen" up "$@"
