#!/usr/bin/env bash
# Start a Dask scheduler and N worker processes on this host (127.0.0.1 by default), the
# way a multi-host cluster is started by hand: run the scheduler line on one host and the
# worker line on every other host with --host set to that host's address.
#
#   cluster/local-cluster.sh [N_WORKERS] [PORT]        # Ctrl-C stops everything
#   dsketch fit --scheduler tcp://127.0.0.1:PORT ...   # in another shell
set -euo pipefail
n_workers=${1:-2}
port=${2:-8786}
host=${DSKETCH_HOST:-127.0.0.1}
dask scheduler --host "$host" --port "$port" --dashboard-address "$host:0" &
sched=$!
trap 'kill $sched ${workers[*]:-} 2>/dev/null; wait' EXIT INT TERM
sleep 2
workers=()
for _ in $(seq "$n_workers"); do
  dask worker "tcp://$host:$port" --host "$host" --nthreads 1 --no-dashboard &
  workers+=($!)
done
echo "scheduler: tcp://$host:$port  ($n_workers workers); dashboard: see the scheduler log"
wait
