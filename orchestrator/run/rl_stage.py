"""The RL runs' inputs: training and eval prompts, and the single runs of issue 3's comparison (one
per proxy size with no penalty, one per ensemble objective). The main job runs them -- and every
KL coefficient -- as Tune trials (``orchestrator.run.sweep``)."""

from __future__ import annotations

import logging

import numpy as np
import pyarrow.parquet as pq

from orchestrator.config.schema import FrontierConfig
from orchestrator.data.checkpoint import stream
from orchestrator.data.tasks import synthetic as T
from orchestrator.run.stages import StageResult

log = logging.getLogger("rlhf_frontier")


def rl_rows(cfg: FrontierConfig, task: StageResult) -> tuple[dict, dict]:
    """RL training prompts (fresh, from their own seed stream) and the fixed eval prompts (the
    first ``rl.eval_prompts`` best-of-n prompts, so RL and best-of-n are measured on one set)."""
    prompts = pq.read_table(task.dir / "prompts.parquet").to_pydict()
    if cfg.task.name == "dataset":  # drawn from the dataset's training part by the task stage
        tr = [i for i, s in enumerate(prompts["split"]) if s == "rl"]
        train_rows = {k: [prompts[k][i] for i in tr] for k in ("prompt", "family", "meta")}
    else:
        rows_of = T.table(cfg.task.countries, cfg.task.animals, cfg.task.unknown_countries)
        train = T.make_prompts(cfg.rl.train_prompts, stream(cfg.seed, "prompts/rl"), cfg.task.families,
                               cfg.task.family_weights, rows_of)
        train_rows = {k: [r[k] for r in train] for k in ("prompt", "family", "meta")}
    ev = [i for i, s in enumerate(prompts["split"]) if s == "bon"][: cfg.rl.eval_prompts]
    eval_rows = {k: [prompts[k][i] for i in ev] for k in ("prompt", "family", "meta")}
    return train_rows, eval_rows


def proxy_member(cfg: FrontierConfig, proxy: StageResult, tau: float | None = None) -> dict:
    """A trained proxy as a ``RewardEnsemble`` member of an RL run. With ``rl.normalize_proxies`` it
    carries ``norm`` = (mean, std) of its scores over the best-of-n pool -- samples of the SFT
    policy, where every RL run starts (Ziegler et al. 2019 normalize the RM on the initial policy);
    with ``proxy.member_scaling: temperature``, (mean, its fitted tau) instead, and ``scaling`` in
    the member (so the trial's key changes with it)."""
    from orchestrator.math.ensembles import member_scales
    from orchestrator.run.stages import proxy_name

    m = {"name": proxy_name(proxy), "kind": "hf", "path": str(proxy.dir / "model"), "stage": proxy.key}
    if cfg.rl.normalize_proxies:
        s = np.asarray(pq.read_table(proxy.dir / "bon_scores.parquet", columns=["score"])["score"], np.float64)
        if cfg.proxy.member_scaling == "temperature" and tau is not None:
            m["norm"] = list(member_scales(s[:, None], "temperature", [tau])[0])
            m["scaling"] = f"temperature {tau!r}"
        else:
            m["norm"] = [float(s.mean()), float(max(s.std(), 1e-6))]
    return m
