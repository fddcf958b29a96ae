# Sourced by the benchmark scripts: starts a throwaway PostgreSQL server on this machine (stopped
# and removed on exit) and defines PSQL (an array), PORT and PGBIN.
PGBIN="$(pg_config --bindir 2>/dev/null || true)"
[ -x "$PGBIN/initdb" ] || PGBIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
[ -x "$PGBIN/initdb" ] || { echo "no PostgreSQL server binaries: apt-get install -y postgresql" >&2; exit 1; }
PGDIR="$(mktemp -d /tmp/kalla-bench-pg.XXXXXX)"
chmod 755 "$PGDIR"
PORT="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
AS=()
if [ "$(id -u)" = 0 ]; then chown -R postgres:postgres "$PGDIR"; AS=(runuser -u postgres --); fi
"${AS[@]}" "$PGBIN/initdb" -D "$PGDIR/data" -U kalla --auth=trust -E UTF8 --no-locale >/dev/null
"${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w \
  -o "-p $PORT -k $PGDIR -c listen_addresses=127.0.0.1 -c shared_buffers=1GB" start >/dev/null
trap '"${AS[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -m fast -w stop >/dev/null 2>&1 || true; rm -rf "$PGDIR"' EXIT
PSQL=("$PGBIN/psql" -X -q -A -t -h 127.0.0.1 -p "$PORT" -U kalla -d postgres -v ON_ERROR_STOP=1)
