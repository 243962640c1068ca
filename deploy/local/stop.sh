#!/usr/bin/env bash
# `make stop`: stop the workers and the server that deploy/local/serve.sh started, with their children
# (each was started in its own process group).
set -uo pipefail
cd "$(dirname "$0")/../.."
RUN=$(realpath -m "${EMBEDLINE_SERVE_DIR:-.embedline/serve}")
shopt -s nullglob
pids=()
for pidfile in "$RUN"/worker-*.pid "$RUN"/server.pid; do
  [ -f "$pidfile" ] || continue
  pid=$(cat "$pidfile")
  rm -f "$pidfile"
  kill -0 "$pid" 2>/dev/null || continue
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null
  pids+=("$pid")
  echo "stopping $(basename "$pidfile" .pid) (pid $pid)"
done
for _ in $(seq 6); do
  alive=0
  for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
  [ "$alive" = 0 ] && exit 0
  sleep 0.5
done
for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
