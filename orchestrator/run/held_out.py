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
import torch

from actors.reward_ensemble import RewardEnsemble
from orchestrator.config.schema import FrontierConfig
from orchestrator.data import tables as D
from orchestrator.data.checkpoint import stream
from orchestrator.data.tables import preference_arrays
from orchestrator.math.rl import aggregate
from orchestrator.run.actor_group import ActorGroup
from orchestrator.run.roles import tokenizer_dir
from orchestrator.run.stages import StageResult, run_stage


def stage_calibration(cfg: FrontierConfig, run_dir: Path, task: StageResult, label: StageResult,
                      proxies: list[StageResult]) -> StageResult:
    """Every proxy scores its held-out pairs (the validation prompts its training left out, by the
    same split): ``calibration.parquet`` with one row per (reward model, pair) -- ``rm, pair_id, delta,
    label`` (delta = r(a) - r(b) as the model scores it, label = P(a preferred) as its training
    labels say) -- and ``calibration.json``: ``calibration_summary`` per model (issue 20). The models:
    each proxy, and the ensembles of the proxies of one label source (``ensemble-mean`` and each of
    ``rl.ensemble_objectives``; members standardized on the best-of-n pool, Coste et al.'s WCO / UWO)."""
    from orchestrator.math.calibration import calibration_summary, reliability
    from orchestrator.run.stages import proxy_name

    def labels_of(p: StageResult) -> str:
        return (p.meta.get("inputs") or {}).get("labels", "preferences.parquet")

    inputs = {"stage": "calibration", "v": 2, "label": label.key, "proxies": [p.key for p in proxies],
              "val_fraction": cfg.proxy.val_fraction, "seed": cfg.seed,
              "ensembles": list(cfg.rl.ensemble_objectives), "uwo_lambda": cfg.rl.uwo_lambda}

    def fn(out: Path) -> dict:
        cols = {"rm": [], "pair_id": [], "delta": [], "label": []}
        summary = {}
        for labels in dict.fromkeys(labels_of(p) for p in proxies):
            group = [p for p in proxies if labels_of(p) == labels]
            data = preference_arrays(label.dir / labels, cfg.proxy.val_fraction, stream(cfg.seed, "proxy/val"))
            val = np.flatnonzero(data["val"])
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
            deltas = {name: v[ia, j] - v[ib, j] for j, name in enumerate(sc.members)}
            if len(group) >= 2:  # the ensembles of these proxies: members standardized on the best-of-n pool
                z = np.stack([(v[:, j] - mu) / sd for j, (mu, sd) in enumerate(_norms(group))], 1)
                lab = "-ai" if all(n.endswith("-ai") for n in sc.members) else ""
                for obj in dict.fromkeys(("mean", *cfg.rl.ensemble_objectives)):
                    agg = aggregate(torch.from_numpy(z), obj, cfg.rl.uwo_lambda).numpy()
                    deltas[f"ensemble{lab}-{obj}"] = agg[ia] - agg[ib]
            for name, d in deltas.items():
                cols["rm"] += [name] * len(d)
                cols["pair_id"] += val.tolist()
                cols["delta"] += d.tolist()
                cols["label"] += y.tolist()
                if len(d) < 2:  # too few held-out pairs to fit tau on one half and measure on the other
                    summary[name] = {**dict.fromkeys(("tau", "acc", "nll", "brier", "ece", "nll_tau", "ece_tau")),
                                     "pairs": len(d), "reliability": [], "reliability_tau": []}
                    continue
                s = calibration_summary(d, y, stream(cfg.seed, f"calibration/{name}"))
                summary[name] = {**s, "reliability": reliability(d, y), "reliability_tau": reliability(d, y, s["tau"])}
        D.write_table(cols, out / "calibration.parquet")
        (out / "calibration.json").write_text(json.dumps(summary, indent=1))
        return {"rms": len(summary), "rows": len(cols["rm"])}

    return run_stage(run_dir, "calibration", inputs, fn)


def _norms(proxies: list[StageResult]) -> list[tuple[float, float]]:
    """Each proxy's (mean, std) over the best-of-n pool, the SFT policy's samples (as the RL loop
    standardizes ensemble members, ``rl.normalize_proxies``)."""
    out = []
    for p in proxies:
        s = np.asarray(pq.read_table(p.dir / "bon_scores.parquet", columns=["score"])["score"], np.float64)
        out.append((float(s.mean()), float(max(s.std(), 1e-6))))
    return out
