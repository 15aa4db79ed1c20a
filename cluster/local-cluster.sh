#!/usr/bin/env bash
# Start a Dask scheduler and N worker processes on this host (127.0.0.1 by default), the
# way a multi-host cluster is started by hand: run the scheduler line on one host and the
# worker line on every other host with --host set to that host's address.
#
#   cluster/local-cluster.sh [N_WORKERS] [PORT]        # Ctrl-C stops everything
#   dsketch fit --scheduler tcp://127.0.0.1:PORT ...   # in another shell
#
# Environment: DSKETCH_HOST (bind address, default 127.0.0.1), DSKETCH_DASHBOARD_PORT
# (default 8787), DSKETCH_TLS_DIR (a directory made by cluster/make_certs.py: the cluster
# then speaks tls:// with mutual certificates; see cluster/tls.md).
set -euo pipefail
n_workers=${1:-2}
port=${2:-8786}
host=${DSKETCH_HOST:-127.0.0.1}
dashboard_port=${DSKETCH_DASHBOARD_PORT:-8787}
protocol=tcp
sched_tls=()
worker_tls=()
if [[ -n "${DSKETCH_TLS_DIR:-}" ]]; then
  protocol=tls
  sched_tls=(--tls-ca-file "$DSKETCH_TLS_DIR/ca.pem" --tls-cert "$DSKETCH_TLS_DIR/scheduler.pem"
             --tls-key "$DSKETCH_TLS_DIR/scheduler-key.pem")
  worker_tls=(--tls-ca-file "$DSKETCH_TLS_DIR/ca.pem" --tls-cert "$DSKETCH_TLS_DIR/worker.pem"
              --tls-key "$DSKETCH_TLS_DIR/worker-key.pem")
fi
dask scheduler --protocol "$protocol" --host "$host" --port "$port" \
  --dashboard-address "$host:$dashboard_port" "${sched_tls[@]}" &
sched=$!
workers=()
trap 'kill ${workers[*]:-} 2>/dev/null; wait ${workers[*]:-} 2>/dev/null; kill $sched 2>/dev/null; wait' EXIT INT TERM
sleep 2
for _ in $(seq "$n_workers"); do
  dask worker "$protocol://$host:$port" --host "$host" --nthreads 1 --no-dashboard "${worker_tls[@]}" &
  workers+=($!)
done
echo "scheduler: $protocol://$host:$port  ($n_workers workers); dashboard: http://$host:$dashboard_port/status"
wait
