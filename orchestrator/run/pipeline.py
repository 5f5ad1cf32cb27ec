"""The main job's data flow (DESIGN.md): task -> sft -> sample -> label -> proxies -> best-of-n -> report.

The driver: creates actors per stage from ``cluster`` config, moves data through parquet files in the
run directory, and ``ray.get``s only at phase boundaries. Each stage is cached by a hash of its inputs.
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray

from actors.policy_learner import PolicyLearner
from actors.reward_ensemble import RewardEnsemble
from actors.rollout_generator import RolloutGenerator
from orchestrator.config.members import principle_size, principle_tag
from orchestrator.config.schema import (
    PRINCIPLES,
    FrontierConfig,
    ModelConfig,
    RoleResources,
    config_digest,
    to_dict,
)
from orchestrator.data import tables as D
from orchestrator.data.checkpoint import stream
from orchestrator.data.tables import preference_arrays  # noqa: F401  (re-exported)
from orchestrator.data.tasks import synthetic as T
from orchestrator.math.bon import bon_summary
from orchestrator.nn.models import train_tokenizer
from orchestrator.run.actor_group import ActorGroup
from orchestrator.run.own_data import dataset_labels, stage_dataset_task
from orchestrator.run.progress import as_completed, wait
from orchestrator.run.roles import gold_key, score_gold, tokenizer_dir
from orchestrator.run.stages import (
    StageResult,
    begin,
    cached,
    commit,
    held_out_pairs,
    proxy_name,
    run_stage,
    stage,
)

log = logging.getLogger("rlhf_frontier")


# --------------------------------------------------------------------------------------------
# stages


def stage_task(cfg: FrontierConfig, run_dir: Path) -> StageResult:
    if cfg.task.name == "dataset":
        return stage_dataset_task(cfg, run_dir)
    s = cfg.sample
    task = to_dict(cfg.task)
    task.pop("dataset")  # added with the dataset task: the synthetic task's cache key stays as it was
    inputs = {"stage": "task", "v": 1, "seed": cfg.seed, "task": task, "sft_demos": cfg.sft.demos,
              "label_prompts": s.label_prompts, "bon_prompts": s.bon_prompts}

    def fn(out: Path) -> dict:
        train_tokenizer(T.corpus(stream(cfg.seed, "corpus"), cfg.task.tokenizer_corpus), out / "tokenizer")
        rows = []
        rows_of = T.table(cfg.task.countries, cfg.task.animals, cfg.task.unknown_countries)
        for split, n in (("sft", cfg.sft.demos), ("label", s.label_prompts), ("bon", s.bon_prompts)):
            for r in T.make_prompts(n, stream(cfg.seed, f"prompts/{split}"), cfg.task.families,
                                    cfg.task.family_weights, rows_of):
                rows.append({**r, "split": split, "prompt_id": len(rows)})
        D.write_table({k: [r[k] for r in rows] for k in D.PROMPTS}, out / "prompts.parquet")
        rng = random.Random(stream(cfg.seed, "demos"))
        sft = [r for r in rows if r["split"] == "sft"]
        demos = [T.make_demonstration(r["family"], r["meta"], rng) for r in sft]
        D.write_table({"prompt_id": [r["prompt_id"] for r in sft], "prompt": [r["prompt"] for r in sft],
                       "response": demos}, out / "demos.parquet")
        return {"prompts": len(rows), "demos": len(demos)}

    return run_stage(run_dir, "task", inputs, fn)


def _lm_inputs(cfg: FrontierConfig, task: StageResult, model: ModelConfig, replicate: int = 0) -> dict:
    recipe = to_dict(cfg.sft)
    recipe.pop("policy")
    if not cfg.sft.dataset.path:  # added with the dataset task: off, every cached LM keeps its key
        recipe.pop("dataset")
    return {"stage": "lm", "v": 1, "task": task.key, "model": to_dict(model), "recipe": recipe, "seed": cfg.seed,
            **({"replicate": replicate} if replicate else {})}


def _proxy_model(cfg: FrontierConfig, size: str) -> ModelConfig:
    return ModelConfig(size=size, n_head=cfg.proxy.n_head, n_positions=cfg.sft.policy.n_positions)


def stage_lms(cfg: FrontierConfig, run_dir: Path, task: StageResult,
              models: dict[str, tuple[ModelConfig, RoleResources]], progress: bool,
              replicate: int | dict[str, int] = 0) -> dict[str, StageResult]:
    """Causal LMs trained on the demonstrations with the SFT recipe, one cached stage per model.

    The policy is one of them (the SFT stage); a proxy of the same architecture starts from the
    very same LM, as Gao et al. (2022) start every proxy from a pretrained model of its size and
    InstructGPT starts its RM from the SFT model. Missing ones train in parallel, largest first,
    each on its role's resources (the policy: ``cluster.learner``; proxies' LMs: ``cluster.proxy``).
    ``replicate`` k > 0: the same LMs from another initialization and demonstration order (seed
    stream ``sft/r<k>``; ``jobs.bon_power --factors lm``; the ``pretrain`` ensemble members), never
    the job's own; a dict gives each model its own k.
    """
    rep = (lambda name: replicate.get(name, 0)) if isinstance(replicate, dict) else (lambda name: replicate)
    stages = {name: stage(run_dir, "sft", _lm_inputs(cfg, task, m, rep(name))) for name, (m, _) in models.items()}
    out = {name: cached(st) for name, st in stages.items() if st.done}
    first: dict[str, str] = {}  # one run per distinct LM; the first name (the policy) picks resources
    for name, st in stages.items():
        if not st.done:
            first.setdefault(st.key, name)
    todo = sorted(first.values(), key=lambda n: -_cost(models[n][0].size if not models[n][0].path else ""))
    if not todo:
        return out
    demos = pq.read_table(task.dir / "demos.parquet").to_pydict()
    pairs = ray.put(list(zip(demos["prompt"], demos["response"])))
    template = cfg.task.dataset.chat_template
    calls = {}
    for name in todo:
        st = stages[name]
        tmp = begin(st)
        model, resources = models[name]
        grp = ActorGroup(PolicyLearner, resources, tokenizer_dir(task), asdict(model),
                         stream(cfg.seed, f"sft/r{rep(name)}" if rep(name) else "sft"), replicas=1, progress=True,
                         chat_template=template)
        tr = grp.one("sft", pairs, cfg.sft.steps, cfg.sft.sequences_per_step, cfg.sft.lr)
        calls[grp.one("save", str(tmp / "policy"))] = (name, grp, tr)
    poll = {f"lm-{models[n][0].size if not models[n][0].path else n}" + (f"-r{rep(n)}" if rep(n) else ""): g.actors[0]
            for n, g, _ in calls.values()}
    for ref in as_completed(list(calls), "train LMs", progress, poll):
        name, grp, tr = calls[ref]
        stats = ray.get(tr)
        grp.shutdown()
        label = models[name][0].path or models[name][0].size
        if stats["steps"]:
            log.info("lm %-8s %7d params: loss %.3f -> %.3f, %.0f tokens/s", label, stats["params"],
                     stats["loss_first"], stats["loss_last"], stats["tokens_per_s"])
        else:
            log.info("lm %s: %d params, taken as it is (sft.steps 0)", label, stats["params"])
        out[name] = commit(stages[name], {**stats, "size": models[name][0].size})
    for name, st in stages.items():  # two names may share one LM
        if name not in out:
            out[name] = cached(st)
    return out


def _sample_pool(gen: ActorGroup, prompts: list[str], n: int, seed: int, cfg: FrontierConfig, desc: str,
                 progress: bool, policy_dir: str = "") -> tuple[list[int], list[str], list[int]]:
    """``n`` policy responses per prompt, in chunks of about ``sequences_per_batch`` sequences; each
    chunk's seed depends on its index only, so results do not depend on the replica count. Sampled
    with the plain-torch GPT-2 decoder: on the default seed-0 best-of-n pool it reproduced the
    transformers path's 51,200 responses exactly, 18% faster."""
    per_chunk = max(1, cfg.sample.sequences_per_batch // n)
    if cfg.sample.tokens_per_batch:  # the KV cache bounded in tokens: the longest prompt sets the row cost
        from orchestrator.nn.codec import load_codec

        codec = load_codec(policy_dir, cfg.task.dataset.chat_template)
        row = max(len(codec.prompt(p)) for p in prompts) + cfg.sample.max_new_tokens
        per_chunk = max(1, min(per_chunk, cfg.sample.tokens_per_batch // (row * n)))
    refs = [gen.one("generate", prompts[i: i + per_chunk], n, stream(seed, f"chunk{i}"),
                    cfg.sample.max_new_tokens, cfg.sample.temperature, fast=True)
            for i in range(0, len(prompts), per_chunk)]
    idx, texts, ntok = [], [], []
    for c, b in enumerate(wait(refs, desc, progress)):
        idx += (b.prompt_index + c * per_chunk).tolist()
        texts += b.texts
        ntok += b.n_tokens.tolist()
    return idx, texts, ntok


def stage_sample(cfg: FrontierConfig, run_dir: Path, task: StageResult, sft: StageResult,
                 progress: bool) -> StageResult:
    sc = to_dict(cfg.sample)
    for k in ("label_demo_off_topic", "tokens_per_batch"):  # added later: off, they leave the key (and every
        if not sc[k]:                                        # cached pool) as it was
            sc.pop(k)
    if cfg.task.name == "dataset":  # the synthetic demonstration mix does not apply
        for k in ("label_demo_fraction", "label_demo_garble", "label_demo_off_topic"):
            sc.pop(k, None)
        sc["label_pool"] = cfg.label.source != "dataset"
    inputs = {"stage": "sample", "v": 2, "sft": sft.key, "sample": sc, "seed": cfg.seed}
    s = cfg.sample
    synthetic = cfg.task.name == "synthetic"

    def fn(out: Path) -> dict:
        prompts = pq.read_table(task.dir / "prompts.parquet").to_pydict()
        by_split = {sp: [i for i, x in enumerate(prompts["split"]) if x == sp] for sp in ("label", "bon")}
        gen = ActorGroup(RolloutGenerator, cfg.cluster.generator, str(sft.dir / "policy"))
        t0 = time.perf_counter()
        tokens = 0
        try:
            n_demo = round(s.label_responses_per_prompt * s.label_demo_fraction) if synthetic else 0
            n_pol = s.label_responses_per_prompt - n_demo
            if cfg.label.source == "dataset":
                n_pol = 0  # the labels come with their own responses
            for split, n in (("label", n_pol), ("bon", s.bon_responses_per_prompt)):
                rows = by_split[split]
                cols = {k: [] for k in D.SAMPLES}
                if n:
                    idx, texts, ntok = _sample_pool(gen, [prompts["prompt"][i] for i in rows], n,
                                                    stream(cfg.seed, f"sample/{split}"), cfg, f"sample {split}", progress,
                                                    str(sft.dir / "policy"))
                    tokens += sum(ntok)
                    for j, (pi, t, k) in enumerate(zip(idx, texts, ntok)):
                        cols["prompt_id"].append(prompts["prompt_id"][rows[pi]])
                        cols["sample_id"].append(j % n)
                        cols["response"].append(t)
                        cols["n_tokens"].append(k)
                        cols["source"].append("policy")
                if split == "label" and n_demo:
                    # the demonstration half covers padding k = 0..6 uniformly (DESIGN.md, 2nd prototype)
                    rng = random.Random(stream(cfg.seed, "label/demos"))
                    mix = T.DemoMix(garble=s.label_demo_garble, off_topic=s.label_demo_off_topic)
                    for i in rows:
                        for j in range(n_demo):
                            text = T.make_demonstration(prompts["family"][i], prompts["meta"][i], rng, mix,
                                                        padding_k=rng.randrange(len(T.PADDING_GOLD)))
                            cols["prompt_id"].append(prompts["prompt_id"][i])
                            cols["sample_id"].append(n_pol + j)
                            cols["response"].append(text)
                            cols["n_tokens"].append(len(text.split()) + 1)
                            cols["source"].append("demo")
                D.write_table(cols, out / f"samples_{split}.parquet")
        finally:
            gen.shutdown()
        secs = time.perf_counter() - t0
        return {"tokens": tokens, "tokens_per_s": tokens / secs}

    return run_stage(run_dir, "sample", inputs, fn)


def _join_prompts(samples: dict, prompts: dict) -> dict:
    pid = {p: i for i, p in enumerate(prompts["prompt_id"])}
    rows = [pid[p] for p in samples["prompt_id"]]
    return {"prompt": [prompts["prompt"][i] for i in rows], "family": [prompts["family"][i] for i in rows],
            "meta": [prompts["meta"][i] for i in rows], "response": samples["response"]}


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


def _unique_rows(rows: dict) -> tuple[dict, np.ndarray]:
    """Distinct (prompt, response) rows and, for every original row, its index among them: a pool
    repeats about a third of its responses, each is scored once."""
    first: dict = {}
    for i, k in enumerate(zip(rows["prompt"], rows["response"])):
        first.setdefault(k, i)
    pos = {k: j for j, k in enumerate(first)}
    back = np.array([pos[k] for k in zip(rows["prompt"], rows["response"])], dtype=np.int64)
    sel = list(first.values())
    return {c: [v[i] for i in sel] for c, v in rows.items()}, back


def _bon_rows(task: StageResult, sample: StageResult) -> tuple[dict, dict]:
    prompts = pq.read_table(task.dir / "prompts.parquet").to_pydict()
    samples = pq.read_table(sample.dir / "samples_bon.parquet").to_pydict()
    return samples, _join_prompts(samples, prompts)


def stage_proxies(cfg: FrontierConfig, run_dir: Path, task: StageResult, sample: StageResult,
                  label: StageResult, lms: dict[str, StageResult], progress: bool,
                  labels: str = "preferences.parquet", tag: str = "") -> list[StageResult]:
    """One cached stage per proxy size: Bradley-Terry training from the LM of its size (or from
    scratch), then scoring the best-of-n pool while the model is loaded. Missing sizes train in
    parallel, largest first. ``labels``: the label stage's preference file; ``tag``: a name suffix
    (``-ai`` for the proxies trained on the judge's labels)."""
    return _train_proxies(cfg, run_dir, task, sample, label, lms, progress, labels, tag,
                          [(s, 0) for s in cfg.proxy.names])


def stage_extra_members(cfg: FrontierConfig, run_dir: Path, task: StageResult, sample: StageResult,
                        label: StageResult, lms: dict[str, StageResult], progress: bool,
                        labels: str = "preferences.parquet", tag: str = "") -> list[StageResult]:
    """The members ``proxy.ensemble_diversity`` adds to the ``proxy.seed_size`` proxy,
    ``proxy.seed_members`` per source (``orchestrator.config.members``): ``-m<k>`` the same LM and
    labels, other seeds for the head and minibatch order (Coste et al. 2023); ``-b<k>`` the same LM
    and head initialization, a bootstrap resample by prompt of the training pairs; ``-p<k>`` an LM
    pretrained with another seed (``sft/r<k>``) and other fine-tuning seeds (Eisenstein et al.
    2023). Empty when there are none."""
    from orchestrator.config.members import extra_members

    which = extra_members(cfg)
    pre = {f"{z}/p{k}": k for z, k, src in which if src == "pretrain"}
    if pre:  # the pretrain members' LMs: the seed size's LM recipe, replicate k's seeds
        z = cfg.proxy.seed_size
        lms = {**lms, **stage_lms(cfg, run_dir, task, {n: (_proxy_model(cfg, z), cfg.cluster.proxy) for n in pre},
                                  progress, replicate=pre)}
    return _train_proxies(cfg, run_dir, task, sample, label, lms, progress, labels, tag, which)


def stage_disjoint_halves(cfg: FrontierConfig, run_dir: Path, task: StageResult, sample: StageResult,
                          label: StageResult, lms: dict[str, StageResult], progress: bool,
                          labels: str = "preferences.parquet", tag: str = "") -> list[StageResult]:
    """``monitor.disjoint_size``: two proxies of that size trained on disjoint halves of the
    labelled prompts (every pair of a prompt goes with its prompt), ``proxy-<size><tag>-half-a`` and
    ``-half-b``: the RL run on half a is monitored by half b, an independent RM that saw none of its
    labels (issue 19). Empty when off."""
    z = cfg.monitor.disjoint_size
    if not z:
        return []
    out = []
    for h in ("a", "b"):
        def fn(o: Path, h=h) -> dict:
            t = D.read_table(label.dir / labels, D.PREFERENCES, "preferences").to_pydict()
            prompts = sorted(set(t["prompt_id"]))
            random.Random(stream(cfg.seed, "monitor/halves")).shuffle(prompts)
            mine = set(prompts[: len(prompts) // 2] if h == "a" else prompts[len(prompts) // 2:])
            rows = [i for i, p in enumerate(t["prompt_id"]) if p in mine]
            D.write_table({c: [t[c][i] for i in rows] for c in t}, o / "preferences.parquet")
            return {"pairs": len(rows), "prompts": len(mine), "half": h}

        half = run_stage(run_dir, "halves", {"stage": "label-half", "v": 1, "label": label.key, "labels": labels,
                                           "half": h, "seed": cfg.seed}, fn)
        out += _train_proxies(cfg, run_dir, task, sample, half, lms, progress, "preferences.parquet",
                              f"{tag}-half-{h}", [(z, 0)])
    return out


def _train_proxies(cfg: FrontierConfig, run_dir: Path, task: StageResult, sample: StageResult,
                   label: StageResult, lms: dict[str, StageResult], progress: bool, labels: str, tag: str,
                   which: list[tuple[str, int]]) -> list[StageResult]:
    """The proxy stages ``which`` = [(size, k)] or [(size, k, source)] (k 0: the size's own proxy;
    k >= 1 with no source: a ``seed`` member). A ``pretrain`` member starts from ``lms["<size>/p<k>"]``."""
    from orchestrator.config.members import CODE, member_name
    from orchestrator.math.active import bootstrap_by_prompt

    which = [(w[0], w[1], (w[2] if len(w) > 2 else "seed") if w[1] else "") for w in which]

    def lm_of(s: str, i: int, src: str):
        return lms.get(f"{s}/p{i}") if src == "pretrain" else lms.get(s)

    def ident(i: int, src: str) -> dict:  # a member's place in the stage key (seed members: as before)
        return ({} if not i else {"member": i} if src == "seed" else
                {src: i, "draws": True} if src == "bootstrap" else {src: i})

    pc = cfg.proxy.per_proxy()
    if cfg.proxy.models:
        pc["template"] = cfg.task.dataset.chat_template
    extra = {"labels": labels, "tag": tag} if (labels, tag) != ("preferences.parquet", "") else {}
    stages = {(s, i, src): stage(run_dir, "proxy", {"stage": "proxy", "v": 3, "label": label.key,
                                                    "sample": sample.key, "size": s, "proxy": pc, "seed": cfg.seed,
                                                    "init": lm_of(s, i, src).key if lm_of(s, i, src) else None,
                                                    **extra, **ident(i, src),
                                                    **({"model": cfg.proxy.model_of(s)} if cfg.proxy.models else {})})
              for s, i, src in which}
    out = {w: cached(st) for w, st in stages.items() if st.done}
    todo = sorted([w for w in which if w not in out], key=lambda w: (-_cost(w[0]), w[1]))
    if todo:
        arrays = preference_arrays(label.dir / labels, cfg.proxy.val_fraction, stream(cfg.seed, "proxy/val"))
        held = held_out_pairs(cfg, task, arrays)
        train_rows = np.flatnonzero(~np.asarray(arrays["val"], bool) & ~held)
        if held.any():  # domain shift (issue 21): those families' pairs neither train nor validate the proxy
            arrays = {**arrays, "val": (np.asarray(arrays["val"], bool) & ~held).tolist()}
            log.info("proxies: %d of %d pairs are of the held-out families %s: not trained on", int(held.sum()),
                     len(held), list(cfg.proxy.holdout_families))
        data = ray.put(arrays)
        groups = np.asarray(arrays["group"])
        samples, rows = _bon_rows(task, sample)
        uniq, back = _unique_rows(rows)
        uniq_ref = ray.put({"prompt": uniq["prompt"], "response": uniq["response"]})
        calls = {}
        for s, i, src in todo:
            tmp = begin(stages[s, i, src])
            name, sub = member_name(s, tag, i, src), f"proxy/{s}" + (f"/{CODE[src]}{i}" if i else "")
            # a bootstrap member shares its size's head initialization (WARM averages one initialization)
            member = {"name": name, "kind": "hf",
                      "seed": stream(cfg.seed, f"proxy/{s}/init" if src == "bootstrap" else f"{sub}/init")}
            pairs = [train_rows.tolist()] if held.any() else None
            if src == "bootstrap":  # the training pairs resampled by prompt; the held-out pairs unchanged
                pairs = [bootstrap_by_prompt(train_rows, groups,
                                             np.random.default_rng(stream(cfg.seed, f"{sub}/bootstrap"))).tolist()]
            if cfg.proxy.models:  # a base model of the user's: its own tokenizer, a fresh one-label head
                member["path"] = cfg.proxy.model_of(s)
            elif lm_of(s, i, src):
                member["path"] = str(lm_of(s, i, src).dir / "policy")
            else:
                member.update(size=s, n_head=cfg.proxy.n_head, n_positions=cfg.sft.policy.n_positions)
            grp = ActorGroup(RewardEnsemble, cfg.cluster.proxy, "proxy", [member], tokenizer_dir(task),
                             replicas=1, progress=True, chat_template=cfg.task.dataset.chat_template)
            # one caller's calls to an actor run in order: train, then score, then save
            lc = ({"length_control": cfg.proxy.length_control, "length_lambda": cfg.proxy.length_head_lambda}
                  if cfg.proxy.length_control != "none" else {})
            tr = grp.one("train", data, cfg.proxy.epochs, cfg.proxy.prompts_per_step, cfg.proxy.lr,
                         stream(cfg.seed, f"{sub}/train"),
                         **({"member_pairs": pairs, "draws": src == "bootstrap"} if pairs else {}), **lc)
            sc = grp.one("score", uniq_ref)
            calls[grp.one("save", str(tmp))] = ((s, i, src), name, grp, tr, sc, tmp)
        poll = {v[1]: v[2].actors[0] for v in calls.values()}
        for ref in as_completed(list(calls), "train proxies", progress, poll):
            w, name, grp, tr, sc, tmp = calls[ref]
            stats, scores = ray.get([tr, sc])
            grp.shutdown()  # frees its CPU for the next size
            stats = stats[name]
            (tmp / name).rename(tmp / "model")
            D.write_table({"prompt_id": samples["prompt_id"], "sample_id": samples["sample_id"],
                           "score": scores.values[back, 0].tolist()}, tmp / "bon_scores.parquet")
            log.info("proxy %-9s %7d params  val acc %.3f  (%.0f s)", name.removeprefix("proxy-"), stats["params"],
                     stats.get("val_accuracy", float("nan")), stats["seconds"])
            named = {"name": name} if name != f"proxy-{w[0]}" else {}
            out[w] = commit(stages[w], {**stats, "size": w[0], **named, **({"member": w[1]} if w[1] else {}),
                                        **({"source": w[2]} if w[1] and w[2] != "seed" else {})})
    return [out[w] for w in which]


def stage_length_controlled(cfg: FrontierConfig, run_dir: Path, task: StageResult, sample: StageResult,
                            label: StageResult, lms: dict[str, StageResult], progress: bool,
                            tag: str = "") -> list[StageResult]:
    """``generalization.length_controls``: per mode, a proxy of each ``lc_sizes`` size trained with
    ``proxy.length_control`` = mode, otherwise as the job's own (same LM, labels, seeds) --
    ``proxy-<size>-lc-<mode>`` (issue 21)."""
    import dataclasses

    from orchestrator.config.members import lc_sizes, lc_tag

    out = []
    for mode in cfg.generalization.length_controls:
        c = dataclasses.replace(cfg, proxy=dataclasses.replace(cfg.proxy, length_control=mode),
                                generalization=dataclasses.replace(cfg.generalization, length_controls=()))
        labels = "preferences.parquet"
        out += _train_proxies(c, run_dir, task, sample, label, lms, progress, labels, lc_tag(tag, mode),
                              [(s, 0) for s in lc_sizes(cfg)])
    return out


def stage_principle_proxies(cfg: FrontierConfig, run_dir: Path, task: StageResult, sample: StageResult,
                            label: StageResult, lms: dict[str, StageResult], progress: bool) -> list[StageResult]:
    """``proxy.principles`` (issue 22): per principle, a proxy of each ``principle_sizes`` size trained
    on that principle's labels of the same pairs (``preferences_<principle>.parquet``), otherwise as
    the job's own -- ``proxy-<size>-<principle>``. A principle whose gold ties on every pair (no
    labels) is left out with a warning."""
    sizes = cfg.proxy.principle_sizes or cfg.rl.sizes or cfg.proxy.names  # (principle_size: the first)
    counts = label.meta.get("principles") or {}
    out = []
    for pr in cfg.proxy.principles:
        if (counts.get(pr) or {}).get("pairs", 0) < 2:
            log.warning("proxy.principles: %r has %d labelled pairs (its gold ties on the rest): no proxy", pr,
                        (counts.get(pr) or {}).get("pairs", 0))
            continue
        out += _train_proxies(cfg, run_dir, task, sample, label, lms, progress, f"preferences_{pr}.parquet",
                              principle_tag(cfg, pr), [(s, 0) for s in sizes])
    return out


def stage_learned_weights(cfg: FrontierConfig, run_dir: Path, task: StageResult, label: StageResult,
                          principled: list[StageResult]) -> StageResult:
    """``sweep.principle_learned`` (issue 22): that many training pairs with overall-gold labels, drawn
    by seed (the trade-off preferences), scored by the RL size's per-principle proxies; the logistic
    weights of the preference on their score differences (each proxy standardized on the best-of-n
    pool, as the RL run scales it), with a 90% bootstrap-by-prompt interval: ``learned.json``."""
    from orchestrator.math.pareto import learn_principle_weights

    z = principle_size(cfg)
    names = [f"proxy-{z}{principle_tag(cfg, pr)}" for pr in cfg.proxy.principles]
    by = {proxy_name(p): p for p in principled}
    missing = [n for n in names if n not in by]
    if missing:
        raise D.DataError(f"sweep.principle_learned: no per-principle proxy {missing} (its principle has no labels)")
    inputs = {"stage": "learned-weights", "v": 1, "label": label.key, "proxies": [by[n].key for n in names],
              "pairs": cfg.sweep.principle_learned, "val_fraction": cfg.proxy.val_fraction, "seed": cfg.seed}

    def fn(out: Path) -> dict:
        arrays = preference_arrays(label.dir / "preferences.parquet", cfg.proxy.val_fraction,
                                   stream(cfg.seed, "proxy/val"))
        train = np.flatnonzero(~np.asarray(arrays["val"], bool))
        rng = np.random.default_rng(stream(cfg.seed, "learned-weights/pairs"))
        pick = np.sort(rng.permutation(train)[: cfg.sweep.principle_learned])
        a, b = np.asarray(arrays["a"])[pick], np.asarray(arrays["b"])[pick]
        texts = sorted(set(a.tolist()) | set(b.tolist()))
        where = {t: i for i, t in enumerate(texts)}
        rows = {"prompt": [arrays["texts"][t][0] for t in texts], "response": [arrays["texts"][t][1] for t in texts]}
        members = [{"name": n, "kind": "hf", "path": str(by[n].dir / "model"), "head": "trained"} for n in names]
        grp = ActorGroup(RewardEnsemble, cfg.cluster.proxy, "proxy", members, tokenizer_dir(task), replicas=1,
                         chat_template=cfg.task.dataset.chat_template)
        try:
            v = np.asarray(ray.get(grp.one("score", rows)).values, float)
        finally:
            grp.shutdown()
        pool = np.stack([np.asarray(pq.read_table(by[n].dir / "bon_scores.parquet", columns=["score"])["score"],
                                    float) for n in names], 1)
        v = v / np.maximum(pool.std(0), 1e-8)  # the RL run's scale (standardized on the pool; the shift cancels)
        d = v[[where[t] for t in a]] - v[[where[t] for t in b]]
        res = learn_principle_weights(d, np.asarray(arrays["p_a"], float)[pick], np.asarray(arrays["group"])[pick],
                                      cfg.bon.bootstrap, stream(cfg.seed, "learned-weights/bootstrap"))
        res["principles"] = list(cfg.proxy.principles)
        (out / "learned.json").write_text(json.dumps(res, indent=1))
        log.info("learned principle weights %s from %d pairs", dict(zip(res["principles"], res["raw"])), len(pick))
        return {"pairs": len(pick)}

    return run_stage(run_dir, "learned-weights", inputs, fn)


def _cost(size: str) -> int:
    """A proxy's relative cost (larger ones start first); 0 for a model by path (kept in list order)."""
    try:
        layers, width = (int(x) for x in size.split("x"))
    except ValueError:
        return 0
    return layers * width * width


def stage_bon(cfg: FrontierConfig, run_dir: Path, task: StageResult, sample: StageResult,
              proxies: list[StageResult], progress: bool, extras: list[StageResult] = (),
              calib: StageResult | None = None, principled: list[StageResult] = ()) -> StageResult:
    """Best-of-n curves of every proxy, of ``extras`` (ensemble members, WARM) and of every ensemble
    of ``ensemble_sets`` under mean, WCO and UWO: members scaled by ``proxy.member_scaling`` (with
    ``temperature``, by the taus of ``calib``), aggregated per response, and the aggregate taken as
    one more proxy by the same estimator (issue 20). ``bon.json``: {name: curve}; an ensemble's curve
    also names its ``members``, ``objective`` and ``source``. ``principled``: per-principle proxies,
    each measured against its own principle's gold (its curve names the ``principle``; issue 22)."""
    from orchestrator.config.members import OBJECTIVES, ensemble_sets
    from orchestrator.math.ensembles import ensemble_scores, member_scales

    temperature = cfg.proxy.member_scaling == "temperature"
    inputs = {"stage": "bon", "v": 5, "sample": sample.key, "proxies": [p.key for p in proxies],
              "extras": [p.key for p in extras], "bon": to_dict(cfg.bon), "n_max": cfg.n_max, "seed": cfg.seed,
              "diversity": list(cfg.proxy.ensemble_sources), "scaling": cfg.proxy.member_scaling,
              "uwo_lambda": cfg.rl.uwo_lambda, **({"calibration": calib.key} if temperature and calib else {}),
              **({"principled": [p.key for p in principled]} if principled else {}),
              **gold_key(cfg)}

    def fn(out: Path) -> dict:
        samples, rows = _bon_rows(task, sample)
        uniq, back = _unique_rows(rows)
        g, principles = score_gold(cfg, uniq)
        samples["score.gold"] = g[back].tolist()
        for p, v in principles.items():
            samples[f"score.gold.{p}"] = v[back].tolist()
        def add_scores(p: StageResult) -> str:  # a proxy's pool scores as the column score.<name>
            name = proxy_name(p)
            sc = pq.read_table(p.dir / "bon_scores.parquet").to_pydict()
            if sc["prompt_id"] != samples["prompt_id"] or sc["sample_id"] != samples["sample_id"]:
                raise D.DataError(f"{p.dir}/bon_scores.parquet: rows do not match the best-of-n pool")
            samples[f"score.{name}"] = sc["score"]
            return name

        names = [add_scores(p) for p in [*proxies, *extras]]
        taus = json.loads((calib.dir / "calibration.json").read_text()) if temperature and calib else {}
        meta = {}
        for tag in dict.fromkeys(str((p.meta.get("inputs") or {}).get("tag", "")) for p in proxies):
            for ens in ensemble_sets(cfg, tag):
                if not all(m in names for m in ens["members"]):
                    continue
                pool = np.stack([np.asarray(samples[f"score.{m}"], float) for m in ens["members"]], 1)
                t = [(taus.get(m) or {}).get("tau") for m in ens["members"]]
                if temperature and any(x is None for x in t):
                    log.warning("%s: a member has no fitted tau (too few held-out pairs): no temperature-scaled "
                                "ensemble", ens["prefix"])
                    continue
                scales = member_scales(pool, cfg.proxy.member_scaling, t if temperature else None)
                for obj in OBJECTIVES:
                    name = f"{ens['prefix']}-{obj}"
                    samples[f"score.{name}"] = ensemble_scores(pool, scales, obj, cfg.rl.uwo_lambda).tolist()
                    names.append(name)
                    meta[name] = {"members": ens["members"], "objective": obj, "source": ens["source"],
                                  "scaling": cfg.proxy.member_scaling}
        by_principle: dict[str, list[str]] = {}
        for p in principled:
            by_principle.setdefault(str(p.meta["inputs"]["tag"]).rsplit("-", 1)[1], []).append(add_scores(p))
        D.write_table(samples, out / "bon_scores.parquet")
        result = bon_summary(samples, names, cfg.sample.bon_responses_per_prompt, cfg.n_max, cfg.bon.bootstrap,
                             stream(cfg.seed, "bon/bootstrap"))
        for pr, pnames in by_principle.items():  # against that principle's gold
            sub = {**samples, "score.gold": samples[f"score.gold.{pr}"]}
            for name, c in bon_summary(sub, pnames, cfg.sample.bon_responses_per_prompt, cfg.n_max, cfg.bon.bootstrap,
                                       stream(cfg.seed, "bon/bootstrap")).items():
                result[name] = {**c, "principle": pr}
        for name, m in meta.items():
            result[name].update(m)
        (out / "bon.json").write_text(json.dumps(result, indent=1))
        return {"unique_fraction": len(uniq["response"]) / len(back), "scored": len(uniq["response"])}

    return run_stage(run_dir, "bon", inputs, fn)


# --------------------------------------------------------------------------------------------
# the whole job


def run_frontier(cfg: FrontierConfig, run_dir: Path, progress: bool = True) -> dict:
    """Run (or resume) every stage and write frontier.json and the report; returns frontier.json."""
    from orchestrator.math.checks import bon_checks, rl_checks, sweep_checks
    from orchestrator.report.render import versions, write_report
    from orchestrator.run.cli import save_config
    from orchestrator.run.sweep import stage_sweep

    t0 = time.perf_counter()
    save_config(cfg, run_dir)
    task = stage_task(cfg, run_dir)
    models = {"policy": (cfg.sft.policy, cfg.cluster.learner)}
    if cfg.proxy.init == "lm" and not cfg.proxy.models:  # the policy's LM is reused where a proxy has its architecture
        models.update({s: (_proxy_model(cfg, s), cfg.cluster.proxy) for s in cfg.proxy.sizes})
    lms = stage_lms(cfg, run_dir, task, models, progress)
    sft = lms.pop("policy")
    lms = {s: lms[s] for s in cfg.proxy.names if s in lms}
    sample = stage_sample(cfg, run_dir, task, sft, progress)
    label = stage_label(cfg, run_dir, task, sample, progress)
    if cfg.label.source == "ai":  # RLAIF: the judge's labels train the proxies the sweep optimizes;
        proxies = stage_proxies(cfg, run_dir, task, sample, label, lms, progress, tag="-ai")
        if cfg.label.ai.compare_gold:  # gold labels of the same pairs train the comparison proxies
            proxies += stage_proxies(cfg, run_dir, task, sample, label, lms, progress, "preferences_gold.parquet")
    else:
        proxies = stage_proxies(cfg, run_dir, task, sample, label, lms, progress)
    tag = "-ai" if cfg.label.source == "ai" else ""
    # the ensembles' extra members (proxy.ensemble_diversity) and WARM: best-of-n curves, calibration, RL
    members = stage_extra_members(cfg, run_dir, task, sample, label, lms, progress, tag=tag)
    from orchestrator.run.warm import stage_warm

    def pool():
        samples, rows = _bon_rows(task, sample)
        return (samples, *_unique_rows(rows))

    members += stage_warm(cfg, run_dir, task, sample, proxies + members, pool, tag)
    members += stage_length_controlled(cfg, run_dir, task, sample, label, lms, progress, tag)
    principled = stage_principle_proxies(cfg, run_dir, task, sample, label, lms, progress)
    halves = (stage_disjoint_halves(cfg, run_dir, task, sample, label, lms, progress, tag=tag)
              if cfg.rl.enabled else [])
    from orchestrator.run.held_out import stage_calibration

    calib = stage_calibration(cfg, run_dir, task, label, proxies + members + principled)
    calibration = json.loads((calib.dir / "calibration.json").read_text())
    bon = stage_bon(cfg, run_dir, task, sample, proxies, progress, members, calib, principled)
    t_rl = time.perf_counter()
    learned = None
    if cfg.sweep.principle_learned and cfg.rl.enabled:
        lw = stage_learned_weights(cfg, run_dir, task, label, principled)
        learned = json.loads((lw.dir / "learned.json").read_text())
    rl = (stage_sweep(cfg, run_dir, task, sft, proxies + members + principled + halves, progress, calibration,
                      learned and learned["weights"])
          if cfg.rl.enabled else [])
    curves = json.loads((bon.dir / "bon.json").read_text())
    shutil.copyfile(calib.dir / "calibration.parquet", run_dir / "calibration.parquet")
    keys = ("tau", "acc", "nll", "brier", "ece", "nll_tau", "ece_tau", "pairs")
    params = {proxy_name(p): p.meta["params"] for p in proxies + members + principled}
    tags = {proxy_name(p): str((p.meta.get("inputs") or {}).get("tag", "")) for p in proxies + members + principled}
    for p in members:  # WARM's label tag: its members'
        if "warm_members" in p.meta:
            tags[proxy_name(p)] = tags[p.meta["warm_members"][0]]
    entries = []
    for p in proxies + members + principled:
        name = proxy_name(p)
        kind = ("warm" if "warm_members" in p.meta else "member" if p.meta.get("member")
                else "length_control" if "-lc-" in tags[name]
                else "principle" if tags[name].removeprefix("-") in PRINCIPLES else "proxy")
        entries.append({"proxy": name, "kind": kind, "proxy_params": p.meta["params"], "seed": cfg.seed,
                        "labels": "ai" if tags[name].startswith("-ai") else "gold",
                        **({"length_control": tags[name].rsplit("-lc-", 1)[1]} if kind == "length_control" else {}),
                        **({"principle": tags[name].removeprefix("-")} if kind == "principle" else {}),
                        "val_accuracy": p.meta.get("val_accuracy"), "val_ece": p.meta.get("val_ece"),
                        **({"members": p.meta["warm_members"]} if kind == "warm" else {}),
                        **({"source": p.meta.get("source", "seed")} if kind == "member" else {}),
                        "calibration": {k: calibration[name][k] for k in keys}, **curves[name]})
    for name, c in curves.items():  # the ensembles: curves of the aggregate, fitted like a single proxy
        if "members" in c:
            entries.append({"proxy": name, "kind": "ensemble", "proxy_params": sum(params[m] for m in c["members"]),
                            "seed": cfg.seed, "labels": "ai" if name.startswith("ensemble-ai") else "gold",
                            "calibration": ({k: calibration[name][k] for k in keys} if name in calibration else None),
                            **c})
    timings = {}
    for name, st in [("task", task), ("sft", sft), *[(f"lm-{k}", v) for k, v in lms.items() if v.key != sft.key],
                     ("sample", sample), ("label", label),
                     *[(proxy_name(p), p) for p in proxies + members + principled + halves],
                     ("calibration", calib), ("bon", bon)]:
        timings[name] = {"seconds": st.meta["seconds"], "cached": st.cached}
    if rl:
        all_cached = all([e.pop("cached") for e in rl])
        timings["rl-sweep"] = {"seconds": round(time.perf_counter() - t_rl, 2), "cached": all_cached,
                               "trials": len(rl), "trial_seconds": round(sum(e.get("seconds") or 0 for e in rl), 1)}
    if cfg.task.name == "dataset":  # what the dataset gave and what was dropped (too long, duplicates)
        frontier_task = {k: v for k, v in task.meta.items() if k not in ("seconds", "inputs")}
    else:
        frontier_task = None
    judge_cal = {k: calibration["judge"][k] for k in keys} if "judge" in calibration else None
    frontier = {"config_hash": config_digest(cfg), "versions": versions(), "seed": cfg.seed,
                **({"calibration_judge": judge_cal} if judge_cal else {}),
                **({"task": frontier_task} if frontier_task else {}),
                "bon": entries, "rl": rl,
                "label": {k: v for k, v in label.meta.items() if k not in ("seconds",)},
                "sft": {k: sft.meta.get(k) for k in ("loss_first", "loss_last", "params")},
                "timings": timings, "wall_seconds": round(time.perf_counter() - t0, 2)}
    # the findings are checked on the proxies of the run's own labels (the judge's, with label.source ai)
    main = "ai" if cfg.label.source == "ai" else "gold"
    bon_main = [e for e in entries if e["labels"] == main and e["kind"] == "proxy"]  # one per size
    rl_main = [e for e in rl if e.get("labels", "gold") == main]
    frontier["checks"] = bon_checks(bon_main)
    if cfg.label.source == "ai":
        from orchestrator.run.rlaif import compare_labels

        frontier["rlaif"] = compare_labels([e for e in entries if e["kind"] == "proxy"], rl)
    if rl:
        frontier["checks"]["bon_all_pass"] = frontier["checks"]["all_pass"]
        frontier["checks"]["rl"] = rl_checks(bon_main, rl_main)
        frontier["checks"]["sweep"] = sweep_checks(bon_main, rl_main)
        frontier["checks"]["all_pass"] = bool(frontier["checks"]["all_pass"] and frontier["checks"]["rl"]["all_pass"]
                                              and frontier["checks"]["sweep"]["all_pass"])
    weighted = [e for e in rl if e.get("size") == "principles"]
    if weighted:  # the per-principle runs' front (issue 22): weighted, per-family, learned, constrained
        from orchestrator.math.pareto import pareto_section

        frontier["pareto"] = pareto_section(weighted, list(cfg.proxy.principles))
        if learned:
            frontier["pareto"]["learned"] = learned
    if cfg.generalization.enabled:  # length, domain, fine-tuning (issue 21)
        from orchestrator.run.generalization import generalization_section

        frontier["generalization"], ran = generalization_section(cfg, run_dir, task, sample, label, bon, calib,
                                                                 proxies, [e["proxy"] for e in bon_main], rl, progress)
        timings.update({name: {"seconds": st.meta["seconds"], "cached": st.cached} for name, st in ran.items()})
    monitored = [{"trial": e["trial"], "steps": [p["step"] for p in e["points"]], "kl": [p["kl"] for p in e["points"]],
                  "gold": [p["gold"] for p in e["points"]], "gold_se": e["gold_se_per_eval"], "signals": e["monitor"]}
                 for e in rl if "monitor" in e and e.get("gold_se_per_eval")
                 and all(x is not None for x in e["gold_se_per_eval"])
                 and all(math.isfinite(p["gold"]) for p in e["points"])]
    if monitored:  # the gold-free detectors, scored against the runs' gold (issue 19)
        from orchestrator.math.monitor import monitor_section

        frontier["monitor"] = monitor_section(cfg.monitor.rules(), monitored)
    write_report(run_dir, frontier, {"timings": timings, "calibration": calibration})
    return frontier
