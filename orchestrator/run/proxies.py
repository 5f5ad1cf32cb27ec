"""The proxy stages of the main job: Bradley-Terry proxies per size (``stage_proxies``), the
disjoint-labels halves, length-controlled proxies (issue 21), per-principle proxies and their
learned weights (issue 22) -- each a cached stage that trains in a ``RewardEnsemble`` actor and
scores the best-of-n pool while the model is loaded -- and the pool's rows they all read.
``orchestrator.run.pipeline`` assembles the job from these (and re-exports them)."""

from __future__ import annotations

import json
import logging
import random
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray

from actors.reward_ensemble import RewardEnsemble
from orchestrator.config.members import principle_size, principle_tag
from orchestrator.config.schema import FrontierConfig
from orchestrator.data import tables as D
from orchestrator.data.checkpoint import stream
from orchestrator.data.tables import preference_arrays
from orchestrator.run.actor_group import ActorGroup
from orchestrator.run.progress import as_completed
from orchestrator.run.roles import tokenizer_dir
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


def _join_prompts(samples: dict, prompts: dict) -> dict:
    pid = {p: i for i, p in enumerate(prompts["prompt_id"])}
    rows = [pid[p] for p in samples["prompt_id"]]
    return {"prompt": [prompts["prompt"][i] for i in rows], "family": [prompts["family"][i] for i in rows],
            "meta": [prompts["meta"][i] for i in rows], "response": samples["response"]}


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


