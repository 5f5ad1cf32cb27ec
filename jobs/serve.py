"""``python -m jobs.serve --run-dir RUN [--port PORT]``: a finished run's reward models over HTTP.

Serves every proxy the run trained (as its RL runs scored with them: the same normalization) and
its gold members, on Ray Serve, at http://127.0.0.1:PORT (default 8000):

  POST /v1/score   {"prompts": [...], "responses": [...], "models": [names, optional],
                    "aggregate": "mean" | "wco" | "uwo"}  -> each model's scores and the aggregate
  GET  /v1/models  name, role, parameters, calibration, normalization of each model
  GET  /healthz

The scores equal the run's own bit for bit (same device and dtype). Settings: the run's
``cluster.serve`` section (``orchestrator/config/serve.py``), changed with ``cluster.*`` overrides,
e.g. ``cluster.serve.max_queued_requests=16 'cluster.serve.models={"*": {replicas: 2}}'``. Binding
anywhere but loopback (``cluster.serve.host=0.0.0.0``) needs a token in $RLHF_FRONTIER_SERVE_TOKEN.
Ctrl-C stops it. Also ``serve run orchestrator.run.rm_server:app run_dir=RUN``.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import socket
import sys
import time

from orchestrator.run.cli import (
    ConfigError,
    absolute,
    init_ray,
    setup_logging,
    user_error,
)

log = logging.getLogger("jobs.serve")


def _port_free(host: str, port: int) -> bool:
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(fam, socket.SOCK_STREAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.serve", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="overrides: cluster.* keys as key.sub=value, "
                                       "e.g. cluster.serve.max_batch_rows=32")
    p.add_argument("--run-dir", required=True, help="a finished run of python -m jobs.frontier")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default: cluster.serve.port, 8000)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    p.add_argument("overrides", nargs="*", metavar="cluster.key=value", help="serving overrides")
    args = p.parse_args(argv)
    from orchestrator.run.rm_server import service_config

    run_dir = absolute(args.run_dir)
    overrides = list(args.overrides) + ([f"cluster.serve.port={args.port}"] if args.port is not None else [])
    try:
        man, cfg, token = service_config(str(run_dir), overrides)
    except ConfigError as e:
        user_error(str(e))
    s = cfg.cluster.serve
    if not _port_free(s.host, s.port):
        user_error(f"--port: {s.port} on {s.host} is in use; pass another --port")
    setup_logging()
    import ray

    from orchestrator.run.rm_server import start, stop

    have = init_ray(cfg.cluster)
    need = {"CPU": s.entry.num_cpus * s.entry.replicas, "GPU": s.entry.num_gpus * s.entry.replicas}
    for e in man["models"]:  # every model's starting replicas must fit, or Serve waits for them forever
        m = s.model(e["name"])
        need["CPU"] += m.num_cpus * m.replicas
        need["GPU"] += m.num_gpus * m.replicas
    for k, v in need.items():
        if v > have.get(k, 0.0) + 1e-9:
            ray.shutdown()
            user_error(f"cluster.serve.models: {len(man['models'])} models and the entry need {v:g} {k}s at start, "
                       f"the cluster has {have.get(k, 0.0):g}; lower their num_cpus / num_gpus or replicas")
    stopping = []

    def _stop(signum, frame):
        stopping.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)  # (also where the shell started it with SIGINT ignored)
    try:
        if not args.quiet:
            log.info("serve: starting %d models of %s", len(man["models"]), run_dir)
        url = start(man, s, token)
        print(json.dumps({"url": url, "run_dir": str(run_dir),
                          "models": [e["name"] for e in man["models"]]}), flush=True)
        log.info("serve: listening on %s (POST /v1/score, GET /v1/models, GET /healthz); Ctrl-C stops", url)
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        log.info("serve: stopping")
    finally:
        try:
            stop()
        finally:
            ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
