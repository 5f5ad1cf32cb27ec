"""``python -m jobs.active``: pool-based active learning of the proxy, each acquisition function
against a random arm with the same label budget (issue 19; the seed's "active learning": find where
the RM is uncertain and spend new labels there).

The candidates are the labelling pool's pairs (the SFT policy's samples and the demonstration mix,
every within-prompt pair; the label stage's ``preferences.parquet``: gold labels, or the AI judge's
with ``label.source: ai``) outside the validation prompts. Their labels are computed once by the
label stage and *revealed* only when a pair is acquired: the budget is what the proxies see, not
what the labeller was asked (a simulation of pool-based acquisition, as Gleave & Irving 2022 run
it). Every arm starts from the same ``active.initial`` random pairs. Each round, for every arm:

1. an ensemble of ``active.members`` proxies of ``active.size`` (one LM, seeds differ) is trained
   from that LM on the arm's labelled pairs (a fresh start each round: every round's model sees its
   labels once, as the job's own proxies do);
2. it scores every pool text and the best-of-n pool: held-out pair accuracy, ECE, and the
   best-of-n gold curve of the ensemble mean (members standardized on the best-of-n pool), its
   measured peak and that peak's KL, and the Gao fit's;
3. ``active.per_round`` more pairs are acquired by the arm's function (``orchestrator.math.active``)
   among the pairs it has not labelled.

Rounds of one labelled set are cached stages (``stages/active-*``), shared by arms that hold the
same set (round 0) and by reruns: a killed job resumes at the round it was in. Writes
``active.json`` (the rows), ``active.png`` (each measure against labels) and ``active.md``.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import ray

from actors.reward_ensemble import RewardEnsemble
from orchestrator.config.schema import FrontierConfig, config_digest, digest
from orchestrator.data.checkpoint import stream
from orchestrator.math.active import (
    bootstrap_by_prompt,
    choose,
    disagreement,
    sigmoid,
    versus_random,
)
from orchestrator.math.bon import bon_summary
from orchestrator.math.calibration import ece, pair_accuracy
from orchestrator.run.actor_group import ActorGroup
from orchestrator.run.pipeline import (
    _bon_rows,
    _proxy_model,
    _unique_rows,
    preference_arrays,
    stage_label,
    stage_lms,
    stage_sample,
    stage_task,
)
from orchestrator.run.progress import as_completed
from orchestrator.run.roles import gold_key, score_gold, tokenizer_dir
from orchestrator.run.stages import StageResult, begin, cached, commit, run_stage, stage

log = logging.getLogger("rlhf_frontier")


def _bon_gold(cfg: FrontierConfig, run_dir: Path, task: StageResult, sample: StageResult) -> StageResult:
    """Gold of the best-of-n pool's distinct texts (cached; the best-of-n stage computes the same)."""

    def fn(out: Path) -> dict:
        _, rows = _bon_rows(task, sample)
        uniq, _ = _unique_rows(rows)
        g, _ = score_gold(cfg, uniq)
        np.save(out / "gold.npy", g, allow_pickle=False)
        return {"texts": len(g)}

    return run_stage(run_dir, "bon-gold", {"stage": "bon-gold", "v": 1, "sample": sample.key, **gold_key(cfg)}, fn)


def _subset(data: dict, pairs: np.ndarray) -> dict:
    """The training data restricted to labelled ``pairs`` (repeats kept: a bootstrap draw) plus
    every validation pair."""
    keep = np.concatenate([np.asarray(pairs, dtype=np.int64), np.flatnonzero(data["val"])])
    return {"texts": data["texts"], **{k: [data[k][i] for i in keep] for k in ("a", "b", "p_a", "group", "val")}}


