"""Replicates of a finished run's proxies with exactly one of their inputs redrawn, to split the
seed-to-seed spread of best-of-n's fitted peaks (Gao et al. 2022's size law) beyond the pool:

- ``order``: the same LM and labels, another seed for the head's initialization and the
  minibatch order (the proxy stage's ``member`` k: the very proxies ``proxy.seed_members`` trains);
- ``labels``: the same LM and seeds, a bootstrap of the label pairs by prompt (prompts drawn with
  replacement, each with all its pairs; the validation split is redrawn on the resample);
- ``lm``: the same labels and seeds, starting LMs trained with another seed (initialization and
  demonstration order; for the policy's size a new LM, not the policy).

Each replicate is a cached stage of the run directory (re-running costs nothing), keyed apart from
the job's own stages, which it never changes. ``jobs.bon_power --factors`` drives it.
"""

from __future__ import annotations

import random
from pathlib import Path

from orchestrator.config.schema import FrontierConfig
from orchestrator.data import tables as D
from orchestrator.data.checkpoint import stream
from orchestrator.run.pipeline import (
    _proxy_model,
    _train_proxies,
    stage_label,
    stage_lms,
    stage_sample,
    stage_task,
)
from orchestrator.run.stages import StageResult, run_stage

FACTORS = ("order", "labels", "lm")


def _label_bootstrap(cfg: FrontierConfig, run_dir: Path, label: StageResult, k: int) -> StageResult:
    """The label stage's pairs resampled by prompt (with replacement), as a stage of its own."""

    def fn(out: Path) -> dict:
        t = D.read_table(label.dir / "preferences.parquet", D.PREFERENCES, "preferences").to_pydict()
        by_prompt: dict = {}
        for i, pid in enumerate(t["prompt_id"]):
            by_prompt.setdefault(pid, []).append(i)
        prompts = sorted(by_prompt)
        rng = random.Random(stream(cfg.seed, f"diagnose/labels/{k}"))
        rows, ids = [], []
        for j in range(len(prompts)):  # a drawn prompt twice is two prompts: its copy gets a new id
            pid = prompts[rng.randrange(len(prompts))]
            rows += by_prompt[pid]
            ids += [j] * len(by_prompt[pid])
        cols = {c: [t[c][i] for i in rows] for c in t}
        cols["prompt_id"] = ids
        D.write_table(cols, out / "preferences.parquet")
        return {"pairs": len(rows), "prompts": len(prompts), "distinct_prompts": len({t["prompt_id"][i] for i in rows})}

    return run_stage(run_dir, "label", {"stage": "label-bootstrap", "v": 1, "label": label.key, "replicate": k,
                                        "seed": cfg.seed}, fn)


def replicate_proxies(cfg: FrontierConfig, run_dir: Path, factor: str, k: int,
                      progress: bool = False) -> dict[str, StageResult]:
    """``{size: proxy stage}``: every proxy size of the run retrained with ``factor`` redrawn
    (replicate ``k`` >= 1). The run's own stages must be finished: they are read, never rerun."""
    if factor not in FACTORS:
        raise ValueError(f"factor {factor!r}: one of {', '.join(FACTORS)}")
    if k < 1:
        raise ValueError("replicate k must be >= 1 (0 is the run's own proxies)")
    if factor == "lm" and cfg.proxy.models:
        raise ValueError("factor 'lm' redraws the LMs proxies start from: proxies of proxy.models are "
                         "pretrained models of yours, with nothing to redraw")
    sizes = list(cfg.proxy.names)
    task = stage_task(cfg, run_dir)
    models = {"policy": (cfg.sft.policy, cfg.cluster.learner)}
    if cfg.proxy.init == "lm" and not cfg.proxy.models:
        models.update({s: (_proxy_model(cfg, s), cfg.cluster.proxy) for s in sizes})
    lms = stage_lms(cfg, run_dir, task, models, progress)
    sft = lms.pop("policy")
    lms = {s: lms[s] for s in sizes if s in lms}
    sample = stage_sample(cfg, run_dir, task, sft, progress)
    label = stage_label(cfg, run_dir, task, sample, progress)
    which = [(s, 0) for s in sizes]
    if factor == "order":
        which = [(s, k) for s in sizes]
    elif factor == "labels":
        label = _label_bootstrap(cfg, run_dir, label, k)
    elif cfg.proxy.init == "lm":  # lm: every size's LM anew, the policy's size included
        lms = stage_lms(cfg, run_dir, task, {s: (_proxy_model(cfg, s), cfg.cluster.proxy) for s in sizes},
                        progress, replicate=k)
    else:
        raise ValueError("factor 'lm' needs proxy.init: lm (these proxies start from scratch)")
    out = _train_proxies(cfg, run_dir, task, sample, label, lms, progress, "preferences.parquet", "", which)
    return dict(zip(sizes, out))
