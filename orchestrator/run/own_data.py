"""Your own data in the pipeline (``task.name: dataset``, ``label.source: dataset``): the dataset
task's prompts and demonstrations, the preference pairs of ``label.dataset``. The stages keep the
synthetic task's tables, so everything after them is the same code."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np

from orchestrator.config.schema import FrontierConfig, to_dict
from orchestrator.data import tables as D
from orchestrator.data.checkpoint import stream
from orchestrator.run.roles import score_gold
from orchestrator.run.stages import StageResult, run_stage

log = logging.getLogger("rlhf_frontier")


def policy_limit(cfg: FrontierConfig) -> tuple[int, int]:
    """(longest prompt, longest prompt + response) in the policy's tokens: ``task.dataset.
    max_prompt_tokens`` or the policy's context minus the longest response."""
    from transformers import AutoConfig

    from orchestrator.nn.codec import max_positions

    ctx = max_positions(AutoConfig.from_pretrained(cfg.sft.policy.path)) or 1_000_000
    longest = max(cfg.sample.max_new_tokens, cfg.rl.max_new_tokens)
    return (cfg.task.dataset.max_prompt_tokens or max(1, ctx - longest)), ctx


def stage_dataset_task(cfg: FrontierConfig, run_dir: Path) -> StageResult:
    """The prompts (and SFT demonstrations) of a dataset task, in the synthetic task's tables.

    Prompts are deduplicated, those longer than the policy's limit (``policy_limit``, counted in
    its own tokens and template) dropped and counted, then shuffled by seed: the first
    ``task.dataset.eval_fraction`` are held out -- the best-of-n pool (``sample.bon_prompts`` of
    them) and the RL evaluation -- and the rest feed labelling (``sample.label_prompts``) and RL
    training (``rl.train_prompts``, drawn with replacement if the dataset has fewer)."""
    from orchestrator.data.tasks import dataset as DS
    from orchestrator.nn.codec import load_codec

    d, s = cfg.task.dataset, cfg.sample
    demos_cfg = cfg.sft.dataset
    task_key = to_dict(cfg.task)
    if not d.domain_column:  # added later (issue 21): unset, it leaves the key (and cached tasks) as they were
        task_key["dataset"].pop("domain_column")
    inputs = {"stage": "task", "v": 1, "seed": cfg.seed, "task": task_key,
              "data": DS.fingerprint(d.path, d.split, d.subset), "policy": cfg.sft.policy.path,
              "label_prompts": s.label_prompts, "bon_prompts": s.bon_prompts, "rl_prompts": cfg.rl.train_prompts,
              "longest": [s.max_new_tokens, cfg.rl.max_new_tokens],
              "demos": ({**to_dict(demos_cfg), "data": DS.fingerprint(demos_cfg.path, demos_cfg.split, demos_cfg.subset),
                         "n": cfg.sft.demos} if cfg.sft.steps and demos_cfg.path else None)}

    def fn(out: Path) -> dict:
        codec = load_codec(cfg.sft.policy.path, d.chat_template)
        limit, ctx = policy_limit(cfg)
        cols = {"prompt": d.prompt_column, **({"domain": d.domain_column} if d.domain_column else {})}
        table = DS.read_columns(d.path, d.split, cols, "task.dataset", d.subset)
        prompts = table["prompt"]
        domain: dict[str, str] = {}  # a prompt's family: its first row's domain
        for p, v in zip(prompts, table.get("domain", ())):  # read_columns refused empty values
            domain.setdefault(p, v.strip())
        uniq = list(dict.fromkeys(prompts))
        kept = [p for p in uniq if len(codec.prompt(p)) <= limit]
        dropped = len(uniq) - len(kept)
        if dropped:
            log.warning("task: %d of %d distinct prompts are longer than %d tokens of the policy and were dropped",
                        dropped, len(uniq), limit)
        if len(kept) < 2:
            raise D.DataError(f"task.dataset.path: {d.path}: {len(kept)} usable prompt(s) (of {len(prompts)}; "
                              f"{dropped} longer than {limit} tokens): need >= 2")
        rng = random.Random(stream(cfg.seed, "prompts/dataset"))
        rng.shuffle(kept)
        n_eval = min(len(kept) - 1, max(1, round(d.eval_fraction * len(kept))))
        held, train = kept[:n_eval], kept[n_eval:]
        if len(held) < s.bon_prompts:
            log.warning("task: %d held-out prompts, fewer than sample.bon_prompts = %d: the pool uses all of them",
                        len(held), s.bon_prompts)
        rows = []
        rl_rng = random.Random(stream(cfg.seed, "prompts/rl"))
        rl = (rl_rng.sample(train, cfg.rl.train_prompts) if len(train) >= cfg.rl.train_prompts
              else [rl_rng.choice(train) for _ in range(cfg.rl.train_prompts)])
        splits = [("label", train[: s.label_prompts]), ("bon", held[: s.bon_prompts]), ("rl", rl)]
        for split, texts in splits:
            for t in texts:
                rows.append({"prompt": t, "family": domain.get(t, "dataset"), "meta": "{}", "split": split,
                             "prompt_id": len(rows)})
        D.write_table({k: [r[k] for r in rows] for k in D.PROMPTS}, out / "prompts.parquet")
        if d.domain_column:
            missing = set(cfg.proxy.holdout_families) - {r["family"] for r in rows}
            if missing:
                raise D.DataError(f"proxy.holdout_families: {sorted(missing)} not among the values of "
                                  f"{d.domain_column!r} in {d.path} ({sorted(set(domain.values()))[:10]})")
        meta = {"prompts": len(rows), "dataset_prompts": len(prompts), "duplicates": len(prompts) - len(uniq),
                "dropped_long": dropped, "max_prompt_tokens": limit, "held_out": len(held), "train": len(train)}
        if inputs["demos"]:
            dm = DS.read_columns(demos_cfg.path, demos_cfg.split, {"prompt": demos_cfg.prompt_column,
                                                                   "response": demos_cfg.response_column}, "sft.dataset", demos_cfg.subset)
            pairs = [(p, r) for p, r in zip(dm["prompt"], dm["response"]) if len(codec.sequence(p, r)) <= ctx]
            meta["demos_dropped_long"] = len(dm["prompt"]) - len(pairs)
            random.Random(stream(cfg.seed, "demos")).shuffle(pairs)
            pairs = pairs[: cfg.sft.demos]
            if not pairs:
                raise D.DataError(f"sft.dataset.path: {demos_cfg.path}: no demonstration fits the policy's "
                                  f"{ctx} positions")
            D.write_table({"prompt_id": list(range(len(pairs))), "prompt": [p for p, _ in pairs],
                           "response": [r for _, r in pairs]}, out / "demos.parquet")
            meta["demos"] = len(pairs)
        else:
            D.write_table({"prompt_id": [], "prompt": [], "response": []}, out / "demos.parquet")
            meta["demos"] = 0
        log.info("task: %d prompts from %s (%d duplicates, %d longer than %d tokens dropped); %d held out",
                 len(prompts), d.path, meta["duplicates"], dropped, limit, len(held))
        return meta

    return run_stage(run_dir, "task", inputs, fn)


