#!/usr/bin/env bash
# Start a local Ray head for trying the cluster path on one machine. The dashboard binds to
# 127.0.0.1 (never 0.0.0.0); token authentication stays on, so client shells need
# RAY_AUTH_MODE=token (set below for this shell's `ray status`).
#   bash cluster/start_local_head.sh [NUM_CPUS]
#   RAY_AUTH_MODE=token ray job submit --address http://127.0.0.1:8265 --working-dir . -- \
#       python -m jobs.frontier --config jobs/configs/smoke.yaml
#   ray stop
set -euo pipefail
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=token
ray start --head --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 --num-cpus="${1:-$(nproc)}" --disable-usage-stats
ray status
