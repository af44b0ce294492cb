#!/usr/bin/env bash
# Single-node Apache Kafka (KRaft) on loopback, from Maven Central jars, no containers.
#
#   deploy/local/kafka.sh fetch  DIR   # jars into DIR/lib (cached; needs mvn + Maven Central)
#   deploy/local/kafka.sh start  DIR   # fresh storage, broker on a free 127.0.0.1 port;
#                                      # writes and prints DIR/run/bootstrap (127.0.0.1:PORT)
#   deploy/local/kafka.sh stop   DIR   # TERM, up to 20 s, then KILL; logs stay in DIR/run
#   deploy/local/kafka.sh status DIR   # exit 0 and print bootstrap when running
#
# Environment:
#   KAFKA_VERSION        version of org.apache.kafka:kafka_2.13 (default: 3.9.1, and
#                        4.1.0 as a fallback when 3.9.1 cannot be fetched)
#   KAFKA_HEAP           JVM heap flags (default: -Xmx512m -Xms256m)
#   KAFKA_START_TIMEOUT  seconds to wait for the broker (default: 90)
#   JAVA                 java binary (default: java on PATH)
#   KAFKA_PROXIED_LISTENER  off when empty. "1" (or HOST:PORT) adds a second listener,
#                        PROXIED, on a free 127.0.0.1 port, advertised at a free port
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
KAFKA_HEAP=${KAFKA_HEAP:--Xmx512m -Xms256m}
KAFKA_START_TIMEOUT=${KAFKA_START_TIMEOUT:-90}

die() { echo "$PROG: ERROR: $*" >&2; exit 1; }
log() { echo "$PROG: $*" >&2; }

usage() {
  echo "usage: $PROG fetch|start|stop|status DIR" >&2
  exit 2
}

[ $# -ge 2 ] || usage
CMD=$1
mkdir -p "$2"
DIR=$(cd "$2" && pwd -P)
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

running_pid() { # prints pid and returns 0 when the broker from this DIR is alive
  [ -f "$PIDFILE" ] || return 1
  local pid
  pid=$(cat "$PIDFILE" 2>/dev/null) || return 1
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  echo "$pid"
}

java_cmd() { # common JVM flags
  local v
  v=$(kafka_version)
  read -r -a JAVA_ARGS <<<"$KAFKA_HEAP"
  JAVA_ARGS+=(-XX:+UseG1GC -Djava.awt.headless=true -Dkafka.logs.dir="$RUN")
  case $v in
    3.*) JAVA_ARGS+=(-Dlog4j.configuration="file:$CONF/log4j.properties") ;;
    *)   JAVA_ARGS+=(-Dlog4j2.configurationFile="$CONF/log4j2.properties") ;;
  esac
  JAVA_ARGS+=(-cp "$LIB/*")
}

cmd_start() {
  have_jars || die "no Kafka jars in $LIB; run: $PROG fetch $DIR"
  command -v "$JAVA" >/dev/null || die "java not found (set JAVA=...)"
  local pid
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

  java_cmd
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
    if port_open "$port" && grep -qE 'Kafka Server started|\] started \(kafka\.server' "$LOGFILE"; then
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

cmd_stop() {
  local pid
  if ! pid=$(running_pid); then
    log "not running"
    rm -f "$PIDFILE"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 40); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    log "pid $pid still alive after 20 s, sending KILL"
    kill -KILL "$pid" 2>/dev/null || true
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
  fi
  rm -f "$PIDFILE"
  log "stopped (pid $pid); logs kept in $RUN"
}

cmd_status() {
  local pid
  if pid=$(running_pid) && [ -s "$RUN/bootstrap" ] && port_open "$(cut -d: -f2 "$RUN/bootstrap")"; then
    log "running (pid $pid, kafka $(kafka_version))"
    cat "$RUN/bootstrap"
    return 0
  fi
  log "not running"
  return 1
}

case $CMD in
  fetch) cmd_fetch ;;
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) usage ;;
esac
