"""``python -m jobs.bench frontier``: wall time, phase breakdown and peak memory of the main job.

Runs ``jobs.frontier`` in this process on a fresh run directory (no cached stage) while a thread
samples the proportional set size (PSS) of this process and every descendant (the local Ray's
GCS, raylet and workers), so shared memory is not counted twice. The last line of output is one
JSON object.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil


class MemorySampler(threading.Thread):
    """Peak PSS (falls back to RSS) of a process tree, sampled every ``interval`` seconds."""

    def __init__(self, pid: int, interval: float = 1.0):
        super().__init__(daemon=True)
        self.root, self.interval, self.peak, self._halt = psutil.Process(pid), interval, 0, threading.Event()

    def sample(self) -> int:
        total = 0
        for p in [self.root, *self.root.children(recursive=True)]:
            try:
                info = p.memory_full_info()
                total += getattr(info, "pss", info.rss)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return total

    def run(self):
        while not self._halt.is_set():
            self.peak = max(self.peak, self.sample())
            self._halt.wait(self.interval)

    def stop(self) -> int:
        self._halt.set()
        self.join()
        return self.peak


def bench_frontier(args) -> dict:
    from jobs import frontier

    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="bench-frontier-")) / "run"
    sampler = MemorySampler(psutil.Process().pid)
    sampler.start()
    t0 = time.perf_counter()
    argv = ["--config", args.config, "--run-dir", str(run_dir), "--quiet", *args.overrides]
    rc = frontier.main(argv)
    wall = time.perf_counter() - t0
    peak = sampler.stop()
    fj = json.loads((run_dir / "frontier.json").read_text())
    phases: dict[str, float] = {}
    for name, t in fj["timings"].items():
        key = "proxy_training" if name.startswith("proxy-") else name
        # proxies train in parallel: their stage times overlap, report the longest
        phases[key] = max(phases.get(key, 0.0), t["seconds"]) if key == "proxy_training" else t["seconds"]
    print(f"{'phase':<16}{'seconds':>9}")
    for k, v in phases.items():
        print(f"{k:<16}{v:>9.1f}")
    print(f"{'job wall':<16}{wall:>9.1f}   (includes Ray start and report)")
    print(f"{'peak memory':<16}{peak / 2**30:>9.2f} GiB (PSS, driver + Ray processes)")
    return {"bench": "frontier", "rc": rc, "wall_s": round(wall, 1), "peak_mem_gib": round(peak / 2**30, 3),
            "phases_s": {k: round(v, 1) for k, v in phases.items()}, "checks_pass": fj["checks"]["all_pass"],
            "run_dir": str(run_dir)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    f = sub.add_parser("frontier", help="the main job on a config, from scratch")
    f.add_argument("--config", default=str(Path(__file__).parent / "configs" / "default.yaml"))
    f.add_argument("--run-dir", default=None, help="default: a fresh temporary directory")
    f.add_argument("overrides", nargs="*", metavar="key.sub=value")
    args = p.parse_args(argv)
    result = bench_frontier(args)
    print(json.dumps(result))
    return 0 if result["rc"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
