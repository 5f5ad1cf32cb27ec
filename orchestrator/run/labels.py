"""The label stage (DESIGN.md "Labels"): the labelling pool's within-prompt pairs labelled by gold
(ties dropped, label noise by seed), by the AI judge (``orchestrator.run.rlaif``) or taken from your
dataset (``orchestrator.run.own_data``); with ``proxy.principles`` (issue 22), each principle's labels
of the same pairs beside them (``preferences_<principle>.parquet``). Re-exported by
``orchestrator.run.pipeline``."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from orchestrator.config.schema import FrontierConfig, to_dict
from orchestrator.data import tables as D
from orchestrator.data.checkpoint import stream
from orchestrator.run.own_data import dataset_labels
from orchestrator.run.proxies import _join_prompts
from orchestrator.run.roles import gold_key, score_gold
from orchestrator.run.stages import StageResult, run_stage


def stage_label(cfg: FrontierConfig, run_dir: Path, task: StageResult, sample: StageResult,
                progress: bool = False) -> StageResult:
    label = to_dict(cfg.label)
    if cfg.label.source != "ai":
        label.pop("ai")  # the judge's settings do not change gold labels (nor their cache key)
    if cfg.label.source != "dataset":
        label.pop("dataset")  # added with dataset labels: other sources keep their cache keys
    else:
        if not cfg.label.dataset.principle_columns:  # added with issue 22: keys of runs without it stay
            label["dataset"].pop("principle_columns")
        from orchestrator.data.tasks.dataset import fingerprint

        label["data"] = fingerprint(cfg.label.dataset.path, cfg.label.dataset.split, cfg.label.dataset.subset)
    inputs = {"stage": "label", "v": 1, "sample": sample.key, "label": label, "seed": cfg.seed, **gold_key(cfg),
              **({"principles": list(cfg.proxy.principles)} if cfg.proxy.principles else {})}

    def fn(out: Path) -> dict:
        if cfg.label.source == "dataset":
            return dataset_labels(cfg, out)
        prompts = pq.read_table(task.dir / "prompts.parquet").to_pydict()
        samples = pq.read_table(sample.dir / "samples_label.parquet").to_pydict()
        rows = _join_prompts(samples, prompts)
        g, principles = score_gold(cfg, rows)
        samples["score.gold"] = g.tolist()
        for p, v in principles.items():
            samples[f"score.gold.{p}"] = v.tolist()
        D.write_table(samples, out / "samples_label_scored.parquet")
        if cfg.label.source == "ai":
            from orchestrator.run.rlaif import label_with_judge

            return label_with_judge(cfg, run_dir, out, rows, samples, g, principles, stream(cfg.seed, "label/ai"),
                                    progress)
        pairs, ties = _gold_pairs(samples, rows, g, "gold", cfg.label.noise_rate,
                                  np.random.default_rng(stream(cfg.seed, "label/noise")))
        D.write_table(pairs, out / "preferences.parquet")
        per_principle = {}
        for pr in cfg.proxy.principles:  # one label set per principle, the same pairs by that principle's gold
            pp, pt = _gold_pairs(samples, rows, principles[pr], pr, cfg.label.noise_rate,
                                 np.random.default_rng(stream(cfg.seed, f"label/noise/{pr}")))
            D.write_table(pp, out / f"preferences_{pr}.parquet")
            per_principle[pr] = {"pairs": len(pp["pair_id"]), "ties_dropped": pt}
        src = np.array(samples["source"])
        return {"pairs": len(pairs["pair_id"]), "ties_dropped": ties,
                **({"principles": per_principle} if per_principle else {}),
                "gold_mean_policy": float(g[src == "policy"].mean()) if (src == "policy").any() else None,
                "gold_mean_demo": float(g[src == "demo"].mean()) if (src == "demo").any() else None}

    return run_stage(run_dir, "label", inputs, fn)


def _gold_pairs(samples: dict, rows: dict, g: np.ndarray, principle: str, noise: float,
                rng: np.random.Generator) -> tuple[dict, int]:
    """Every within-prompt pair of the labelling pool, labelled by ``g`` (gold, or one principle's
    gold: issue 22), each label flipped with probability ``noise``; pairs ``g`` ties are dropped (Gao
    et al.). Returns the preference table and the number of ties."""
    by_prompt: dict[int, list[int]] = {}
    for i, p in enumerate(samples["prompt_id"]):
        by_prompt.setdefault(p, []).append(i)
    pairs = {k: [] for k in D.PREFERENCES}
    ties = 0
    for p, idx in by_prompt.items():
        for x in range(len(idx)):
            for y in range(x + 1, len(idx)):
                i, j = idx[x], idx[y]
                if g[i] == g[j]:
                    ties += 1  # equal gold carries no preference (Gao et al.: ties dropped)
                    continue
                p_a = 1.0 if g[i] > g[j] else 0.0
                if rng.random() < noise:
                    p_a = 1.0 - p_a
                pairs["pair_id"].append(len(pairs["pair_id"]))
                pairs["prompt_id"].append(p)
                pairs["prompt"].append(rows["prompt"][i])
                pairs["response_a"].append(samples["response"][i])
                pairs["response_b"].append(samples["response"][j])
                pairs["p_a"].append(p_a)
                pairs["labeler"].append("gold")
                pairs["principle"].append(principle)
                pairs["rationale"].append("")
    return pairs, ties
