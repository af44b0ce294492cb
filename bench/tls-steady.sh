#!/usr/bin/env bash
# The producer's CPU with the source over TLS, at a steady 1,000 transactions of five rows a
# second for 20 s (pgbench --rate), two producer binaries alternating on one source and one
# Apache Kafka broker: bench/ANALYSIS.md, "Over TLS too". tribench's clusters have no TLS.
#
#   OLD=/path/to/tributary NEW=/path/to/tributary [REPS=8] [PORT=5591] bench/tls-steady.sh
#
# Prints, per repetition, the producer's and its walsender's CPU in clock ticks (1/100 s) over
# the load, the rows the source committed meanwhile, and whether the walsender's connection
# was TLS (pg_stat_ssl). Needs openssl, pgbench, Java for deploy/local/kafka.sh, and
# bin/tributary (its `dev` command is the schema registry).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OLD:?set OLD to a tributary binary}" "${NEW:?set NEW to a tributary binary}"
D=$(mktemp -d /tmp/tls-steady.XXXX); PORT=${PORT:-5591}; PGB=/usr/lib/postgresql/15/bin
chmod 755 "$D" # PostgreSQL runs as the postgres user when this runs as root
KD=$PWD/.cache/tls-steady/kafka # its own broker, as tribench has
DEV=
cleanup() {
  [ -z "$DEV" ] || kill "$DEV" 2>/dev/null || true
  deploy/local/kafka.sh stop "$KD" >/dev/null 2>&1 || true
  deploy/local/postgres.sh stop "$D/pg" "$PORT" immediate >/dev/null 2>&1 || true
  rm -rf "$D"
}
trap cleanup EXIT
export PATH=$PGB:$PATH
deploy/local/postgres.sh start $D/pg $PORT >/dev/null
openssl req -x509 -newkey rsa:2048 -nodes -keyout $D/pg/server.key -out $D/pg/server.crt -days 1 -subj /CN=localhost 2>/dev/null
if [ "$(id -u)" = 0 ]; then chown postgres $D/pg/server.key $D/pg/server.crt; fi
chmod 600 $D/pg/server.key
printf "ssl = on\nssl_cert_file = 'server.crt'\nssl_key_file = 'server.key'\n" >> $D/pg/postgresql.conf
deploy/local/postgres.sh stop $D/pg $PORT >/dev/null; deploy/local/postgres.sh start $D/pg $PORT >/dev/null
PSQL="psql -X -q -h 127.0.0.1 -p $PORT -U postgres -d postgres"
$PSQL -c "CREATE TABLE bench (id bigserial PRIMARY KEY, a int, b text, c timestamptz DEFAULT now())" -c "CREATE PUBLICATION pub FOR TABLE bench"
printf 'BEGIN;\nINSERT INTO bench (a, b) VALUES (1, '"'"'x'"'"'), (2, '"'"'y'"'"'), (3, '"'"'z'"'"'), (4, '"'"'w'"'"'), (5, '"'"'v'"'"');\nCOMMIT;\n' > $D/tx.sql
[ -d "$KD/lib" ] || deploy/local/kafka.sh fetch "$KD" >/dev/null
deploy/local/kafka.sh start "$KD" >/dev/null
BROKERS=$(cat $KD/run/bootstrap)
mkdir -p $D/dev
bin/tributary dev --data-dir $D/dev --kafka-addr 127.0.0.1:19092 --registry-addr 127.0.0.1:18081 --log-format json > $D/dev.log 2>&1 &
DEV=$!
sleep 2
cpu() { awk '{print $14+$15}' /proc/$1/stat; }
txns() { curl -s http://127.0.0.1:19464/metrics | awk '/^tributary_producer_transactions_total/ {print int($2)}'; }
echo "rep bin producer_cpu_ticks walsender_cpu_ticks rows tls source_txns_in_kafka"
for rep in $(seq 1 ${REPS:-8}); do
  if [ $((rep % 2)) = 1 ]; then BIN=$OLD; name=old; else BIN=$NEW; name=new; fi
  slot=s$rep
  $BIN producer --source "postgres://postgres@127.0.0.1:$PORT/postgres?sslmode=require" --publication pub --slot $slot --snapshot never \
    --brokers $BROKERS --registry http://127.0.0.1:18081 --prefix tls$rep --metrics-addr 127.0.0.1:19464 --log-format json > $D/p$rep.log 2>&1 &
  P=$!
  for i in $(seq 1 100); do
    W=$($PSQL -At -c "SELECT active_pid FROM pg_replication_slots WHERE slot_name='$slot' AND active")
    [ -n "$W" ] && break; sleep 0.2
  done
  ssl=$($PSQL -At -c "SELECT ssl FROM pg_stat_ssl WHERE pid=$W")
  $PSQL -c "INSERT INTO bench (a, b) VALUES (0, 'warm')"; sleep 3
  n0=$($PSQL -At -c "SELECT count(*) FROM bench")
  p0=$(cpu $P); w0=$(cpu $W)
  pgbench -n -h 127.0.0.1 -p $PORT -U postgres -f $D/tx.sql -R 1000 -T 20 -c 8 -j 2 postgres > $D/pgb$rep.log 2>&1
  sleep 2
  p1=$(cpu $P); w1=$(cpu $W)
  n1=$($PSQL -At -c "SELECT count(*) FROM bench")
  # Every source transaction since the producer started (the warm-up one and pgbench's) in Kafka.
  want=$(( 1 + (n1 - n0) / 5 ))
  for i in $(seq 1 50); do [ "$(txns)" = "$want" ] && break; sleep 0.2; done
  echo "$rep $name $((p1-p0)) $((w1-w0)) $((n1-n0)) ssl=$ssl $(txns)/$want"
  kill $P; wait $P 2>/dev/null || true
  $PSQL -c "SELECT pg_drop_replication_slot('$slot')" >/dev/null
done
