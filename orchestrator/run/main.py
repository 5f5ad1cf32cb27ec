"""The main job's driver (``python -m jobs.frontier`` and ``jobs.sweep``): resolve the command line,
check the inputs before anything is written, start or join Ray, run the pipeline, print a summary."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from orchestrator.config.schema import FrontierConfig, validate_resources
from orchestrator.run.cli import (
    ConfigError,
    DataError,
    init_ray,
    joins_cluster,
    local_resources,
    parser,
    resolve,
    save_config,
    setup_logging,
    user_error,
)

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "jobs" / "configs" / "default.yaml"


def _drive(cfg, run_dir: Path, args, work):
    """Check the inputs before anything is written (a bad input leaves the run directory as it
    was), start or join Ray, save the config, run ``work(cfg, run_dir, progress)``; user errors
    exit 2 with one line."""
    from orchestrator.run.preflight import preflight

    try:
        preflight(cfg, run_dir)
        if not joins_cluster(cfg.cluster):  # a local Ray: its resources are known before it starts
            validate_resources(cfg, local_resources(cfg.cluster))
    except (ConfigError, DataError) as e:
        user_error(str(e))
    import ray

    resources = init_ray(cfg.cluster)
    try:
        validate_resources(cfg, resources)
    except ConfigError as e:
        ray.shutdown()
        user_error(str(e))
    save_config(cfg, run_dir)
    setup_logging(run_dir)
    try:
        return work(cfg, run_dir, progress=not args.quiet and sys.stderr.isatty())
    except (ConfigError, DataError) as e:
        ray.shutdown()  # first: what Ray's workers print as they stop comes before the error line
        user_error(str(e))
    finally:
        ray.shutdown()


def run_job(args, job: str) -> int:
    """The pipeline for ``jobs.frontier`` and ``jobs.sweep`` (the same stages, shared by cache)."""
    cfg, run_dir = resolve(job, FrontierConfig, args)
    if args.resume and (run_dir / "frontier.json").is_file():
        user_error(f"--resume: nothing to resume: {run_dir} is a finished run (frontier.json written); "
                   "rerun without --resume to rebuild the report from its cached stages")
    from orchestrator.run.pipeline import run_frontier

    frontier = _drive(cfg, run_dir, args, run_frontier)
    c = frontier["checks"]
    print(json.dumps({"run_dir": str(run_dir), "wall_seconds": frontier["wall_seconds"],
                      "checks_pass": c["all_pass"], "spearman_size_kl_peak": c.get("spearman_size_kl_peak"),
                      "bon_size_slope": (c.get("size_trend") or {}).get("d_peak", {}).get("slope"),
                      "report": str(run_dir / "report.html")}))
    return 0


def frontier_main(argv: list[str] | None, prog: str, doc: str, job: str) -> int:
    """``python -m jobs.frontier`` / ``jobs.sweep``: parse, then ``run_job``."""
    return run_job(parser(prog, doc, DEFAULT_CONFIG, resume_dir=True).parse_args(argv), job)


def active_main(argv: list[str] | None, prog: str, doc: str) -> int:
    """``python -m jobs.active``: the same command line, checks and Ray as the main job; the run
    directory defaults to the main job's (``runs/frontier-<hash>``), whose stages it shares."""
    args = parser(prog, doc, DEFAULT_CONFIG, resume_dir=True).parse_args(argv)
    cfg, run_dir = resolve("frontier", FrontierConfig, args)
    from orchestrator.run.active import run_active

    result = _drive(cfg, run_dir, args, run_active)
    print(json.dumps({"run_dir": str(run_dir), "wall_seconds": result["wall_seconds"],
                      "versus_random": {a: v["mean"] for a, v in result["versus_random"].items()},
                      "report": str(run_dir / "active.html")}))
    return 0
