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

from orchestrator.run.cli import parser
from orchestrator.run.main import DEFAULT_CONFIG, run_job


def main(argv: list[str] | None = None) -> int:
    p = parser("python -m jobs.sweep", __doc__, DEFAULT_CONFIG, resume_dir=True)
    p.add_argument("--list", action="store_true", help="print the trial grid (no proxies needed) and exit")
    args = p.parse_args(argv)
    if args.list:
        return _list(args)
    return run_job(args, "sweep")


def _list(args) -> int:
    from orchestrator.config.schema import FrontierConfig
    from orchestrator.run.cli import resolve
    from orchestrator.run.sweep import grid

    cfg, run_dir = resolve("sweep", FrontierConfig, args)
    trials = grid(cfg)
    for t in trials:
        src = {"seed": "seeds", "bootstrap": "bootstrap resamples", "pretrain": "pretraining seeds"}
        what = (f"WARM of {t['sizes'][0]:<7}" if t.get("source") == "warm" else
                f"proxy {t['sizes'][0]:<7}" if len(t["sizes"]) == 1 else
                f"ensemble of {len(t['sizes'])} {t['sizes'][0]} {src[t['source']]} ({t['objective']})"
                if t.get("source") else f"ensemble of {len(t['sizes'])} sizes ({t['objective']})")
        print(f"seed {t['seed']}  {what} beta {t['kl_coef']:g}   {t['name']}")
    print(f"{len(trials)} trials, {cfg.rl.steps} steps each, {cfg.cluster.rl.num_cpus:g} CPU per trial; run dir {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
