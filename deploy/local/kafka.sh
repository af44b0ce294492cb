#!/usr/bin/env bash
# Apache Kafka (KRaft) on loopback, from Maven Central jars, no containers: a single node,
# or a cluster of three (KAFKA_NODES=3).
#
#   deploy/local/kafka.sh fetch  DIR   # jars into DIR/lib (cached; needs mvn + Maven Central)
#   deploy/local/kafka.sh start  DIR   # fresh storage, broker(s) on free 127.0.0.1 ports;
#                                      # writes and prints DIR/run/bootstrap
#                                      # (127.0.0.1:PORT, or three of them comma-separated)
#   deploy/local/kafka.sh stop   DIR   # every node: TERM, up to 20 s, then KILL; logs stay in DIR/run
#   deploy/local/kafka.sh status DIR   # exit 0 and print bootstrap when (every node is) running
#
# One node of a cluster, by its node.id (1, 2 or 3); its data is kept:
#   deploy/local/kafka.sh kill-node  DIR ID...  # SIGKILL, and wait until the process is gone
#   deploy/local/kafka.sh stop-node  DIR ID...  # TERM, up to 20 s, then KILL
#   deploy/local/kafka.sh start-node DIR ID...  # start again with its own properties and data,
#                                               # and wait until it serves
#
# Environment:
#   KAFKA_NODES          1 (default): one broker+controller. 3: three
#                        broker+controller nodes with a 3-voter quorum, replication factor 3
#                        and min.insync.replicas 2 (also for the offsets and transaction
#                        state topics); node N lives in DIR/run/nodeN.
#   KAFKA_VERSION        version of org.apache.kafka:kafka_2.13 (default: 3.9.1, and
#                        4.1.0 as a fallback when 3.9.1 cannot be fetched)
#   KAFKA_HEAP           JVM heap flags of each node (default: -Xmx512m -Xms256m for a single
#                        node, -Xmx384m -Xms128m for each node of a cluster)
#   KAFKA_START_TIMEOUT  seconds to wait for the broker(s) (default: 90)
#   JAVA                 java binary (default: java on PATH)
#   KAFKA_PROXIED_LISTENER  off when empty; a single node only. "1" (or HOST:PORT) adds a
#                        second listener, PROXIED, on a free 127.0.0.1 port, advertised at a free port
#                        (or HOST:PORT) where nothing listens: put a TCP proxy there
#                        (to the listener port) and clients that bootstrap from it send
#                        all their Kafka traffic through the proxy, for fault injection.
#                        DIR/run/proxied holds "LISTEN_ADDR ADVERTISED_ADDR".
# See deploy/README.md for the settings and what was verified.
set -euo pipefail

PROG=$(basename "$0")
DEFAULT_VERSION=3.9.1
FALLBACK_VERSION=4.1.0
JAVA=${JAVA:-java}
SINGLE_HEAP="-Xmx512m -Xms256m"
CLUSTER_HEAP="-Xmx384m -Xms128m"
KAFKA_NODES=${KAFKA_NODES:-1}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}
STARTED_RE='Kafka Server started|\] started \(kafka\.server'

die() { echo "$PROG: ERROR: $*" >&2; exit 1; }
log() { echo "$PROG: $*" >&2; }

usage() {
  echo "usage: $PROG fetch|start|stop|status DIR" >&2
  echo "       $PROG kill-node|stop-node|start-node DIR ID..." >&2
  exit 2
}

[ $# -ge 2 ] || usage
CMD=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd -P)
shift 2
IDS=("$@")
LIB=$DIR/lib
CONF=$DIR/conf
RUN=$DIR/run
PIDFILE=$RUN/kafka.pid
LOGFILE=$RUN/kafka.log

show_log_tail() {
  local f=${1:-$LOGFILE}
  if [ -s "$f" ]; then
    echo "----- last 60 lines of $f -----" >&2
    tail -n 60 "$f" >&2
    echo "----- end of $f -----" >&2
  fi
}

# ---------------------------------------------------------------- fetch
have_jars() {
  [ -f "$LIB/.complete" ] && compgen -G "$LIB/kafka_2.13-*.jar" >/dev/null
}

