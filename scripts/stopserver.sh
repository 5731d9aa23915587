#!/usr/bin/env bash
# Stop the backends that scripts/runserver.sh started: exactly the PIDs in
# $RUN_DIR/backend-*.pid (default ./run), or only those for the ports given.
# A PID is signalled only if it still runs gservers.backend.
set -euo pipefail

cd "$(dirname "$0")/.."
RUN_DIR=${RUN_DIR:-run}
if [ $# -gt 0 ]; then
  files=(); for port in "$@"; do files+=("$RUN_DIR/backend-$port.pid"); done
else
  shopt -s nullglob; files=("$RUN_DIR"/backend-*.pid)
fi
[ ${#files[@]} -gt 0 ] || { echo "stopserver: no backends recorded in $RUN_DIR"; exit 0; }

for pidfile in "${files[@]}"; do
  [ -f "$pidfile" ] || { echo "stopserver: no $pidfile" >&2; continue; }
  pid=$(cat "$pidfile")
  if kill -0 "$pid" 2>/dev/null && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q "gservers.backend"; then
    kill -TERM "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "stopserver: pid $pid did not stop in 15 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
    echo "stopserver: stopped pid $pid ($(basename "$pidfile" .pid))"
  else
    echo "stopserver: pid $pid from $pidfile is not running; removing the stale file"
  fi
  rm -f "$pidfile"
done
