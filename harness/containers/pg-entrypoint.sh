#!/bin/sh
# The Postgres image's entrypoint: a throwaway cluster (in the container's own filesystem, no volume) on
# 127.0.0.1:$PGPORT with logical decoding, the superuser's password from $POSTGRES_PASSWORD (environment,
# never argv), then PostgreSQL in the foreground as PID 1 (docker stop's SIGTERM is its smart shutdown).
# "database system is ready to accept connections" in its log is what the harness's wait strategy waits for.
set -eu
: "${PGPORT:=5432}" "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is not set}"
DATA=/var/lib/postgresql/zora
mkdir -p "$DATA" && chown postgres:postgres "$DATA"
umask 077
PW=/tmp/zora-pw
printf '%s' "$POSTGRES_PASSWORD" > "$PW" && chown postgres "$PW"
unset POSTGRES_PASSWORD
AS_PG="setpriv --reuid=postgres --regid=postgres --init-groups"
$AS_PG initdb -D "$DATA" -U postgres --auth=scram-sha-256 --pwfile="$PW" -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
rm -f "$PW"
# some Debian builds load only the logical decoding output plugins named here
EXTRA=""
if $AS_PG postgres --describe-config 2>/dev/null | grep -q "^output_plugin_libraries"; then
  EXTRA="-c output_plugin_libraries=wal2json"
fi
exec $AS_PG postgres -D "$DATA" -p "$PGPORT" -c listen_addresses=127.0.0.1 -c unix_socket_directories=/tmp \
  -c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20 \
  -c max_connections=300 -c track_commit_timestamp=on -c timezone=UTC \
  -c fsync=off -c full_page_writes=off $EXTRA