write_pom() { # $1 = kafka version
  local v=$1 logdeps
  case $v in
    3.*)
      logdeps='    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-reload4j</artifactId><version>1.7.36</version></dependency>'
      ;;
    *)
      logdeps='    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j-impl</artifactId><version>2.24.3</version></dependency>'
      ;;
  esac
  mkdir -p "$DIR/pom"
  cat >"$DIR/pom/pom.xml" <<EOF
<?xml version="1.0" encoding="UTF-8"?>
<!-- Throw-away pom written by deploy/local/kafka.sh: only used to copy jars into lib/. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.tributary</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>$v</version></dependency>
$logdeps
  </dependencies>
</project>
EOF
}

write_log_config() { # log to stdout (redirected to run/kafka.log), INFO, quiet chatter
  mkdir -p "$CONF"
  cat >"$CONF/log4j.properties" <<'EOF'
# log4j 1.x (reload4j) config for Kafka 3.x, written by deploy/local/kafka.sh
log4j.rootLogger=INFO, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.org.apache.kafka=INFO
log4j.logger.kafka=INFO
log4j.logger.state.change.logger=WARN
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
EOF
  cat >"$CONF/log4j2.properties" <<'EOF'
# log4j2 config for Kafka 4.x, written by deploy/local/kafka.sh
status = warn
appender.stdout.type = Console
appender.stdout.name = STDOUT
appender.stdout.layout.type = PatternLayout
appender.stdout.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.statechange.name = state.change.logger
logger.statechange.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
EOF
}

fetch_version() { # $1 = version; returns non-zero on failure
  local v=$1
  command -v mvn >/dev/null || die "mvn not found on PATH (needed to fetch Kafka jars)"
  write_pom "$v"
  rm -rf "$LIB.tmp"
  log "fetching org.apache.kafka:kafka_2.13:$v and its runtime dependencies with Maven"
  if ! (cd "$DIR/pom" && mvn -q -B dependency:copy-dependencies \
          -DoutputDirectory="$LIB.tmp" -DincludeScope=runtime) >"$DIR/pom/mvn.log" 2>&1; then
    log "Maven failed for kafka_2.13:$v"
    show_log_tail "$DIR/pom/mvn.log"
    rm -rf "$LIB.tmp"
    return 1
  fi
  compgen -G "$LIB.tmp/kafka_2.13-$v.jar" >/dev/null || {
    log "kafka_2.13-$v.jar missing after Maven ran"; return 1; }
  echo "$v" >"$LIB.tmp/.version"
  touch "$LIB.tmp/.complete"
  rm -rf "$LIB"
  mv "$LIB.tmp" "$LIB"
}

cmd_fetch() {
  write_log_config
  if have_jars; then
    log "jars already in $LIB (kafka $(cat "$LIB/.version" 2>/dev/null || echo '?')), skipping fetch"
    return 0
  fi
  local t0=$SECONDS
  if [ -n "${KAFKA_VERSION:-}" ]; then
    fetch_version "$KAFKA_VERSION" || die "could not fetch Kafka $KAFKA_VERSION"
  else
    fetch_version "$DEFAULT_VERSION" || {
      log "falling back to Kafka $FALLBACK_VERSION"
      fetch_version "$FALLBACK_VERSION" || die "could not fetch Kafka $DEFAULT_VERSION nor $FALLBACK_VERSION"
    }
  fi
  log "fetched Kafka $(cat "$LIB/.version") into $LIB ($(find "$LIB" -name '*.jar' | wc -l) jars, $((SECONDS - t0)) s)"
}

