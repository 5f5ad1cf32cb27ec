"""Who plays each role, from config: the gold ensemble's members, the tokenizer models built from
config share. The pipeline, the sweep and its trials all ask here."""

from __future__ import annotations

import numpy as np
import ray

from actors.reward_ensemble import RewardEnsemble
from orchestrator.config.schema import FrontierConfig, model_key
from orchestrator.run.actor_group import ActorGroup
from orchestrator.run.stages import StageResult


def tokenizer_dir(task: StageResult) -> str:
    """The synthetic task's shared tokenizer ("" for a dataset task: every model brings its own)."""
    d = task.dir / "tokenizer"
    return str(d) if d.is_dir() else ""


def gold_members(cfg: FrontierConfig) -> list[dict]:
    """The gold ensemble's members: the task's oracle, or ``gold.models`` (each with its trained
    one-label head, its own tokenizer and template)."""
    if not cfg.gold.models:
        return [{"name": "oracle", "kind": "oracle"}]
    of = {model_key(ref): p for p, ref in cfg.gold.principles.items()}
    return [{"name": f"gold-{model_key(m)}", "kind": "hf", "path": m, "head": "trained", "dtype": cfg.gold.dtype,
             **({"principle": of[model_key(m)]} if model_key(m) in of else {})} for m in cfg.gold.models]


def gold_key(cfg: FrontierConfig) -> dict:
    """The gold ensemble in a stage's cache key (nothing for the oracle: keys stay as they were)."""
    if not cfg.gold.models:
        return {}
    return {"gold": list(cfg.gold.models), "template": cfg.task.dataset.chat_template,
            **({"dtype": cfg.gold.dtype} if cfg.gold.dtype != "float32" else {}),
            **({"gold_principles": dict(sorted(cfg.gold.principles.items()))} if cfg.gold.principles else {})}


def score_gold(cfg: FrontierConfig, rows: dict) -> tuple[np.ndarray, dict]:
    """The gold ensemble on ``rows``, in an actor of its own for the call: the overall gold score
    per row (the mean over members) and the score of each principle (the oracle) or of each member
    (``member.<name>``, gold RMs)."""
    gold = ActorGroup(RewardEnsemble, cfg.cluster.gold, "gold", gold_members(cfg), replicas=1,
                      chat_template=cfg.task.dataset.chat_template)
    try:
        sc = ray.get(gold.one("score", rows))
    finally:
        gold.shutdown()
    v = np.asarray(sc.values)
    parts = {p: np.asarray(x) for p, x in sc.principles.items()}
    if cfg.gold.models:
        parts.update({f"member.{m}": v[:, j] for j, m in enumerate(sc.members)})
    return v.mean(axis=1), parts
