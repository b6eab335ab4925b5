#!/usr/bin/env bash
# A throwaway PostgreSQL 15 + pgvector 0.8 on 127.0.0.1 for qstore's tests (facts: shared/reference/storage.md §3).
#   eval "$(.ci/postgres.sh start)"   # installs what is missing (root), starts a cluster, prints `export` lines
#   .ci/postgres.sh restart           # fast restart of that cluster (the mid-load restart test uses it)
#   .ci/postgres.sh stop              # stops it and deletes its directory
# start prints QSTORE_TEST_PG_URL (what the tests read), QSTORE_PG_DIR (the cluster) and QSTORE_TEST_PG_RESTART.
# Postgres refuses to run as root, so as root the server runs as Debian's `postgres` user; otherwise as you.
set -euo pipefail
PG_BIN=/usr/lib/postgresql/15/bin
PG_SHARE=/usr/share/postgresql/15
HERE=$(cd "$(dirname "$0")" && pwd)
log() { echo "postgres.sh: $*" >&2; }
as_pg() { if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi; }  # from /: postgres may not enter the cwd
quiet() { local out; out=$("$@" 2>&1) || { log "FAILED: $*"; echo "$out" >&2; return 1; }; }  # output on failure

install_postgres() {
  [ -x "$PG_BIN/initdb" ] && return
  [ "$(id -u)" = 0 ] || { log "PostgreSQL 15 is missing; as root: apt-get install postgresql-15"; exit 1; }
  log "installing postgresql-15 (apt)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 > /dev/null
}

install_pgvector() {  # Debian builds pgvector 0.8 only for PG 17 (trixie); its source builds against 15 with PGXS
  [ -f "$PG_SHARE/extension/vector.control" ] && return
  [ "$(id -u)" = 0 ] || { log "pgvector is missing; run this script once as root to build it"; exit 1; }
  log "building pgvector from Debian's trixie source package"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    postgresql-server-dev-15 dpkg-dev make gcc > /dev/null
  local work apt uri opts
  work=$(mktemp -d)
  apt=$work/apt
  mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$work/src"
  uri=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources)  # the machine's own Debian mirror
  echo "deb-src $uri trixie main" > "$apt/sources.list"  # a private source list: the system's stays untouched
  opts=(-o APT::Sandbox::User=root -o "Dir::Etc::SourceList=$apt/sources.list" -o Dir::Etc::SourceParts=/dev/null
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
  apt-get "${opts[@]}" update -qq
  (cd "$work/src" && quiet apt-get "${opts[@]}" source -qq pgvector)
  (cd "$work"/src/pgvector-*/ \
    && quiet make -j2 PG_CONFIG="$PG_BIN/pg_config" OPTFLAGS="" with_llvm=no \
    && quiet make install PG_CONFIG="$PG_BIN/pg_config" with_llvm=no)
  rm -rf "$work"
}

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

start() {
  install_postgres
  install_pgvector
  local dir port
  dir=$(mktemp -d -t qstore-pg.XXXXXX)
  port=$(free_port)
  [ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
  quiet as_pg "$PG_BIN/initdb" -D "$dir/data" -U postgres --auth=trust -E UTF8 --no-locale --no-sync
  # fsync off: a test cluster is thrown away; every test still sees committed data from other connections
  echo "-h 127.0.0.1 -p $port -k $dir -c fsync=off -c full_page_writes=off -c max_connections=200" > "$dir/options"
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -o "$(cat "$dir/options")" start > /dev/null \
    || { cat "$dir/server.log" >&2; exit 1; }
  "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -qAtc 'CREATE EXTENSION IF NOT EXISTS vector' postgres
  log "PostgreSQL $("$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -Atc 'SHOW server_version' postgres)" \
      "+ pgvector $("$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U postgres -Atc \
      "SELECT extversion FROM pg_extension WHERE extname='vector'" postgres) on 127.0.0.1:$port ($dir)"
  echo "export QSTORE_PG_DIR=$dir"
  echo "export QSTORE_TEST_PG_URL=postgresql://postgres@127.0.0.1:$port/postgres"
  echo "export QSTORE_TEST_PG_RESTART='$HERE/postgres.sh restart'"
}

cluster_dir() {
  local dir=${1:-${QSTORE_PG_DIR:-}}
  [ -n "$dir" ] && [ -d "$dir/data" ] || { log "no cluster: pass its directory or set QSTORE_PG_DIR"; exit 1; }
  echo "$dir"
}

restart() {
  local dir
  dir=$(cluster_dir "${1:-}")
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -m fast -o "$(cat "$dir/options")" restart > /dev/null
}

stop() {
  local dir
  dir=$(cluster_dir "${1:-}")
  as_pg "$PG_BIN/pg_ctl" -D "$dir/data" -w -m fast stop > /dev/null || true
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  restart) restart "${2:-}" ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start | restart [DIR] | stop [DIR]" >&2; exit 2 ;;
esac
