#!/usr/bin/env bash
# Start gservers async backends in the background: ports 9002-9005 by default,
# or the ports given as arguments.  Each gets a PID file and a log file under
# $RUN_DIR (default ./run).  Stop them with scripts/stopserver.sh.
#
#   scripts/runserver.sh              # 9002 9003 9004 9005
#   scripts/runserver.sh 9100 9101    # other ports
#   MODEL=thread scripts/runserver.sh 9006
#   EXTRA_ARGS="--log-level warning" scripts/runserver.sh
set -euo pipefail

. "$(dirname "$0")/env.sh"
gs_python ""
cd "$GS_ROOT"
RUN_DIR=${RUN_DIR:-run}
MODEL=${MODEL:-async}
ports=("$@")
[ ${#ports[@]} -gt 0 ] || ports=(9002 9003 9004 9005)

mkdir -p "$RUN_DIR"
status=0
for port in "${ports[@]}"; do
  if ! [[ "$port" =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
    echo "runserver: '$port' is not a port number (1-65535)" >&2
    status=2; continue
  fi
  pidfile="$RUN_DIR/backend-$port.pid"
  logfile="$RUN_DIR/backend-$port.log"
  if [ -f "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "runserver: a backend started here already runs on port $port (pid $(cat "$pidfile"))" >&2
    status=2; continue
  fi
  # shellcheck disable=SC2086
  "$PY" -m gservers.backend --model "$MODEL" ${EXTRA_ARGS:-} "$port" >"$logfile" 2>&1 &
  pid=$!
  # Wait for the listening line, or for the process to give up (busy port...).
  for _ in $(seq 1 100); do
    if grep -q "listening on" "$logfile" 2>/dev/null; then break; fi
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    sleep 0.1
  done
  if grep -q "listening on" "$logfile" 2>/dev/null; then
    echo "$pid" >"$pidfile"
    echo "runserver: $MODEL backend on 127.0.0.1:$port (pid $pid, log $logfile)"
  else
    kill "$pid" 2>/dev/null || true
    echo "runserver: backend on port $port did not start: $(tail -n 1 "$logfile")" >&2
    status=2
  fi
done
exit $status