# ---------------------------------------------------------------- start/stop
kafka_version() { cat "$LIB/.version" 2>/dev/null || echo "$DEFAULT_VERSION"; }

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
    return
  fi
  # bash fallback: a random high port on which nothing answers
  local p
  for _ in $(seq 1 200); do
    p=$(( (RANDOM % 20000) + 20000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
  done
  die "no free port found"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

alive() { # $1 = pid; a process that was killed but not yet reaped (a zombie) is not alive
  kill -0 "$1" 2>/dev/null || return 1
  local st
  # /proc/PID/stat: "PID (COMM) STATE ..."; where there is no /proc, trust kill -0.
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 0
  [ "$st" != Z ] && [ "$st" != X ]
}

pid_of() { # $1 = pid file; prints the pid and returns 0 when that process is alive
  [ -f "$1" ] || return 1
  local pid
  pid=$(cat "$1" 2>/dev/null) || return 1
  [ -n "$pid" ] && alive "$pid" || return 1
  echo "$pid"
}

running_pid() { # prints pid and returns 0 when the single-node broker from this DIR is alive
  pid_of "$PIDFILE"
}

java_cmd() { # common JVM flags; $1 = default heap flags, $2 = kafka.logs.dir
  local v
  v=$(kafka_version)
  read -r -a JAVA_ARGS <<<"${KAFKA_HEAP:-$1}"
  JAVA_ARGS+=(-XX:+UseG1GC -Djava.awt.headless=true -Dkafka.logs.dir="$2")
  case $v in
    3.*) JAVA_ARGS+=(-Dlog4j.configuration="file:$CONF/log4j.properties") ;;
    *)   JAVA_ARGS+=(-Dlog4j2.configurationFile="$CONF/log4j2.properties") ;;
  esac
  JAVA_ARGS+=(-cp "$LIB/*")
}

cmd_start() {
  case $KAFKA_NODES in
    1) cmd_start_single ;;
    3) cmd_start_cluster 3 ;;
    *) die "KAFKA_NODES=$KAFKA_NODES: want 1 or 3" ;;
  esac
}

cmd_start_single() {
  have_jars || die "no Kafka jars in $LIB; run: $PROG fetch $DIR"
  command -v "$JAVA" >/dev/null || die "java not found (set JAVA=...)"
  local pid
  if [ -n "$(cluster_pids)" ]; then
    die "a cluster from $DIR is running; run: $PROG stop $DIR"
  fi
  if pid=$(running_pid); then
    if [ -s "$RUN/bootstrap" ] && port_open "$(cut -d: -f2 "$RUN/bootstrap")"; then
      log "already running (pid $pid)"
      cat "$RUN/bootstrap"
      return 0
    fi
    die "a broker (pid $pid) from $DIR is alive but not serving; run: $PROG stop $DIR"
  fi
  [ -f "$CONF/log4j.properties" ] || write_log_config

  local port cport
  port=$(free_port)
  cport=$(free_port)
  while [ "$cport" = "$port" ]; do cport=$(free_port); done
  local listeners="PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport"
  local advertised="PLAINTEXT://127.0.0.1:$port"
  local protomap="CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"
  local proxied=
  if [ -n "${KAFKA_PROXIED_LISTENER:-}" ]; then
    local pport adv
    pport=$(free_port)
    while [ "$pport" = "$port" ] || [ "$pport" = "$cport" ]; do pport=$(free_port); done
    if [ "$KAFKA_PROXIED_LISTENER" = 1 ]; then
      adv=127.0.0.1:$(free_port)
      while [ "${adv##*:}" = "$pport" ] || [ "${adv##*:}" = "$port" ] || [ "${adv##*:}" = "$cport" ]; do
        adv=127.0.0.1:$(free_port)
      done
    else
      adv=$KAFKA_PROXIED_LISTENER
      [[ $adv =~ ^[A-Za-z0-9.-]+:[0-9]+$ ]] || die "KAFKA_PROXIED_LISTENER=$adv: want 1 or HOST:PORT"
    fi
    listeners="$listeners,PROXIED://127.0.0.1:$pport"
    advertised="$advertised,PROXIED://$adv"
    protomap="$protomap,PROXIED:PLAINTEXT"
    proxied="127.0.0.1:$pport $adv"
  fi

  rm -rf "$RUN"
  mkdir -p "$RUN/data"
  local props=$RUN/server.properties
  cat >"$props" <<EOF
# Single-node KRaft broker+controller, written by deploy/local/kafka.sh
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$cport
listeners=$listeners
advertised.listeners=$advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=$protomap
log.dirs=$RUN/data
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
min.insync.replicas=1
default.replication.factor=1
group.initial.rebalance.delay.ms=0
# 4.x share groups (ignored by 3.9)
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
EOF

  java_cmd "$SINGLE_HEAP" "$RUN"
  local uuid
  "$JAVA" "${JAVA_ARGS[@]}" kafka.tools.StorageTool random-uuid >"$RUN/storage.log" 2>&1 \
    || { show_log_tail "$RUN/storage.log"; die "StorageTool random-uuid failed"; }
  uuid=$(tail -n 1 "$RUN/storage.log")
  [[ $uuid =~ ^[A-Za-z0-9_-]{22}$ ]] ||
    { show_log_tail "$RUN/storage.log"; die "StorageTool random-uuid printed '$uuid', not a cluster id"; }
  if ! "$JAVA" "${JAVA_ARGS[@]}" kafka.tools.StorageTool format -t "$uuid" -c "$props" \
        >>"$RUN/storage.log" 2>&1; then
    show_log_tail "$RUN/storage.log"
    die "StorageTool format failed"
  fi

  local t0=$SECONDS
  nohup "$JAVA" "${JAVA_ARGS[@]}" kafka.Kafka "$props" >"$LOGFILE" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PIDFILE"

  local ready=
  while [ $((SECONDS - t0)) -lt "$KAFKA_START_TIMEOUT" ]; do
    if ! kill -0 "$pid" 2>/dev/null; then
      show_log_tail
      die "Kafka exited during start-up (see $LOGFILE)"
    fi
    if port_open "$port" && grep -qE "$STARTED_RE" "$LOGFILE"; then
      ready=1
      break
    fi
    sleep 0.5
  done
  if [ -z "$ready" ]; then
    show_log_tail
    kill -KILL "$pid" 2>/dev/null || true
    die "Kafka not ready within ${KAFKA_START_TIMEOUT}s (see $LOGFILE)"
  fi
  echo "127.0.0.1:$port" >"$RUN/bootstrap"
  if [ -n "$proxied" ]; then
    echo "$proxied" >"$RUN/proxied"
    log "proxied listener: listening on ${proxied% *}, advertised as ${proxied#* }"
  fi
  log "Kafka $(kafka_version) ready in $((SECONDS - t0)) s (pid $pid, controller 127.0.0.1:$cport, log $LOGFILE)"
  cat "$RUN/bootstrap"
}

