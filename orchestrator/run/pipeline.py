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
from actors.rollout_generator import RolloutGenerator
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
from orchestrator.run.labels import _gold_pairs, stage_label  # noqa: F401  (re-exported)
from orchestrator.run.own_data import stage_dataset_task
from orchestrator.run.progress import as_completed, wait
from orchestrator.run.proxies import (  # noqa: F401  (re-exported: jobs.active, proxy_factors and the tests use them)
    _bon_rows,
    _cost,
    _join_prompts,
    _train_proxies,
    _unique_rows,
    stage_disjoint_halves,
    stage_learned_weights,
    stage_length_controlled,
    stage_principle_proxies,
    stage_proxies,
)
from orchestrator.run.roles import gold_key, score_gold, tokenizer_dir
from orchestrator.run.stages import (
    StageResult,
    begin,
    cached,
    commit,
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
    from orchestrator.run.service import write_manifest

    # what `python -m jobs.serve` serves (issue 23): written before frontier.json marks the run finished
    write_manifest(cfg, run_dir, task, proxies + members + principled + halves, calibration)
    write_report(run_dir, frontier, {"timings": timings, "calibration": calibration})
    return frontier
