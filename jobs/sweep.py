"""``python -m jobs.sweep``: the RL sweep on Ray Tune -- KL coefficient x proxy size x seed (plus
the ensemble objectives) -- and the frontier map it makes (Gao et al. 2022, section 3).

One Tune trial = one RL run in its own placement group (``cluster.rl``). The stages the sweep needs
(task, SFT, pools, labels, proxies, best-of-n) are the main job's, cached by input hash: a sweep on
a run directory of ``jobs.frontier`` (or the other way round) redoes nothing. Trials report every
step to Tune (TensorBoard, CSV, JSON, wandb offline) with checksummed checkpoints.

Resume after the driver died (Ctrl-C, lost head node, ``ray job stop``):

    python -m jobs.sweep --resume RUN_DIR

restores the Tune experiment (``Tuner.restore(..., resume_errored=True)``): finished trials are
not run again, unfinished ones continue from their last checkpoint.
"""

from __future__ import annotations

import sys

from jobs.frontier import DEFAULT, run
from orchestrator.cli import parser


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m jobs.sweep", __doc__, DEFAULT, resume_dir=True)
    p.add_argument("--list", action="store_true", help="print the trial grid (no proxies needed) and exit")
    args = p.parse_args(argv)
    if args.list:
        return _list(args)
    return run(args, "sweep")


def _list(args) -> int:
    from orchestrator.cli import resolve
    from orchestrator.config import FrontierConfig

    cfg, run_dir = resolve("sweep", FrontierConfig, args)
    seeds = list(cfg.sweep.seeds) or [cfg.seed]
    sizes = list(cfg.rl.sizes or cfg.proxy.sizes)
    n = 0
    for seed in seeds:
        for s in sizes:
            for k in cfg.sweep.kl_coefs:
                print(f"seed {seed}  proxy {s:<7} beta {k:g}")
                n += 1
        if len(cfg.proxy.sizes) >= 2:
            for obj in cfg.rl.ensemble_objectives:
                print(f"seed {seed}  ensemble of {len(cfg.proxy.sizes)} ({obj}) beta 0")
                n += 1
    print(f"{n} trials, {cfg.rl.steps} steps each, {cfg.cluster.rl.num_cpus:g} CPU per trial; run dir {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
