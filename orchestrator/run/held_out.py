"""The calibration stage (issue 20): every proxy's held-out pairs scored, ``calibration.parquet``
(one row per reward model and pair, so anyone can recompute every number) and the summaries of
``orchestrator.math.calibration`` (tau, acc, NLL, Brier, ECE at tau = 1 and at the fitted tau,
reliability bins)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray

from actors.reward_ensemble import RewardEnsemble
from orchestrator.config.schema import FrontierConfig
from orchestrator.data import tables as D
from orchestrator.data.checkpoint import stream
from orchestrator.data.tables import preference_arrays
from orchestrator.run.actor_group import ActorGroup
from orchestrator.run.roles import tokenizer_dir
from orchestrator.run.stages import StageResult, run_stage


def stage_calibration(cfg: FrontierConfig, run_dir: Path, task: StageResult, label: StageResult,
                      proxies: list[StageResult]) -> StageResult:
    """Every reward model scored on its held-out pairs (the validation prompts its training left out,
    by the same split, and every pair of ``proxy.holdout_families``): ``calibration.parquet`` with one row per (reward model, pair) -- ``rm,
    pair_id, delta, label`` (delta = r(a) - r(b) as the model scores it, label = P(a preferred) as
    its training labels say) -- and ``calibration.json``: ``calibration_summary`` per model (issue
    20). The models: each proxy (the extra ensemble members and WARM included); every ensemble of
    ``orchestrator.config.members.ensemble_sets`` under mean, WCO and UWO, members scaled first by
    ``proxy.member_scaling`` (standardized on the best-of-n pool, or centred there and divided by
    their own fitted tau -- fitted on the first half of the held-out pairs, as theirs); and with
    ``label.source: ai`` the judge itself (delta = the logit of its soft label, label = gold's)."""
    from orchestrator.config.members import OBJECTIVES, ensemble_sets
    from orchestrator.math.calibration import calibration_summary, reliability
    from orchestrator.math.ensembles import ensemble_scores, member_scales
    from orchestrator.run.stages import held_out_pairs, proxy_name

    def labels_of(p: StageResult) -> str:
        return (p.meta.get("inputs") or {}).get("labels", "preferences.parquet")

    def label_file(p: StageResult) -> str:  # a WARM stage has no labels of its own: its first member's
        return labels_of(by_name[p.meta["warm_members"][0]]) if "warm_members" in p.meta else labels_of(p)

    by_name = {proxy_name(p): p for p in proxies}
    inputs = {"stage": "calibration", "v": 3, "label": label.key, "proxies": [p.key for p in proxies],
              "val_fraction": cfg.proxy.val_fraction, "seed": cfg.seed, "objectives": list(OBJECTIVES),
              "uwo_lambda": cfg.rl.uwo_lambda, "scaling": cfg.proxy.member_scaling,
              "diversity": list(cfg.proxy.ensemble_sources), "judge": cfg.label.source == "ai",
              **({"holdout": list(cfg.proxy.holdout_families)} if cfg.proxy.holdout_families else {})}

    def fn(out: Path) -> dict:
        cols = {"rm": [], "pair_id": [], "delta": [], "label": []}
        summary = {}

        def add(name: str, d: np.ndarray, y: np.ndarray, val: np.ndarray) -> None:
            cols["rm"] += [name] * len(d)
            cols["pair_id"] += val.tolist()
            cols["delta"] += d.tolist()
            cols["label"] += y.tolist()
            if len(d) < 2:  # too few held-out pairs to fit tau on one half and measure on the other
                summary[name] = {**dict.fromkeys(("tau", "acc", "nll", "brier", "ece", "nll_tau", "ece_tau")),
                                 "pairs": len(d), "reliability": [], "reliability_tau": []}
                return
            s = calibration_summary(d, y, stream(cfg.seed, f"calibration/{name}"))
            summary[name] = {**s, "reliability": reliability(d, y), "reliability_tau": reliability(d, y, s["tau"])}

        for labels in dict.fromkeys(label_file(p) for p in proxies):
            group = [p for p in proxies if label_file(p) == labels]
            data = preference_arrays(label.dir / labels, cfg.proxy.val_fraction, stream(cfg.seed, "proxy/val"))
            val = np.flatnonzero(np.asarray(data["val"], bool) | held_out_pairs(cfg, task, data))
            a, b = np.asarray(data["a"])[val], np.asarray(data["b"])[val]
            need = sorted(set(a.tolist()) | set(b.tolist()))
            where = {t: i for i, t in enumerate(need)}
            rows = {"prompt": [data["texts"][t][0] for t in need], "response": [data["texts"][t][1] for t in need]}
            members = [{"name": proxy_name(p), "kind": "hf", "path": str(p.dir / "model"), "head": "trained"}
                       for p in group]
            grp = ActorGroup(RewardEnsemble, cfg.cluster.proxy, "proxy", members, tokenizer_dir(task), replicas=1,
                             chat_template=cfg.task.dataset.chat_template)
            try:
                sc = ray.get(grp.one("score", rows))
            finally:
                grp.shutdown()
            v = np.asarray(sc.values, float)
            ia, ib = [where[t] for t in a.tolist()], [where[t] for t in b.tolist()]
            y = np.asarray(data["p_a"], float)[val]
            col = {name: j for j, name in enumerate(sc.members)}
            for name, j in col.items():
                add(name, v[ia, j] - v[ib, j], y, val)
            tags = {str((p.meta.get("inputs") or {}).get("tag", "")) for p in group if "warm_members" not in p.meta}
            tags &= {"", "-ai"}  # ensembles of the job's own proxies (not of length-controlled or per-principle ones)
            for tag in sorted(tags):  # the ensembles whose members are all in this group
                for ens in ensemble_sets(cfg, tag):
                    if not all(m in col for m in ens["members"]):
                        continue
                    taus = [summary[m]["tau"] for m in ens["members"]]
                    if cfg.proxy.member_scaling == "temperature" and any(t is None for t in taus):
                        continue  # a member without a fitted tau (too few pairs): no temperature scaling
                    scales = member_scales(_pool(by_name[m] for m in ens["members"]), cfg.proxy.member_scaling, taus)
                    sub = v[:, [col[m] for m in ens["members"]]]
                    for obj in OBJECTIVES:
                        agg = ensemble_scores(sub, scales, obj, cfg.rl.uwo_lambda)
                        add(f"{ens['prefix']}-{obj}", agg[ia] - agg[ib], y, val)
        if cfg.label.source == "ai":  # the judge's soft labels against gold's, on the same held-out pairs
            data = preference_arrays(label.dir / "preferences.parquet", cfg.proxy.val_fraction,
                                     stream(cfg.seed, "proxy/val"))
            gold = preference_arrays(label.dir / "preferences_gold.parquet", cfg.proxy.val_fraction,
                                     stream(cfg.seed, "proxy/val"))
            val = np.flatnonzero(np.asarray(data["val"], bool) | held_out_pairs(cfg, task, data))
            if list(data["a"]) != list(gold["a"]) or list(data["b"]) != list(gold["b"]):
                raise D.DataError(f"{label.dir}: the judge's and gold's preference files hold other pairs")
            pj = np.clip(np.asarray(data["p_a"], float)[val], 1e-6, 1 - 1e-6)
            add("judge", np.log(pj) - np.log1p(-pj), np.asarray(gold["p_a"], float)[val], val)
        D.write_table(cols, out / "calibration.parquet")
        (out / "calibration.json").write_text(json.dumps(summary, indent=1))
        return {"rms": len(summary), "rows": len(cols["rm"])}

    return run_stage(run_dir, "calibration", inputs, fn)


def _pool(proxies) -> np.ndarray:
    """``[N, k]``: each proxy's scores of the best-of-n pool (the SFT policy's samples)."""
    return np.stack([np.asarray(pq.read_table(p.dir / "bon_scores.parquet", columns=["score"])["score"], np.float64)
                     for p in proxies], 1)
