#!/usr/bin/env bash
# Throw-away PostgreSQL cluster with logical decoding, on 127.0.0.1, no containers.
#
#   deploy/local/postgres.sh start  DIR PORT          # initdb if needed, start, wait, print DSN
#   deploy/local/postgres.sh stop   DIR PORT [MODE]   # pg_ctl stop -m MODE (default fast)
#   deploy/local/postgres.sh status DIR PORT          # exit 0 when accepting connections
#
# DIR is the data directory and also the Unix socket directory, so keep its path short
# (the socket path DIR/.s.PGSQL.PORT must stay under 107 bytes).
# Binaries: $PG_BINDIR, else /usr/lib/postgresql/15/bin, else `pg_config --bindir`.
# PostgreSQL refuses to run as root: as root, DIR is chowned to the `postgres` OS user
# (created with useradd --system when missing) and initdb/pg_ctl run via runuser.
# See deploy/README.md for the settings and what was verified.
set -euo pipefail

PROG=$(basename "$0")
die() { echo "$PROG: ERROR: $*" >&2; exit 1; }
log() { echo "$PROG: $*" >&2; }
usage() {
  echo "usage: $PROG start|stop|status DIR PORT [stop-mode: smart|fast|immediate]" >&2
  exit 2
}

[ $# -ge 3 ] || usage
CMD=$1
DIR_ARG=$2
PORT=$3
MODE=${4:-fast}
if ! [[ $PORT =~ ^[0-9]+$ ]] || [ "$PORT" -lt 1 ] || [ "$PORT" -gt 65535 ]; then
  die "bad PORT: $PORT"
fi
case $MODE in smart|fast|immediate) ;; *) die "bad stop mode: $MODE (smart|fast|immediate)" ;; esac

# ---------------------------------------------------------------- binaries
find_bindir() {
  if [ -n "${PG_BINDIR:-}" ]; then
    [ -x "$PG_BINDIR/postgres" ] || die "PG_BINDIR=$PG_BINDIR has no postgres binary"
    echo "$PG_BINDIR"; return
  fi
  if [ -x /usr/lib/postgresql/15/bin/postgres ]; then
    echo /usr/lib/postgresql/15/bin; return
  fi
  if command -v pg_config >/dev/null 2>&1; then
    local d
    d=$(pg_config --bindir)
    if [ -x "$d/postgres" ]; then echo "$d"; return; fi
  fi
  die "PostgreSQL server binaries not found (install Debian package postgresql-15, or set PG_BINDIR)"
}
BINDIR=$(find_bindir)

# ---------------------------------------------------------------- user handling
AS_ROOT=
[ "$(id -u)" = 0 ] && AS_ROOT=1

ensure_pg_user() {
  if ! getent passwd postgres >/dev/null; then
    log "creating system user postgres"
    useradd --system --user-group --home-dir /var/lib/postgresql --no-create-home \
      --shell /bin/bash postgres || die "useradd postgres failed"
  fi
}

