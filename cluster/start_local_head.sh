#!/usr/bin/env bash
# Start a local Ray head for trying the cluster path on one machine. The dashboard (and the Jobs
# API on its port) binds to 127.0.0.1, never 0.0.0.0; token authentication stays on, so client
# shells need RAY_AUTH_MODE=token (the token is in ~/.ray/auth_token).
#   bash cluster/start_local_head.sh [NUM_CPUS] [more `ray start` options, e.g. --port=6390 --dashboard-port=8266]
#   export RAY_AUTH_MODE=token
#   ray job submit --address http://127.0.0.1:8265 --working-dir . --runtime-env cluster/runtime_env.yaml -- \
#       python -m jobs.frontier --config jobs/configs/smoke.yaml --run-dir /tmp/runs/smoke
#   ray stop
# Secrets (WANDB_API_KEY) belong in this shell's environment before `ray start` (workers inherit
# it), never in a runtime_env: Ray writes a job's runtime_env, env_vars included, to its logs.
set -euo pipefail
export RAY_USAGE_STATS_ENABLED=0 RAY_AUTH_MODE=token
ray start --head --node-ip-address=127.0.0.1 --dashboard-host=127.0.0.1 --num-cpus="${1:-$(nproc)}" \
    --disable-usage-stats "${@:2}"
