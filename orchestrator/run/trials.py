"""The sweep's trials (``jobs.sweep --list`` prints them): the grid of RL runs in launch order --
ensemble objectives, WARM, length-controlled proxies, the per-principle aggregations and
constrained runs (issue 22), the disjoint-labels judge, every proxy size x KL coefficient -- as
``RunSpec``s with the trained proxies as members, and each trial's directory, keyed by everything
its result depends on. ``orchestrator.run.sweep`` runs them on Tune (and re-exports these)."""

from __future__ import annotations

import logging
from pathlib import Path

from orchestrator.config.members import (
    ensemble_sets,
    lc_sizes,
    lc_tag,
    principle_size,
    warm_name,
)
from orchestrator.config.schema import FrontierConfig, digest, to_dict
from orchestrator.math.rl import (
    constrained_objective,
    family_objective,
    weighted_objective,
)
from orchestrator.run.pareto import constraint_spec, proxy_points
from orchestrator.run.stages import StageResult

log = logging.getLogger("rlhf_frontier")


# --------------------------------------------------------------------------------------------
# the grid


def grid(cfg: FrontierConfig) -> list[dict]:
    """The sweep's trials in launch order, needing no trained proxy (``jobs.sweep --list`` prints
    this): per seed, each ensemble objective over all sizes (no penalty; the costliest trials first,
    so no straggler runs alone at the end), then each proxy size (``rl.sizes``, default all; largest
    first) x each KL coefficient. Names are unique and stable."""
    seeds = list(cfg.sweep.seeds) or [cfg.seed]
    tag = lambda seed: f"-s{seed}" if len(seeds) > 1 else ""  # noqa: E731
    lab = "-ai" if cfg.label.source == "ai" else ""  # the proxies the sweep optimizes: the judge-trained ones
    out = []
    for seed in seeds:
        for ens in ensemble_sets(cfg, lab):  # the size ensemble, then Coste et al.'s one-size ensembles
            extra = {} if ens["source"] == "size" else {"member_ids": ens["member_ids"], "source": ens["source"]}
            out += [{"name": f"{ens['prefix']}-{obj}{tag(seed)}", "sizes": ens["sizes"], "objective": obj,
                     "kl_coef": 0.0, "seed": seed, "tag": lab, **extra} for obj in cfg.rl.ensemble_objectives]
        if cfg.proxy.warm:  # WARM: the weight-averaged proxy, optimized like a single one
            z = cfg.proxy.seed_size
            out.append({"name": f"{warm_name(cfg, lab)}-kl0{tag(seed)}", "sizes": [z], "member_ids": ["-warm"],
                        "objective": cfg.rl.objective, "kl_coef": 0.0, "seed": seed, "tag": lab, "source": "warm"})
        for mode in cfg.generalization.length_controls:  # length-controlled proxies, no penalty (issue 21)
            out += [{"name": f"proxy-{z}{lc_tag(lab, mode)}-kl0{tag(seed)}", "sizes": [z],
                     "member_ids": [f"-lc-{mode}"], "objective": cfg.rl.objective, "kl_coef": 0.0, "seed": seed,
                     "tag": lab, "source": f"length-{mode}"} for z in lc_sizes(cfg)]
        if cfg.proxy.principles:  # fixed-weight aggregations of the per-principle proxies (issue 22)
            z = principle_size(cfg)
            for w in cfg.principle_weight_vectors():
                out.append({"name": f"principles-{z}-w{'-'.join(f'{x:g}' for x in w)}-kl0{tag(seed)}",
                            "sizes": [z] * len(w), "member_ids": [f"-{p}" for p in cfg.proxy.principles],
                            "objective": weighted_objective(w), "kl_coef": 0.0, "seed": seed, "tag": lab,
                            "weights": list(w), "aggregation": "fixed"})
            k, ids = len(cfg.proxy.principles), [f"-{p}" for p in cfg.proxy.principles]
            if cfg.sweep.principle_learned:  # its weights come from the learned-weights stage (trial_specs)
                out.append({"name": f"principles-{z}-learned-kl0{tag(seed)}", "sizes": [z] * k,
                            "member_ids": ids, "objective": "learned",
                            "kl_coef": 0.0, "seed": seed, "tag": lab, "weights": "learned",
                            "aggregation": "learned"})
            if cfg.pareto.family_weights:  # task-dependent weights: each prompt family its own vector
                fw = {f: list(w) for f, w in cfg.pareto.family_weights.items()}
                out.append({"name": f"principles-{z}-family-kl0{tag(seed)}", "sizes": [z] * k, "member_ids": ids,
                            "objective": family_objective(fw), "kl_coef": 0.0, "seed": seed, "tag": lab,
                            "weights": {"family": fw}, "aggregation": "family"})
            mx = cfg.pareto.constraint_maximize
            for level in cfg.pareto.constraint_levels:  # constrained RL, one trial per constraint level
                out.append({"name": f"principles-{z}-max-{mx}-c{level:g}-kl0{tag(seed)}", "sizes": [z] * k,
                            "member_ids": ids, "kl_coef": 0.0, "seed": seed, "tag": lab,
                            "objective": constrained_objective(None if mx == "mean" else cfg.proxy.principles.index(mx)),
                            "constraints": {"maximize": mx, "level": float(level), "base": cfg.pareto.constraint_base},
                            "aggregation": "constrained"})
        if cfg.monitor.disjoint_size:  # the disjoint-labels judge's run: half a's proxy, monitored by half b
            z = cfg.monitor.disjoint_size
            out.append({"name": f"proxy-{z}{lab}-half-a-kl0{tag(seed)}", "sizes": [z], "member_ids": ["-half-a"],
                        "objective": cfg.rl.objective, "kl_coef": 0.0, "seed": seed, "tag": lab, "half": True})
        out += [{"name": f"proxy-{s}{lab}-kl{kl:g}{tag(seed)}", "sizes": [s], "objective": cfg.rl.objective,
                 "kl_coef": float(kl), "seed": seed, "tag": lab}
                for s in reversed(cfg.rl.sizes or cfg.proxy.names) for kl in cfg.sweep.kl_coefs]
        if lab and cfg.label.ai.compare_gold:  # RLAIF beside gold labels: the same pairs, no penalty
            out += [{"name": f"proxy-{s}-kl0{tag(seed)}", "sizes": [s], "objective": cfg.rl.objective,
                     "kl_coef": 0.0, "seed": seed, "tag": ""} for s in reversed(cfg.rl.sizes or cfg.proxy.names)]
    return out


