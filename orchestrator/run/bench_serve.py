"""``python -m jobs.bench serve --run-dir RUN``: a load test of the reward service on loopback.

Starts the service (``orchestrator.run.rm_server``) for a finished run on a free 127.0.0.1 port, then for each
level of concurrent clients (``--clients``, default 1,8,64) sends ``--requests`` requests of
``--rows`` (prompt, response) rows each, drawn (seeded) from the run's best-of-n pool, and reports
throughput (requests/s, rows/s), latency p50 / p99, and how many were shed (503). Bounded: at most
``--requests`` per level and at most ``--seconds`` of sending per level. Nothing leaves the machine.
"""

from __future__ import annotations

import json
import random
import socket
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def pool_rows(run_dir: Path, man: dict) -> dict:
    """The run's best-of-n pool as (prompt, response) rows."""
    import pyarrow.parquet as pq

    prompts = pq.read_table(man["prompts"]).to_pydict()
    text = dict(zip(prompts["prompt_id"], prompts["prompt"]))
    sample = next(p for p in sorted(Path(run_dir, "stages").glob("sample-*")) if (p / "DONE.json").is_file())
    pool = pq.read_table(sample / "samples_bon.parquet").to_pydict()
    return {"prompt": [text[i] for i in pool["prompt_id"]], "response": pool["response"]}


def _post(url: str, body: bytes, timeout: float) -> tuple[int, float]:
    t0 = time.perf_counter()
    req = urllib.request.Request(url, data=body, method="POST", headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            r.read()
            code = r.status
    except urllib.error.HTTPError as e:
        code = e.code
    except OSError:
        code = 0  # refused or timed out
    return code, time.perf_counter() - t0


def bench_serve(args) -> dict:
    import os

    import ray

    from orchestrator.run import rm_server
    from orchestrator.run.service import load_manifest

    run_dir = Path(os.path.abspath(args.run_dir))
    man = load_manifest(run_dir)
    _, cfg, _ = rm_server.service_config(str(run_dir), list(args.overrides))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    models = [e["name"] for e in man["models"]] if args.models == "all" else args.models.split(",")
    rows = pool_rows(run_dir, man)
    n = len(rows["response"])
    rng = random.Random(args.seed)
    ray.init(address="local", num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
    out: dict = {"bench": "serve", "run_dir": str(run_dir), "models": models, "rows_per_request": args.rows,
                 "max_batch_rows": cfg.cluster.serve.max_batch_rows, "batch_wait_ms": cfg.cluster.serve.batch_wait_ms,
                 "levels": {}}
    try:
        t0 = time.perf_counter()
        url = rm_server.start(man, cfg.cluster.serve, "", port=port, host="127.0.0.1") + "/v1/score"
        out["start_s"] = round(time.perf_counter() - t0, 1)
        for clients in args.clients:
            bodies = []
            for _ in range(args.requests):
                a = rng.randrange(0, max(1, n - args.rows))
                bodies.append(json.dumps({"prompts": rows["prompt"][a: a + args.rows],
                                          "responses": rows["response"][a: a + args.rows],
                                          "models": models}).encode())
            _post(url, bodies[0], 120)  # warm
            deadline = time.perf_counter() + args.seconds
            results: list = []

            def client(k: int) -> None:
                for body in bodies[k::clients]:
                    if time.perf_counter() > deadline:
                        return
                    results.append(_post(url, body, 120))

            t0 = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                list(pool.map(client, range(clients)))
            wall = time.perf_counter() - t0
            ok = [dt for code, dt in results if code == 200]
            codes = [code for code, _ in results]
            lat = np.asarray(ok) * 1000 if ok else np.asarray([np.nan])
            level = {"requests": len(results), "ok": len(ok), "shed_503": codes.count(503),
                     "other_errors": len(results) - len(ok) - codes.count(503), "seconds": round(wall, 2),
                     "requests_per_s": len(ok) / wall, "rows_per_s": len(ok) * args.rows / wall,
                     "p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99))}
            out["levels"][str(clients)] = level
            print(f"{clients:>3} clients: {level['ok']}/{level['requests']} ok, {level['shed_503']} shed, "
                  f"{level['requests_per_s']:.1f} req/s, {level['rows_per_s']:.0f} rows/s, "
                  f"p50 {level['p50_ms']:.0f} ms, p99 {level['p99_ms']:.0f} ms", flush=True)
    finally:
        rm_server.stop()
        ray.shutdown()
    return out


def add_parser(sub) -> None:
    sv = sub.add_parser("serve", help="reward service load test on loopback: throughput, p50/p99 at 1/8/64 clients")
    sv.add_argument("--run-dir", required=True, help="a finished run of python -m jobs.frontier")
    sv.add_argument("--clients", type=lambda t: [int(x) for x in t.split(",")], default=[1, 8, 64],
                    help="concurrency levels (default 1,8,64)")
    sv.add_argument("--requests", type=int, default=256, help="requests per level (at most)")
    sv.add_argument("--seconds", type=float, default=60, help="sending time per level (at most)")
    sv.add_argument("--rows", type=int, default=8, help="rows per request")
    sv.add_argument("--models", default="all", help="comma-separated model names (default: all)")
    sv.add_argument("--seed", type=int, default=0)
    sv.add_argument("overrides", nargs="*", metavar="cluster.key=value", help="serving overrides")
