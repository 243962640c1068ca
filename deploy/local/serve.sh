#!/usr/bin/env bash
# `make serve`: a real Prefect server (SQLite) with its UI, the `cpu` and `gpu` work pools, the `gpu`
# tag concurrency limit, every deployment of prefect.yaml (`prefect deploy --all`), and workers.
# `make stop` (deploy/local/stop.sh) stops everything this started. Settings (environment):
#   PREFECT_PORT (4200)  EMBEDLINE_SERVE_DIR (.embedline/serve: pids, logs, Prefect's SQLite)
#   GPU_WORKERS (one per GPU that nvidia-smi lists, else 1)  CPU_WORKERS (1)  EMBEDLINE_HOME (.embedline)
#   WORKER_THREADS (no GPUs: torch threads per gpu-pool worker; default cores / GPU_WORKERS)
set -euo pipefail
umask 077  # the server's database, logs and everything the workers write are the owner's alone
cd "$(dirname "$0")/../.."
BIN=${VENV:-.venv}/bin
HOST=127.0.0.1
PORT=${PREFECT_PORT:-4200}
RUN=$(realpath -m "${EMBEDLINE_SERVE_DIR:-.embedline/serve}")
GPUS=$(nvidia-smi -L 2>/dev/null | wc -l || true)
GPU_WORKERS=${GPU_WORKERS:-$(( GPUS > 0 ? GPUS : 1 ))}
CPU_WORKERS=${CPU_WORKERS:-1}
mkdir -p "$RUN"
export PREFECT_HOME=$RUN/prefect
export PREFECT_API_URL=http://$HOST:$PORT/api
export PREFECT_UI_API_URL=$PREFECT_API_URL
export PREFECT_SERVER_ANALYTICS_ENABLED=false DO_NOT_TRACK=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export EMBEDLINE_HOME=$(realpath -m "${EMBEDLINE_HOME:-.embedline}")

if [ -s "$RUN/server.pid" ] && kill -0 "$(cat "$RUN/server.pid")" 2>/dev/null; then
  echo "already serving (pid $(cat "$RUN/server.pid")): \`make stop\` first"; exit 1
fi

start() {  # name, command...: detached in its own process group, pid and log under $RUN
  local name=$1; shift
  setsid "$@" >"$RUN/$name.log" 2>&1 < /dev/null &
  echo $! >"$RUN/$name.pid"
}

start server "$BIN/prefect" server start --host "$HOST" --port "$PORT"
for _ in $(seq 180); do
  curl -fs "$PREFECT_API_URL/health" >/dev/null 2>&1 && break
  kill -0 "$(cat "$RUN/server.pid")" 2>/dev/null || { cat "$RUN/server.log"; echo "server exited"; exit 1; }
  sleep 1
done
curl -fs "$PREFECT_API_URL/health" >/dev/null || { echo "server not healthy after 180 s: $RUN/server.log"; exit 1; }

"$BIN/prefect" --no-prompt work-pool create cpu --type process --overwrite >/dev/null
"$BIN/prefect" --no-prompt work-pool create gpu --type process --overwrite >/dev/null
# Embedding tasks carry the `gpu` tag: at most one per GPU at a time, whichever flow runs them.
"$BIN/prefect" --no-prompt concurrency-limit create gpu "$GPU_WORKERS" >/dev/null
"$BIN/prefect" --no-prompt deploy --all > "$RUN/deploy.log" 2>&1 || { cat "$RUN/deploy.log"; exit 1; }

for i in $(seq 1 "$CPU_WORKERS"); do
  start "worker-cpu-$i" "$BIN/prefect" worker start --pool cpu --name "cpu-$i"
done
# One worker per GPU, one flow run at a time, each seeing only its own GPU. Without GPUs the workers
# split the CPU cores between them instead.
CORES=$(nproc)
for i in $(seq 0 $(( GPU_WORKERS - 1 ))); do
  THREADS=${WORKER_THREADS:-$(( CORES / GPU_WORKERS > 0 ? CORES / GPU_WORKERS : 1 ))}
  if [ "$GPUS" -gt 0 ]; then export CUDA_VISIBLE_DEVICES=$i; else export OMP_NUM_THREADS=$THREADS; fi
  start "worker-gpu-$i" "$BIN/prefect" worker start --pool gpu --name "gpu-$i" --limit 1
done
unset CUDA_VISIBLE_DEVICES OMP_NUM_THREADS

# Runs dispatch shards only to a pool with online workers (else they embed in the parent): return once
# every gpu worker has sent its first heartbeat.
for _ in $(seq 120); do
  online=$(curl -fs -X POST -H 'Content-Type: application/json' -d '{}' \
    "$PREFECT_API_URL/work_pools/gpu/workers/filter" | grep -o '"status":"ONLINE"' | wc -l || true)
  [ "$online" -ge "$GPU_WORKERS" ] && break
  sleep 1
done
[ "$online" -ge "$GPU_WORKERS" ] || echo "warning: only $online of $GPU_WORKERS gpu workers online after 120 s"

echo "Prefect UI: http://$HOST:$PORT   (API $PREFECT_API_URL)"
echo "open without a credential, on $HOST only: anyone with a shell on this machine can reach it;"
echo "  to share it, use deploy/compose (PREFECT_SERVER_API_AUTH_STRING) instead of another --host"
echo "workers: $CPU_WORKERS on pool cpu, $GPU_WORKERS on pool gpu; logs and pids in $RUN"
echo "run one now: PREFECT_API_URL=$PREFECT_API_URL $BIN/prefect deployment run ingest-corpus/ingest-debian"
echo "stop all: make stop"