def _train_rounds(cfg: FrontierConfig, run_dir: Path, task: StageResult, lm: StageResult | None, size: str,
                  label: StageResult, data: dict, bon_ref, sets: dict[str, np.ndarray],
                  progress: bool) -> dict[str, StageResult]:
    """One cached stage per distinct labelled set: the ensemble trained on it, its scores of every
    pool text (``text_scores.npy`` [texts, members]) and of the best-of-n pool's distinct texts
    (``bon_scores.npy``). One actor per set (``cluster.proxy``), sets in parallel; with
    ``active.bootstrap`` each member trains on its own resample of the set."""
    a = cfg.active
    pc = cfg.proxy.per_proxy()
    if cfg.proxy.models:  # as the job's own proxies: a base model of the user's reads through its template
        pc["template"] = cfg.task.dataset.chat_template
    stages = {}
    for arm, ids in sets.items():
        inputs = {"stage": "active", "v": 1, "label": label.key, "size": size, "members": a.members,
                  "bootstrap": a.bootstrap, "init": lm.key if lm else None, "proxy": pc, "seed": cfg.seed,
                  **({"model": cfg.proxy.model_of(size)} if cfg.proxy.models else {}),
                  "labelled": digest(sorted(int(i) for i in ids)), "n": len(ids)}
        stages[arm] = stage(run_dir, "active", inputs)
    out = {arm: cached(st) for arm, st in stages.items() if st.done}
    todo: dict[str, list[str]] = {}  # stage key -> arms sharing it
    for arm, st in stages.items():
        if arm not in out:
            todo.setdefault(st.key, []).append(arm)
    texts = ray.put({"prompt": [p for p, _ in data["texts"]], "response": [r for _, r in data["texts"]]})
    calls = {}
    for key, arms in todo.items():
        st = stages[arms[0]]
        tmp = begin(st)
        ids = sets[arms[0]]
        sub_data = _subset(data, ids)  # its first len(ids) pairs are the labelled ones, in ids' order
        members, pairs = [], []
        for m in range(a.members):
            sub = f"active/{size}/m{m}"
            member = {"name": f"active-{size}-m{m}", "kind": "hf", "seed": stream(cfg.seed, f"{sub}/init")}
            if cfg.proxy.models:
                member["path"] = cfg.proxy.model_of(size)
            elif lm is not None:
                member["path"] = str(lm.dir / "policy")
            else:
                member.update(size=size, n_head=cfg.proxy.n_head, n_positions=cfg.sft.policy.n_positions)
            members.append(member)
            local = np.arange(len(ids))
            pairs.append((bootstrap_by_prompt(local, np.asarray(sub_data["group"]),
                                              np.random.default_rng(stream(cfg.seed, f"{sub}/boot/{st.key}")))
                          if a.bootstrap else local).tolist())
        grp = ActorGroup(RewardEnsemble, cfg.cluster.proxy, "proxy", members, tokenizer_dir(task), replicas=1,
                         progress=True, chat_template=cfg.task.dataset.chat_template)
        t0 = time.perf_counter()
        tr = grp.one("train", sub_data, cfg.proxy.epochs, cfg.proxy.prompts_per_step, cfg.proxy.lr,
                     stream(cfg.seed, f"active/{size}/train"), member_pairs=pairs)
        sc = grp.one("score", texts)
        calls[grp.one("score", bon_ref)] = (arms, grp, tr, sc, t0)
    poll = {f"active {'/'.join(v[0])}": v[1].actors[0] for v in calls.values()}
    for ref in as_completed(list(calls), "train ensembles", progress, poll):
        arms, grp, tr, sc, t0 = calls[ref]
        stats, ts, bs = ray.get([tr, sc, ref])
        grp.shutdown()
        tmp = stages[arms[0]].tmp
        np.save(tmp / "text_scores.npy", np.asarray(ts.values, float), allow_pickle=False)
        np.save(tmp / "bon_scores.npy", np.asarray(bs.values, float), allow_pickle=False)
        meta = {"seconds": round(time.perf_counter() - t0, 2), "labelled": len(sets[arms[0]]),
                "members": {k: {x: v[x] for x in ("val_accuracy", "val_ece", "params", "steps") if x in v}
                            for k, v in stats.items()}}
        res = commit(stages[arms[0]], meta)
        for arm in arms:
            out[arm] = res
    return out


def _measure(cfg: FrontierConfig, data: dict, ts: np.ndarray, bs: np.ndarray, bon: dict) -> dict:
    """A round's measures from its ensemble's scores of the pool texts (``ts``) and the best-of-n
    pool (``bs``): held-out accuracy / ECE of the ensemble mean (and each member's), and best-of-n of
    the ensemble mean against gold."""
    a, b, p_a, val = (np.asarray(data[k]) for k in ("a", "b", "p_a", "val"))
    p_a = p_a.astype(float)
    va, vb, pv = a[val], b[val], p_a[val]
    ens = ts.mean(axis=1)  # the members' logits averaged: the ensemble's Bradley-Terry score
    hard = pv != 0.5
    row = {"val_acc": pair_accuracy(ens[va], ens[vb], pv),
           "val_ece": ece(sigmoid(ens[va] - ens[vb])[hard], (pv[hard] > 0.5).astype(float)),
           "val_acc_members": float(np.mean([pair_accuracy(ts[va, j], ts[vb, j], pv) for j in range(ts.shape[1])]))}
    z = (bs - bs.mean(axis=0)) / np.maximum(bs.std(axis=0), 1e-12)  # members on one scale (rl.normalize_proxies)
    samples = {**bon["samples"], "score.ensemble": z.mean(axis=1)[bon["back"]].tolist()}
    curve = bon_summary(samples, ["ensemble"], cfg.sample.bon_responses_per_prompt, cfg.n_max, 0,
                        stream(cfg.seed, "active/bon"))["ensemble"]
    gold = np.array([p["gold"] for p in curve["points"]])
    k = int(np.argmax(gold))
    row.update(bon_peak_gold=float(gold[k]), bon_peak_kl=curve["points"][k]["kl"], bon_gold_at_nmax=float(gold[-1]),
               bon_fit_peak_gold=curve["fit"]["gold_peak"], bon_fit_peak_kl=curve["fit"]["kl_peak"],
               bon_fit_r2=curve["fit"]["r2"])
    return row


