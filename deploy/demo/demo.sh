#!/usr/bin/env bash
# Tributary end-to-end demo (`make demo`), on one machine, without containers:
#
#   throw-away source and target PostgreSQL 15 (deploy/local/postgres.sh, free ports)
#   + `tributary dev` (embedded Kafka broker and schema registry)
#   + customers / orders / order_items with foreign keys, the same DDL on both
#   + a concurrent pgbench workload of multi-table transactions on the source
#   + `tributary producer` and `tributary consumer`, with progress on screen
#   + `tributary verify`: source and target compared table by table.
#
# Exit status: 0 when verify finds the target equal to the source, non-zero
# otherwise. Everything is removed at exit; KEEP=1 keeps the data directories
# and logs (the servers are stopped either way).
#
# Settings (environment): DEMO_SECONDS (workload length, default 20),
# DEMO_CLIENTS (pgbench clients, default 4), PG_BINDIR (PostgreSQL 15 server
# binaries, default /usr/lib/postgresql/15/bin), KEEP=1, DEMO_TAMPER=1 (change
# one target row behind the consumer's back, to see verify fail).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
DEMO=$ROOT/deploy/demo
BIN=$ROOT/bin/tributary
SECONDS_WORKLOAD=${DEMO_SECONDS:-20}
CLIENTS=${DEMO_CLIENTS:-4}
PG_BINDIR=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
export PG_BINDIR

say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }
die() { printf 'demo: ERROR: %s\n' "$*" >&2; exit 1; }

# ------------------------------------------------------------ prerequisites
command -v go >/dev/null 2>&1 ||
  die "Go is missing: install Go 1.26 or later (https://go.dev/dl/, e.g. tar -C /usr/local -xzf go1.26.*.linux-amd64.tar.gz; export PATH=\$PATH:/usr/local/go/bin)"
command -v make >/dev/null 2>&1 || die "make is missing: apt-get install -y make"
for b in postgres initdb pg_ctl pg_isready pgbench; do
  [ -x "$PG_BINDIR/$b" ] ||
    die "PostgreSQL 15 server binary $PG_BINDIR/$b is missing: apt-get install -y postgresql-15 (or set PG_BINDIR)"
done
PSQL=$PG_BINDIR/psql
[ -x "$PSQL" ] || PSQL=$(command -v psql 2>/dev/null) ||
  die "psql is missing: apt-get install -y postgresql-client-15"

# ------------------------------------------------------------ workspace and cleanup
WORK=$(mktemp -d /tmp/trib-demo.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/logs"
PIDS=()
SRC_PORT= DST_PORT=
cleanup() {
  local rc=$?
  set +e
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do kill -TERM "${PIDS[i]}" 2>/dev/null; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
  done
  [ -n "$SRC_PORT" ] && "$ROOT/deploy/local/postgres.sh" stop "$WORK/src" "$SRC_PORT" fast >/dev/null 2>&1
  [ -n "$DST_PORT" ] && "$ROOT/deploy/local/postgres.sh" stop "$WORK/dst" "$DST_PORT" fast >/dev/null 2>&1
  if [ "${KEEP:-0}" = 1 ]; then
    say "KEEP=1: data and logs kept in $WORK (servers stopped; restart one with deploy/local/postgres.sh start $WORK/src $SRC_PORT)"
  else
    rm -rf "$WORK"
  fi
  exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# free_port prints a TCP port on 127.0.0.1 that nothing listens on and that
# this script has not handed out yet.
USED_PORTS=" "
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    case $USED_PORTS in *" $p "*) continue ;; esac
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      USED_PORTS="$USED_PORTS$p "
      echo "$p"
      return
    fi
  done
  die "no free TCP port found on 127.0.0.1"
}

T0=$(date +%s)
elapsed() { echo "$(($(date +%s) - T0))s"; }

# ------------------------------------------------------------ build
say "building bin/tributary (make build)"
make -s -C "$ROOT" build

# ------------------------------------------------------------ services
SRC_PORT=$(free_port)
DST_PORT=$(free_port)
KAFKA_PORT=$(free_port)
REG_PORT=$(free_port)
say "starting source PostgreSQL on 127.0.0.1:$SRC_PORT and target on 127.0.0.1:$DST_PORT"
SRC=$("$ROOT/deploy/local/postgres.sh" start "$WORK/src" "$SRC_PORT" 2>"$WORK/logs/src-start.log") ||
  { cat "$WORK/logs/src-start.log" >&2; die "source PostgreSQL did not start"; }
DST=$("$ROOT/deploy/local/postgres.sh" start "$WORK/dst" "$DST_PORT" 2>"$WORK/logs/dst-start.log") ||
  { cat "$WORK/logs/dst-start.log" >&2; die "target PostgreSQL did not start"; }

say "starting tributary dev (embedded Kafka 127.0.0.1:$KAFKA_PORT, registry 127.0.0.1:$REG_PORT)"
"$BIN" dev --data-dir "$WORK/kafka" --kafka-addr "127.0.0.1:$KAFKA_PORT" --registry-addr "127.0.0.1:$REG_PORT" \
  --log-format text >"$WORK/logs/dev.out" 2>"$WORK/logs/dev.log" &
PIDS+=($!)
for _ in $(seq 1 100); do grep -qx ready "$WORK/logs/dev.out" 2>/dev/null && break; sleep 0.1; done
grep -qx ready "$WORK/logs/dev.out" || { cat "$WORK/logs/dev.log" >&2; die "tributary dev did not become ready"; }
BROKERS=127.0.0.1:$KAFKA_PORT
REGISTRY=http://127.0.0.1:$REG_PORT