described() { # LABEL:PID... -> "LABEL (pid PID), ..."
  local item out=""
  for item in "$@"; do out+="${out:+, }${item%%:*} (pid ${item#*:})"; done
  echo "$out"
}

# stop_pids TIMEOUT_SECONDS LABEL:PID...: TERM every one, wait up to TIMEOUT for all of
# them, then KILL whichever is left and wait until it is gone.
stop_pids() {
  local timeout=$1 item left
  shift
  for item in "$@"; do kill -TERM "${item#*:}" 2>/dev/null || true; done
  local t0=$SECONDS
  while :; do
    left=()
    for item in "$@"; do alive "${item#*:}" && left+=("$item"); done
    [ ${#left[@]} -eq 0 ] && return 0
    [ $((SECONDS - t0)) -ge "$timeout" ] && break
    sleep 0.5
  done
  for item in "${left[@]}"; do
    log "${item%%:*} (pid ${item#*:}) still alive after $timeout s, sending KILL"
    kill -KILL "${item#*:}" 2>/dev/null || true
  done
  for _ in $(seq 1 40); do
    left=()
    for item in "$@"; do alive "${item#*:}" && left+=("$item"); done
    [ ${#left[@]} -eq 0 ] && return 0
    sleep 0.25
  done
  die "still alive after KILL: $(described "${left[@]}")"
}

cmd_stop() {
  local pid item
  local -a all=()
  if pid=$(running_pid); then all+=("broker:$pid"); fi
  for item in $(cluster_pids); do all+=("node ${item%%:*}:${item#*:}"); done
  if [ ${#all[@]} -eq 0 ]; then
    log "not running"
    rm -f "$PIDFILE" "$RUN"/node*/kafka.pid
    return 0
  fi
  stop_pids 20 "${all[@]}"
  rm -f "$PIDFILE" "$RUN"/node*/kafka.pid
  if [ "${all[0]%%:*}" = broker ] && [ ${#all[@]} -eq 1 ]; then
    log "stopped (pid ${all[0]#*:}); logs kept in $RUN"
  else
    log "stopped $(described "${all[@]}"); logs kept in $RUN"
  fi
}

cmd_status() {
  local pid
  if [ -f "$RUN/nodes" ]; then
    cluster_status
    return
  fi
  if pid=$(running_pid) && [ -s "$RUN/bootstrap" ] && port_open "$(cut -d: -f2 "$RUN/bootstrap")"; then
    log "running (pid $pid, kafka $(kafka_version))"
    cat "$RUN/bootstrap"
    return 0
  fi
  log "not running"
  return 1
}

# ---------------------------------------------------------------- cluster (KAFKA_NODES=3)
# DIR/run/nodes lists the cluster's nodes, one "ID 127.0.0.1:PORT" line each; node ID
# keeps server.properties, data/, kafka.log and kafka.pid in DIR/run/nodeID.

node_dir() { echo "$RUN/node$1"; }

node_addr() { # $1 = id; prints 127.0.0.1:PORT of node $1, fails for an unknown node
  [ -f "$RUN/nodes" ] || return 1
  awk -v id="$1" '$1 == id { print $2; found = 1 } END { exit !found }' "$RUN/nodes"
}

cluster_pids() { # "ID:PID" of each live node of a cluster in DIR
  [ -f "$RUN/nodes" ] || return 0
  local id addr pid
  while read -r id addr; do
    if pid=$(pid_of "$(node_dir "$id")/kafka.pid"); then echo "$id:$pid"; fi
  done <"$RUN/nodes"
}

started_count() { # $1 = log file; how many times the broker in it logged that it started
  grep -cE "$STARTED_RE" "$1" 2>/dev/null || true
}

launch_node() { # $1 = id; starts node $1 in the background from its properties, appending to its log
  local nd
  nd=$(node_dir "$1")
  java_cmd "$CLUSTER_HEAP" "$nd"
  nohup "$JAVA" "${JAVA_ARGS[@]}" kafka.Kafka "$nd/server.properties" >>"$nd/kafka.log" 2>&1 </dev/null &
  echo "$!" >"$nd/kafka.pid"
}

# wait_nodes ID:STARTS...: waits until each node ID has logged more than STARTS start
# lines and its port answers. On a node's exit or the timeout it kills the nodes it
# waits for, prints their log tails and dies.
wait_nodes() {
  local t0=$SECONDS item id nd pid addr
  local -a pending=("$@") next
  while :; do
    next=()
    for item in "${pending[@]}"; do
      id=${item%%:*}
      nd=$(node_dir "$id")
      addr=$(node_addr "$id")
      if ! pid=$(pid_of "$nd/kafka.pid"); then
        show_log_tail "$nd/kafka.log"
        kill_waited "$@"
        die "node $id exited during start-up (see $nd/kafka.log)"
      fi
      if port_open "${addr##*:}" && [ "$(started_count "$nd/kafka.log")" -gt "${item#*:}" ]; then
        continue
      fi
      next+=("$item")
    done
    [ ${#next[@]} -eq 0 ] && return 0
    pending=("${next[@]}")
    if [ $((SECONDS - t0)) -ge "$KAFKA_START_TIMEOUT" ]; then
      for item in "${pending[@]}"; do show_log_tail "$(node_dir "${item%%:*}")/kafka.log"; done
      kill_waited "$@"
      die "node(s) ${pending[*]%%:*} not ready within ${KAFKA_START_TIMEOUT}s (logs in $RUN/node*/kafka.log)"
    fi
    sleep 0.5
  done
}

kill_waited() { # ID:STARTS...: SIGKILL those nodes
  local item pid
  for item in "$@"; do
    if pid=$(pid_of "$(node_dir "${item%%:*}")/kafka.pid"); then kill -KILL "$pid" 2>/dev/null || true; fi
  done
}

cmd_start_cluster() { # $1 = node count
  local n=$1 id
  have_jars || die "no Kafka jars in $LIB; run: $PROG fetch $DIR"
  command -v "$JAVA" >/dev/null || die "java not found (set JAVA=...)"
  [ -z "${KAFKA_PROXIED_LISTENER:-}" ] || die "KAFKA_PROXIED_LISTENER works with a single node only (KAFKA_NODES=1)"
  local pid
  if pid=$(running_pid); then
    die "a single-node broker (pid $pid) from $DIR is running; run: $PROG stop $DIR"
  fi
  local live
  live=$(cluster_pids | wc -l)
  if [ "$live" -gt 0 ]; then
    if [ "$live" -eq "$(wc -l <"$RUN/nodes")" ] && [ -s "$RUN/bootstrap" ] && cluster_serving; then
      log "already running ($live nodes)"
      cat "$RUN/bootstrap"
      return 0
    fi
    die "$live node(s) of a cluster from $DIR are alive but the cluster is not whole; run: $PROG stop $DIR"
  fi
  [ -f "$CONF/log4j.properties" ] || write_log_config

  local -a ports
  read -r -a ports <<<"$(pick_ports $((2 * n)))"
  [ ${#ports[@]} -eq $((2 * n)) ] || die "could not pick $((2 * n)) free ports"
  local voters="" bootstrap=""
  for id in $(seq 1 "$n"); do
    voters+="${voters:+,}$id@127.0.0.1:${ports[$((n + id - 1))]}"
    bootstrap+="${bootstrap:+,}127.0.0.1:${ports[$((id - 1))]}"
  done

  rm -rf "$RUN"
  mkdir -p "$RUN"
  for id in $(seq 1 "$n"); do
    local nd port cport
    nd=$(node_dir "$id")
    port=${ports[$((id - 1))]}
    cport=${ports[$((n + id - 1))]}
    mkdir -p "$nd/data"
    echo "$id 127.0.0.1:$port" >>"$RUN/nodes"
    cat >"$nd/server.properties" <<EOF
# Node $id of a $n-node KRaft cluster (each node broker+controller), written by deploy/local/kafka.sh
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$port,CONTROLLER://127.0.0.1:$cport
advertised.listeners=PLAINTEXT://127.0.0.1:$port
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs=$nd/data
num.partitions=3
auto.create.topics.enable=false
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
min.insync.replicas=2
default.replication.factor=3
unclean.leader.election.enable=false
group.initial.rebalance.delay.ms=0
# 4.x share groups (ignored by 3.9)
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
EOF
  done

  java_cmd "$CLUSTER_HEAP" "$RUN"
  local uuid
  "$JAVA" "${JAVA_ARGS[@]}" kafka.tools.StorageTool random-uuid >"$RUN/storage.log" 2>&1 \
    || { show_log_tail "$RUN/storage.log"; die "StorageTool random-uuid failed"; }
  uuid=$(tail -n 1 "$RUN/storage.log")
  [[ $uuid =~ ^[A-Za-z0-9_-]{22}$ ]] ||
    { show_log_tail "$RUN/storage.log"; die "StorageTool random-uuid printed '$uuid', not a cluster id"; }
  # The three formats are independent JVMs: run them side by side.
  local -a fpids=()
  for id in $(seq 1 "$n"); do
    "$JAVA" "${JAVA_ARGS[@]}" kafka.tools.StorageTool format -t "$uuid" -c "$(node_dir "$id")/server.properties" \
      >"$(node_dir "$id")/storage.log" 2>&1 &
    fpids+=($!)
  done
  for id in $(seq 1 "$n"); do
    if ! wait "${fpids[$((id - 1))]}"; then
      show_log_tail "$(node_dir "$id")/storage.log"
      die "StorageTool format failed for node $id"
    fi
  done

  # The nodes start together: none is ready before the quorum has a leader.
  local t0=$SECONDS
  local -a waits=()
  for id in $(seq 1 "$n"); do
    launch_node "$id"
    waits+=("$id:0")
  done
  wait_nodes "${waits[@]}"
  echo "$bootstrap" >"$RUN/bootstrap"
  log "Kafka $(kafka_version) cluster of $n nodes ready in $((SECONDS - t0)) s (nodes in $RUN/nodes, logs in $RUN/node*/kafka.log)"
  cat "$RUN/bootstrap"
}

pick_ports() { # $1 = count; prints that many distinct free ports
  local -a got=()
  local p tries=0
  while [ ${#got[@]} -lt "$1" ]; do
    p=$(free_port)
    [[ " ${got[*]} " == *" $p "* ]] || got+=("$p")
    tries=$((tries + 1))
    [ "$tries" -lt 1000 ] || die "no $1 distinct free ports found"
  done
  echo "${got[@]}"
}

cluster_serving() { # every node's port answers
  local id addr
  while read -r id addr; do port_open "${addr##*:}" || return 1; done <"$RUN/nodes"
}

cluster_status() {
  local id addr pid all=1 n=0
  while read -r id addr; do
    n=$((n + 1))
    if pid=$(pid_of "$(node_dir "$id")/kafka.pid") && port_open "${addr##*:}"; then
      log "node $id: running (pid $pid, $addr)"
    else
      log "node $id: not running ($addr)"
      all=
    fi
  done <"$RUN/nodes"
  if [ -n "$all" ] && [ -s "$RUN/bootstrap" ]; then
    log "running ($n nodes, kafka $(kafka_version))"
    cat "$RUN/bootstrap"
    return 0
  fi
  log "not running (not every node is up)"
  return 1
}

need_nodes() { # the IDs given are nodes of a cluster in DIR
  [ -f "$RUN/nodes" ] || die "no cluster in $DIR (start one with KAFKA_NODES=3 $PROG start $DIR)"
  [ $# -gt 0 ] || usage
  local id
  for id in "$@"; do
    node_addr "$id" >/dev/null || die "no node $id in $DIR (nodes: $(cut -d' ' -f1 "$RUN/nodes" | paste -sd' '))"
  done
}

cmd_kill_node() {
  need_nodes "$@"
  local id pid
  local -a all=()
  for id in "$@"; do
    if pid=$(pid_of "$(node_dir "$id")/kafka.pid"); then
      kill -KILL "$pid" 2>/dev/null || true
      all+=("node $id:$pid")
    else
      log "node $id: not running"
    fi
  done
  [ ${#all[@]} -gt 0 ] || return 0
  stop_pids 10 "${all[@]}"
  log "killed $(described "${all[@]}")"
}

cmd_stop_node() {
  need_nodes "$@"
  local id pid
  local -a all=()
  for id in "$@"; do
    if pid=$(pid_of "$(node_dir "$id")/kafka.pid"); then
      all+=("node $id:$pid")
    else
      log "node $id: not running"
    fi
  done
  [ ${#all[@]} -gt 0 ] || return 0
  stop_pids 20 "${all[@]}"
  log "stopped $(described "${all[@]}")"
}

cmd_start_node() {
  need_nodes "$@"
  have_jars || die "no Kafka jars in $LIB; run: $PROG fetch $DIR"
  command -v "$JAVA" >/dev/null || die "java not found (set JAVA=...)"
  local id pid
  local -a waits=()
  for id in "$@"; do
    if pid=$(pid_of "$(node_dir "$id")/kafka.pid"); then
      log "node $id: already running (pid $pid)"
      continue
    fi
    waits+=("$id:$(started_count "$(node_dir "$id")/kafka.log")")
    launch_node "$id"
  done
  [ ${#waits[@]} -gt 0 ] || return 0
  local t0=$SECONDS
  wait_nodes "${waits[@]}"
  for id in "$@"; do
    log "node $id: running (pid $(cat "$(node_dir "$id")/kafka.pid"), $(node_addr "$id")), started in $((SECONDS - t0)) s"
  done
}

case $CMD in
  fetch) cmd_fetch ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  kill-node) cmd_kill_node "${IDS[@]}" ;;
  stop-node) cmd_stop_node "${IDS[@]}" ;;
  start-node) cmd_start_node "${IDS[@]}" ;;
  *) usage ;;
esac