# run a command as the cluster owner (postgres when we are root, else ourselves)
as_owner() {
  if [ -n "$AS_ROOT" ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    "$@"
  fi
}

# make every ancestor of DIR traversable (o+x) for postgres, when we are root
make_traversable() {
  local d=$1 p
  p=$(dirname "$d")
  while [ "$p" != / ]; do
    if ! runuser -u postgres -- test -x "$p" 2>/dev/null; then
      log "making $p traversable for postgres (chmod o+x)"
      chmod o+x "$p" || die "cannot chmod o+x $p; choose a DIR that postgres can reach"
    fi
    p=$(dirname "$p")
  done
}

if [ -n "$AS_ROOT" ]; then
  ensure_pg_user
fi

DIR=$(realpath -m -- "$DIR_ARG")
SOCK="$DIR/.s.PGSQL.$PORT"
[ ${#SOCK} -le 107 ] || die "socket path $SOCK is ${#SOCK} bytes; Unix sockets allow 107. Use a shorter DIR"
[ "$CMD" = start ] && { mkdir -p "$DIR" || die "cannot create $DIR"; }
LOGFILE=$DIR/postgres.log
DSN="postgres://postgres@127.0.0.1:$PORT/postgres?sslmode=disable"

show_log_tail() {
  if [ -s "$LOGFILE" ]; then
    echo "----- last 40 lines of $LOGFILE -----" >&2
    tail -n 40 "$LOGFILE" >&2
    echo "----- end of $LOGFILE -----" >&2
  fi
}
fail() { show_log_tail; die "$*"; }

TMPLOG=$(mktemp)
trap 'rm -f "$TMPLOG"' EXIT

is_running() { as_owner "$BINDIR/pg_ctl" -D "$DIR" status >/dev/null 2>&1; }
is_ready() { "$BINDIR/pg_isready" -q -h 127.0.0.1 -p "$PORT" -U postgres -d postgres >/dev/null 2>&1; }

# ---------------------------------------------------------------- commands
cmd_start() {
  if [ -n "$AS_ROOT" ]; then
    make_traversable "$DIR"
    chown -R postgres:postgres "$DIR" || die "chown postgres $DIR failed"
  fi

  if is_running; then
    if is_ready; then
      log "already running in $DIR on port $PORT"
      echo "$DSN"
      return 0
    fi
    die "a server is running in $DIR but not answering on 127.0.0.1:$PORT (another port?); stop it first"
  fi

  if [ ! -f "$DIR/PG_VERSION" ]; then
    if [ -n "$(ls -A "$DIR")" ]; then
      die "$DIR is not empty and holds no cluster (no PG_VERSION); refusing to initdb into it"
    fi
    log "initdb in $DIR ($("$BINDIR/postgres" --version))"
    if ! as_owner "$BINDIR/initdb" -D "$DIR" -U postgres --auth=trust \
          --encoding=UTF8 --no-locale >"$TMPLOG" 2>&1; then
      cat "$TMPLOG" >&2 || true
      die "initdb failed"
    fi
  fi

  # Settings live in their own file, rewritten on each start, included by postgresql.conf.
  local inc=tributary.conf
  cat >"$DIR/$inc" <<EOF
# Written by deploy/local/postgres.sh on each start; included from postgresql.conf.
listen_addresses = '127.0.0.1'
port = $PORT
unix_socket_directories = '$DIR'
wal_level = logical
max_replication_slots = 20
max_wal_senders = 20
track_commit_timestamp = on
EOF
  grep -qxF "include_if_exists = '$inc'" "$DIR/postgresql.conf" ||
    printf "\n# deploy/local/postgres.sh\ninclude_if_exists = '%s'\n" "$inc" >>"$DIR/postgresql.conf"
  [ -n "$AS_ROOT" ] && chown postgres:postgres "$DIR/$inc" "$DIR/postgresql.conf"

  # pg_ctl -w waits for the server itself; pg_isready below confirms the TCP listener.
  if ! as_owner "$BINDIR/pg_ctl" -D "$DIR" -l "$LOGFILE" -w -t 60 start >/dev/null 2>"$TMPLOG"; then
    cat "$TMPLOG" >&2 || true
    fail "pg_ctl start failed for $DIR on port $PORT"
  fi
  for _ in $(seq 1 120); do
    is_ready && break
    sleep 0.5
  done
  is_ready || fail "server in $DIR did not accept connections on 127.0.0.1:$PORT within 60 s"
  # Check that the settings really took effect.
  local wl
  wl=$("$BINDIR/psql" -X -qAt -h 127.0.0.1 -p "$PORT" -U postgres -d postgres -c 'show wal_level' 2>&1) ||
    fail "psql failed: $wl"
  [ "$wl" = logical ] || fail "wal_level is '$wl', expected logical (postgresql.auto.conf overriding?)"
  log "started in $DIR on 127.0.0.1:$PORT (log $LOGFILE)"
  echo "$DSN"
}

cmd_stop() {
  if [ ! -f "$DIR/PG_VERSION" ]; then
    log "no cluster in $DIR"
    return 0
  fi
  if ! is_running; then
    log "not running ($DIR)"
    return 0
  fi
  if ! as_owner "$BINDIR/pg_ctl" -D "$DIR" -m "$MODE" -w -t 60 stop >/dev/null 2>"$TMPLOG"; then
    cat "$TMPLOG" >&2 || true
    fail "pg_ctl stop -m $MODE failed for $DIR"
  fi
  log "stopped ($DIR, mode $MODE)"
}

cmd_status() {
  if is_running && is_ready; then
    log "running in $DIR, accepting connections on 127.0.0.1:$PORT"
    echo "$DSN"
    return 0
  fi
  if is_running; then
    log "running in $DIR but not accepting connections on 127.0.0.1:$PORT"
    return 1
  fi
  log "not running ($DIR)"
  return 3
}

case $CMD in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) usage ;;
esac