def trial_specs(cfg: FrontierConfig, proxies: list[StageResult], calibration: dict | None = None,
                learned: list[float] | None = None) -> list:
    """``grid`` as ``RunSpec``s with the trained proxies as members (``calibration``: the calibration
    stage's summaries, whose taus scale members under ``proxy.member_scaling: temperature``;
    ``learned``: the learned principle weights, ``sweep.principle_learned``'s trial's)."""
    from orchestrator.run.rl_loop import RunSpec
    from orchestrator.run.rl_stage import proxy_member
    from orchestrator.run.stages import proxy_name

    by_name = {proxy_name(p): p for p in proxies}
    members = {n: proxy_member(cfg, p, ((calibration or {}).get(n) or {}).get("tau")) for n, p in by_name.items()}

    def names(t: dict) -> list[str]:
        return [f"proxy-{s}{t['tag']}{m}" for s, m in zip(t["sizes"], t.get("member_ids", [""] * len(t["sizes"])))]

    def labels(t: dict) -> dict:
        if "weights" in t or "constraints" in t:  # an aggregation of per-principle proxies: out of the size checks
            how = {"weights": t["weights"]} if "weights" in t else {"constraints": t["constraints"]}
            return {"size": "principles", "member_size": t["sizes"][0], **how, "aggregation": t["aggregation"],
                    "seed": t["seed"],
                    "labels": "ai" if t["tag"] else "gold"}
        if t.get("half"):  # not a run of the job's own proxies: kept out of the findings' checks
            return {"size": t["sizes"][0], "seed": t["seed"], "labels": ("ai" if t["tag"] else "gold") + "-half"}
        src = {"seed": "seeds"}.get(t.get("source", ""), t.get("source", ""))
        kind = ({"size": "ensemble" if len(t["sizes"]) > 1 else t["sizes"][0], "ensemble": src,
                 "member_size": t["sizes"][0]} if src
                else {"size": t["sizes"][0]} if len(t["sizes"]) == 1
                else {"size": "ensemble"})  # (size ensembles: no "ensemble" key, as before seed ensembles existed)
        return {**kind, "seed": t["seed"], "labels": "ai" if t["tag"] else "gold"}

    trials = grid(cfg)
    for t in trials:  # the learned-weights trial: its weights, from the stage that learned them
        if t.get("weights") == "learned":
            if learned is None:
                raise ValueError(f"trial {t['name']}: sweep.principle_learned needs the learned weights")
            t["weights"], t["objective"] = [float(x) for x in learned], weighted_objective(learned)
    # each proxy's labels, from its stage's inputs ("-ai": the judge's; no tag: gold), whether or not a
    # trial trains on it (with rl.sizes narrowed, the other sizes still judge)
    tag_of = {n: str(p.meta.get("inputs", {}).get("tag", "")) for n, p in by_name.items()}

    def monitors(t: dict) -> tuple:  # the monitor's independent judges: proxies of its labels it does not train on
        if "weights" in t or "constraints" in t:  # the per-principle runs: their members judge each other
            return ()
        if t.get("half"):  # half a's run: judged by half b alone, which saw none of its labels
            return tuple(members[n.replace("-half-a", "-half-b")] for n in names(t))
        return tuple(members[n] for n in by_name if n not in names(t) and tag_of.get(n) == t["tag"]
                     and "-half-" not in n and "warm_members" not in by_name[n].meta
                     and by_name[n].meta.get("source") is None)  # other sizes and seed members of its labels

    missing = [t["name"] for t in trials if any(n not in members for n in names(t))]
    if missing:  # a principle whose gold tied on every pair has no proxy (stage_principle_proxies warned)
        log.warning("sweep: %d trial(s) without every member's proxy are left out: %s", len(missing), missing)
        trials = [t for t in trials if t["name"] not in missing]
    points = proxy_points(cfg) if any("constraints" in t for t in trials) else None
    return [RunSpec(t["name"], tuple(members[n] for n in names(t)), t["objective"], t["kl_coef"],
                    sum(by_name[n].meta["params"] for n in names(t)), labels=labels(t), monitors=monitors(t),
                    constraints=constraint_spec(cfg, t["constraints"], points,
                                                [members[n].get("norm", (0.0, 1.0))[1] for n in names(t)])
                    if "constraints" in t else {})
            for t in trials]


def trial_dir(cfg: FrontierConfig, run_dir: Path, task: StageResult, sft: StageResult, spec) -> Path:
    """A trial's directory, keyed by everything its result depends on (so a changed config never
    picks up another run's checkpoints, and an unchanged one never recomputes)."""
    from orchestrator.run.roles import gold_key

    rl_cfg = to_dict(cfg.rl)
    for k in cfg.rl.SWEEP_ONLY:
        rl_cfg.pop(k)
    key = digest({"stage": "rl", "v": 2, "task": task.key, "sft": sft.key, "rl": rl_cfg,
                  "seed": spec.labels.get("seed", cfg.seed), "objective": spec.objective, "kl_coef": spec.kl_coef,
                  "members": [m["stage"] for m in spec.members], **gold_key(cfg),
                  **({"scaling": [m.get("scaling") for m in spec.members]}  # proxy.member_scaling temperature
                     if any(m.get("scaling") for m in spec.members) else {}),
                  # the monitor's independent judges: their scores are in the run's records
                  **({"monitors": [m["stage"] for m in spec.monitors]} if spec.monitors else {}),
                  **({"constraints": spec.constraints} if spec.constraints else {})})[:16]
    return run_dir / "rl" / f"{spec.name}-{key}"