def dataset_labels(cfg: FrontierConfig, out: Path) -> dict:
    """``label.source: dataset``: the user's (prompt, chosen, rejected) rows become the preference
    pairs (p_a = 1, labeler ``dataset``) that train the proxies. Gold never labels; it scores both
    responses of every pair so the run reports how often gold agrees with these labels."""
    from orchestrator.data.tasks import dataset as DS

    d = cfg.label.dataset
    t = DS.read_columns(d.path, d.split, {"prompt": d.prompt_column, "chosen": d.chosen_column,
                                          "rejected": d.rejected_column}, "label.dataset", d.subset)
    keep = [i for i in range(len(t["prompt"])) if t["chosen"][i] != t["rejected"][i]]
    if not keep:
        raise D.DataError(f"label.dataset.path: {d.path}: every pair has chosen == rejected")
    pid: dict[str, int] = {}
    pairs = {"pair_id": list(range(len(keep))), "prompt_id": [pid.setdefault(t["prompt"][i], len(pid)) for i in keep],
             "prompt": [t["prompt"][i] for i in keep], "response_a": [t["chosen"][i] for i in keep],
             "response_b": [t["rejected"][i] for i in keep], "p_a": [1.0] * len(keep),
             "labeler": ["dataset"] * len(keep), "principle": ["dataset"] * len(keep), "rationale": [""] * len(keep)}
    D.write_table(pairs, out / "preferences.parquet")
    per_principle = {}
    if cfg.proxy.principles:  # issue 22: each principle's labels of the same pairs, from its column
        cols = DS.read_preference_columns(d.path, d.split, {p: d.principle_columns[p] for p in cfg.proxy.principles},
                                          "label.dataset", d.subset)
        for pr, vals in cols.items():
            rows = [n for n, i in enumerate(keep) if vals[i] is not None and vals[i] != 0.5]  # ties, empty cells out
            D.write_table({"pair_id": list(range(len(rows))), **{k: [pairs[k][n] for n in rows] for k in
                           ("prompt_id", "prompt", "response_a", "response_b")},
                           "p_a": [vals[keep[n]] for n in rows], "labeler": ["dataset"] * len(rows),
                           "principle": [pr] * len(rows), "rationale": [""] * len(rows)}, out / f"preferences_{pr}.parquet")
            per_principle[pr] = {"pairs": len(rows), "ties_dropped": sum(vals[i] == 0.5 for i in keep),
                                 "empty_dropped": sum(vals[i] is None for i in keep)}
    both = {"prompt": pairs["prompt"] * 2, "response": pairs["response_a"] + pairs["response_b"],
            "family": ["dataset"] * (2 * len(keep)), "meta": ["{}"] * (2 * len(keep))}
    g, _ = score_gold(cfg, both)
    ga, gb = g[: len(keep)], g[len(keep):]
    agree = float(np.mean(np.where(ga == gb, 0.5, ga > gb)))
    log.info("label: %d pairs from %s (%d with chosen == rejected dropped); gold agrees with %.1f%% of them",
             len(keep), d.path, len(t["prompt"]) - len(keep), 100 * agree)
    return {"pairs": len(keep), "identical_dropped": len(t["prompt"]) - len(keep), "prompts": len(pid),
            "gold_agreement": agree, **({"principles": per_principle} if per_principle else {})}
