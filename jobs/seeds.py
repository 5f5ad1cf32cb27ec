"""``python -m jobs.seeds``: do the findings hold across seeds?

SCIENCE.md's findings must hold for >= 3 seeds. This job runs ``jobs.frontier`` once per seed (each
in ``ROOT/seed-N``; a finished seed is not run again, an unfinished one is resumed) and compares
them -- or compares finished runs you name:

    python -m jobs.seeds --seeds 0,1,2 [--config FILE] [--root DIR] [key.sub=value ...]
    python -m jobs.seeds RUN_DIR RUN_DIR [RUN_DIR ...] [--out DIR]

Writes ``seeds.json``, ``seeds.md``, ``seeds.png`` and a self-contained ``seeds.html``: every
check of ``frontier.json`` with the seeds it holds in, the per-seed numbers behind the size
trends, and the fitted best-of-n and RL peaks averaged over seeds (mean +- s.e., Spearman of the
means against proxy size). Runs must share one config except ``seed`` (exit 2 otherwise).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from orchestrator.run.cli import absolute, absolute_paths, user_error
from orchestrator.run.main import DEFAULT_CONFIG


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.seeds", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_dirs", nargs="*", metavar="RUN_DIR|key.sub=value",
                   help="finished runs to compare; with --seeds: config overrides for every seed")
    p.add_argument("--seeds", metavar="N,N,...", help="run (or resume) jobs.frontier for these seeds, then compare")
    p.add_argument("--config", default=str(DEFAULT_CONFIG), help=f"YAML config for --seeds (default: {DEFAULT_CONFIG})")
    p.add_argument("--root", default=None, help="--seeds: where the runs go (default: runs/seeds-<config hash without seed>)")
    p.add_argument("--out", default=None, help="where seeds.* are written (default: --root, or runs/seeds-<hash>)")
    p.add_argument("--quiet", action="store_true", help="no progress bars in the runs")
    args = p.parse_args(argv)

    from orchestrator.config.schema import (
        ConfigError,
        FrontierConfig,
        config_digest,
        load,
        to_dict,
    )
    from orchestrator.report import seeds as S

    if args.seeds is not None:
        try:
            seeds = [int(x) for x in args.seeds.split(",") if x.strip()]
        except ValueError:
            user_error(f"--seeds: {args.seeds!r} is not a comma-separated list of integers")
        if len(seeds) < 2:
            user_error(f"--seeds: {args.seeds!r}: give at least two seeds")
        overrides = args.run_dirs
        bad = [o for o in overrides if "=" not in o]
        if bad:
            user_error(f"with --seeds, positional arguments are config overrides (key.sub=value), not {bad[0]!r}")
        if len(set(seeds)) != len(seeds):
            user_error(f"--seeds: {args.seeds} repeats a seed")
        if any(o.split("=", 1)[0].strip() == "seed" for o in overrides):
            user_error("--seeds sets each run's seed; drop the seed= override")
        try:
            cfg = absolute_paths(FrontierConfig, load(FrontierConfig, args.config, overrides))
        except ConfigError as e:
            user_error(str(e))
        root = absolute(args.root) if args.root else absolute(S.default_root(to_dict(cfg)))
        dirs = []
        for s in seeds:
            d = root / f"seed-{s}"
            dirs.append(d)
            if (d / "config.yaml").is_file():  # a run there already: of this config, or refused
                try:
                    same = (config_digest(load(FrontierConfig, d / "config.yaml"))
                            == config_digest(absolute_paths(FrontierConfig, load(FrontierConfig, args.config,
                                                                                 [*overrides, f"seed={s}"]))))
                except ConfigError as e:
                    user_error(f"{d}/config.yaml: {e}")
                if not same:
                    user_error(f"{d} holds a run of another config than --config {args.config} "
                               f"{' '.join(overrides)} seed={s}; choose another --root")
            if (d / "frontier.json").is_file():
                print(f"seed {s}: finished before ({d})", file=sys.stderr)
                continue
            cmd = [sys.executable, "-m", "jobs.frontier", "--config", args.config, "--run-dir", str(d), f"seed={s}",
                   *overrides, *(["--quiet"] if args.quiet else [])]
            if (d / "config.yaml").is_file():
                cmd.append("--resume")
            print(f"seed {s}: {'resuming' if '--resume' in cmd else 'running'} jobs.frontier in {d}", file=sys.stderr)
            rc = subprocess.call(cmd)
            if rc:
                print(f"error: seed {s}: jobs.frontier exited {rc} (its run directory: {d})", file=sys.stderr)
                return rc
        out = Path(args.out) if args.out else root
    else:
        if not args.run_dirs:
            user_error("name finished run directories to compare, or pass --seeds N,N,...")
        dirs = [Path(d) for d in args.run_dirs]
        out = Path(args.out) if args.out else None
    try:
        runs = S.load_runs(dirs)
    except S.SeedsError as e:
        user_error(str(e))
    if out is None:
        out = S.default_root(runs[0]["config"])
    agg = S.aggregate(runs)
    paths = S.write(agg, out)
    holds = {n: c for n, c in agg["checks"].items() if n.endswith("all_pass") or n.endswith("grows_with_size")}
    for n, c in holds.items():
        print(f"{n:42s} holds in {len(c['holds_in'])} of {len(agg['seeds'])} seeds"
              + (f" (fails in {', '.join(map(str, c['fails_in']))})" if c["fails_in"] else ""))
    for label in S.TRENDS:  # finding 3 pooled over seeds: one run cannot settle it (README, "the size law")
        e = agg["effects"].get(label) or {}
        if e.get("mean") is not None and e.get("t") is not None:
            need = e.get("seeds_for_t2")
            power = ("" if e["t"] > 2 else "; its mean is <= 0, so more seeds would not show it" if need is None
                     else f"; {need} seeds would show it at 80% power if the effect is what these measured")
            print(f"{label}: {e['mean']:+.3f} ± {e['se']:.3f} over {e['n']} seeds, t {e['t']:+.1f} "
                  f"({'holds' if e['t'] > 2 else 'not shown'} at t > 2; > 0 in {e['positive_in']} of {e['n']}{power})")
    print(f"report: {paths['html']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