def run_active(cfg: FrontierConfig, run_dir: Path, progress: bool = True) -> dict:
    """Run (or resume) the stages the job needs and every arm's rounds; write active.json,
    active.png and active.md; return active.json."""
    from orchestrator.report.active import write_active
    from orchestrator.run.cli import save_config

    t0 = time.perf_counter()
    save_config(cfg, run_dir)
    a = cfg.active
    size = a.size or cfg.proxy.seed_size
    task = stage_task(cfg, run_dir)
    models = {"policy": (cfg.sft.policy, cfg.cluster.learner)}
    if cfg.proxy.init == "lm" and not cfg.proxy.models:
        models[size] = (_proxy_model(cfg, size), cfg.cluster.proxy)
    lms = stage_lms(cfg, run_dir, task, models, progress)
    sft = lms.pop("policy")
    lm = lms.get(size)
    sample = stage_sample(cfg, run_dir, task, sft, progress)
    label = stage_label(cfg, run_dir, task, sample, progress)
    gold = _bon_gold(cfg, run_dir, task, sample)

    data = preference_arrays(label.dir / "preferences.parquet", cfg.proxy.val_fraction, stream(cfg.seed, "proxy/val"))
    val = np.asarray(data["val"], bool)
    pool = np.flatnonzero(~val)
    need = a.budget
    if need > len(pool):
        from orchestrator.config.schema import ConfigError

        raise ConfigError(f"active: the budget initial + rounds x per_round = {need} exceeds the {len(pool)} "
                          "labelled pairs outside the validation prompts; lower active.initial / per_round / rounds")
    samples, rows = _bon_rows(task, sample)
    uniq, back = _unique_rows(rows)
    g = np.load(gold.dir / "gold.npy", allow_pickle=False)
    bon = {"samples": {"prompt_id": samples["prompt_id"], "sample_id": samples["sample_id"],
                       "response": samples["response"], "score.gold": g[back].tolist()}, "back": back}
    bon_ref = ray.put({"prompt": uniq["prompt"], "response": uniq["response"]})

    rng0 = np.random.default_rng(stream(cfg.seed, "active/initial"))
    first = np.sort(rng0.choice(pool, size=a.initial, replace=False))
    labelled = {arm: first for arm in a.arms}
    out_rows = []
    p_a = np.asarray(data["p_a"], float)
    for r in range(a.rounds + 1):
        log.info("active round %d/%d: %s labels per arm", r, a.rounds, len(first) + r * a.per_round)
        res = _train_rounds(cfg, run_dir, task, lm, size, label, data, bon_ref, labelled, progress)
        nxt, measured = {}, {}  # arms holding one set (round 0) share its stage: loaded and measured once
        for arm in a.arms:
            ids = labelled[arm]
            if res[arm].key not in measured:
                ts = np.load(res[arm].dir / "text_scores.npy", allow_pickle=False)
                bs = np.load(res[arm].dir / "bon_scores.npy", allow_pickle=False)
                measured[res[arm].key] = (ts, _measure(cfg, data, ts, bs, bon))
            ts, measures = measured[res[arm].key]
            row = {"arm": arm, "round": r, "labels": int(len(ids)),
                   "label_pos_share": float(np.mean(p_a[ids] > 0.5)), **measures,
                   "seconds": res[arm].meta["seconds"], "cached": res[arm].cached}
            if r < a.rounds:  # acquire the next round's pairs among the ones this arm has not labelled
                cand = np.setdiff1d(pool, ids)
                ca, cb = np.asarray(data["a"])[cand], np.asarray(data["b"])[cand]
                pick = cand[choose(arm, ts[ca], ts[cb], a.per_round, np.random.default_rng(
                    stream(cfg.seed, f"active/{arm}/{r}")))]
                dis = disagreement(ts[ca], ts[cb])
                row["acquired_disagreement"] = float(disagreement(ts[np.asarray(data["a"])[pick]],
                                                                  ts[np.asarray(data["b"])[pick]]).mean())
                row["pool_disagreement"] = float(dis.mean())
                nxt[arm] = np.sort(np.concatenate([ids, pick]))
            out_rows.append(row)
            log.info("active %-12s round %d: %5d labels  val acc %.3f  ece %.3f  bon peak gold %.3f at KL %.2f",
                     arm, r, row["labels"], row["val_acc"], row["val_ece"], row["bon_peak_gold"], row["bon_peak_kl"])
        labelled = nxt or labelled
    result = {"config_hash": config_digest(cfg), "seed": cfg.seed, "size": size, "members": a.members,
              "bootstrap": a.bootstrap,
              "arms": list(a.arms), "initial": a.initial, "per_round": a.per_round, "rounds": a.rounds,
              "pool_pairs": int(len(pool)), "val_pairs": int(val.sum()), "labels": cfg.label.source,
              "rows": out_rows, "versus_random": versus_random(out_rows),
              "wall_seconds": round(time.perf_counter() - t0, 2)}
    (run_dir / "active.json").write_text(json.dumps(result, indent=1))
    write_active(run_dir, result)
    return result