sql() { "$PSQL" -X -q -v ON_ERROR_STOP=1 "$@"; }
say "creating customers, orders and order_items on both databases"
sql -d "$SRC" -f "$DEMO/schema.sql"
sql -d "$DST" -f "$DEMO/schema.sql"
sql -d "$SRC" -f "$DEMO/seed.sql"

# ------------------------------------------------------------ producer and consumer
say "starting the producer and the consumer (logs in $WORK/logs)"
"$BIN" producer --source "$SRC" --publication demo --slot demo --brokers "$BROKERS" --registry "$REGISTRY" \
  --prefix demo --log-format text >"$WORK/logs/producer.log" 2>&1 &
PIDS+=($!)
"$BIN" consumer --brokers "$BROKERS" --registry "$REGISTRY" --prefix demo --name demo --target "$DST" \
  --log-format text >"$WORK/logs/consumer.log" 2>&1 &
PIDS+=($!)
# The workload starts once the slot streams: its changes then reach Kafka.
for _ in $(seq 1 300); do
  [ "$(sql -At -d "$SRC" -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'demo' AND active")" = 1 ] && break
  sleep 0.1
done
[ "$(sql -At -d "$SRC" -c "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'demo' AND active")" = 1 ] ||
  { tail -20 "$WORK/logs/producer.log" >&2; die "the producer did not start streaming"; }

counts() {
  sql -At -F' ' -d "$1" -c "SELECT (SELECT count(*) FROM customers), (SELECT count(*) FROM orders), (SELECT count(*) FROM order_items)"
}
progress() {
  local s d lsn applied
  read -r -a s <<<"$(counts "$SRC")"
  read -r -a d <<<"$(counts "$DST")"
  lsn=$(sql -At -d "$SRC" -c "SELECT pg_current_wal_lsn()")
  applied=$(sql -At -d "$DST" -c "SELECT coalesce((SELECT next_offset || ' frames, commit LSN ' || commit_lsn::text ||
      ' (lag ' || pg_size_pretty(greatest(pg_wal_lsn_diff('$lsn', commit_lsn), 0)) || ')'
      FROM tributary_checkpoint WHERE consumer = 'demo' AND kind = 'transactions'), 'nothing yet')" 2>/dev/null || echo "nothing yet")
  printf '  %5s  source: %4s customers %6s orders %6s items | target: %4s customers %6s orders %6s items | applied %s\n' \
    "$(elapsed)" "${s[0]}" "${s[1]}" "${s[2]}" "${d[0]}" "${d[1]}" "${d[2]}" "$applied"
}
check_alive() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill -0 "$pid" 2>/dev/null && continue
    tail -15 "$WORK/logs/producer.log" "$WORK/logs/consumer.log" >&2
    die "a tributary process (pid $pid) exited early"
  done
}

# ------------------------------------------------------------ workload
say "workload: $CLIENTS pgbench clients for ${SECONDS_WORKLOAD}s (new orders across three tables; status changes and cancellations)"
"$PG_BINDIR/pgbench" -n -c "$CLIENTS" -j 2 -T "$SECONDS_WORKLOAD" \
  -f "$DEMO/new_order.sql@4" -f "$DEMO/update_order.sql@1" "$SRC" >"$WORK/logs/pgbench.log" 2>&1 &
LOAD=$!
while kill -0 "$LOAD" 2>/dev/null; do
  progress
  check_alive
  sleep 3
done
wait "$LOAD" || { cat "$WORK/logs/pgbench.log" >&2; die "pgbench failed"; }
say "workload done: $(grep -E '^(number of transactions actually processed|tps)' "$WORK/logs/pgbench.log" | tr '\n' ' ')"
progress

# ------------------------------------------------------------ verify
if [ "${DEMO_TAMPER:-0}" = 1 ]; then
  say "DEMO_TAMPER=1: changing customer 1 on the target only"
  sql -d "$DST" -c "UPDATE customers SET name = 'tampered' WHERE id = 1"
fi
say "verifying: tributary verify waits for the consumer to pass the source snapshot, then compares"
set +e
"$BIN" verify --source "$SRC" --target "$DST" --consumer demo --timeout 60s --log-format text \
  2>"$WORK/logs/verify.log" | tee "$WORK/logs/verify.out"
VERIFY_RC=${PIPESTATUS[0]}
set -e
progress
grep -E 'waiting|caught up' "$WORK/logs/verify.log" | sed 's/^/  verify log: /' || true

echo
echo "Where things are:"
echo "  source  $SRC   (data $WORK/src)"
echo "  target  $DST   (data $WORK/dst)"
echo "  kafka   $BROKERS, registry $REGISTRY   (data $WORK/kafka; topics demo.public.*, demo.transactions)"
echo "  logs    $WORK/logs"
if [ "${KEEP:-0}" != 1 ]; then
  echo "  all of it is removed now; run with KEEP=1 to keep it"
fi
if [ "$VERIFY_RC" -eq 0 ]; then
  say "PASS: the target equals the source, table by table ($(elapsed))"
else
  tail -20 "$WORK/logs/consumer.log" >&2
  cat "$WORK/logs/verify.log" >&2
  say "FAIL: tributary verify exited $VERIFY_RC ($(elapsed))"
  exit 1
fi
