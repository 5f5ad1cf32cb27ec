"""Reward-model generalization in the frontier job (issue 21): length, domain shift, domain
fine-tuning. The math is ``orchestrator.math.generalization``; this module reads the stages'
tables and writes frontier.json's ``generalization`` section (schema in the README).

* ``stage_generalization`` (cached, seconds): on the best-of-n pool -- the SFT policy's samples --
  every reward model's Spearman correlation with response length, the regression of gold on length
  and family, every best-of-n curve again in length-controlled gold, each proxy's best-of-n
  frontier per prompt family; on the held-out pairs, each reward model's accuracy and calibration
  per family, in- vs out-of-domain where ``proxy.holdout_families`` is set; the labels' own
  preference for the longer response.
* ``rl_generalization`` (pure, at assembly): each RL run's length drift, the objective's
  correlation with length along the run, length-controlled gold and its fit, per-family gold
  curves and the KL where each family's gold peaks.
* ``stage_finetune`` (behind ``generalization.finetune_budgets``): a proxy fine-tuned on k pairs of a
  held-out family, per budget: accuracy and calibration on that family and on the trained ones,
  and that family's best-of-n frontier.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray

from orchestrator.config.schema import FrontierConfig
from orchestrator.data.checkpoint import stream
from orchestrator.math import generalization as G
from orchestrator.math.bon import bon_summary
from orchestrator.math.scaling import fit_rl
from orchestrator.run.stages import StageResult, run_stage

log = logging.getLogger("rlhf_frontier")


def _peak(curve: dict) -> dict:
    """A best-of-n curve's peak: the fit's (kl, gold) and the best measured point."""
    pts = curve["points"]
    emp = G.empirical_peak([p["kl"] for p in pts], [p["gold"] for p in pts])
    return {"kl_peak_fit": curve["fit"].get("kl_peak"), "gold_peak_fit": curve["fit"].get("gold_peak"),
            "kl_peak": emp["kl"], "gold_peak": emp["gold"], "n_peak": pts[emp["index"]]["n"] if emp["index"] is not None
            else None}


def _slim(curve: dict) -> dict:
    """A curve without its bootstrap draws (frontier.json keeps those in ``bon`` only)."""
    return {k: v for k, v in curve.items() if k != "bootstrap"}


def stage_generalization(cfg: FrontierConfig, run_dir: Path, task: StageResult, label: StageResult,
                         bon: StageResult, calib: StageResult, main: list[str]) -> StageResult:
    """The length and domain analyses of the best-of-n pool and the held-out pairs (module doc).
    ``main``: the proxies whose per-family frontiers are drawn (one per size, the run's own labels)."""
    from orchestrator.run.stages import family_of_prompt

    inputs = {"stage": "generalization", "v": 1, "bon": bon.key, "calibration": calib.key, "label": label.key,
              "task": task.key, "main": list(main), "holdout": list(cfg.proxy.holdout_families),
              "bootstrap": cfg.bon.bootstrap, "strata_bootstrap": cfg.generalization.strata_bootstrap,
              "seed": cfg.seed}
    N = cfg.sample.bon_responses_per_prompt

    def fn(out: Path) -> dict:
        fam_of = family_of_prompt(task)
        s = pq.read_table(bon.dir / "bon_scores.parquet").to_pydict()
        curves = json.loads((bon.dir / "bon.json").read_text())
        n_max = cfg.n_max
        fam = np.array([fam_of[p] for p in s["prompt_id"]])
        length = np.asarray(s["n_tokens"], float)
        gold = np.asarray(s["score.gold"], float)
        rms = [c.removeprefix("score.") for c in s if c.startswith("score.") and c.count(".") == 1]
        families = sorted(set(fam.tolist()))
        # length: every RM's rank correlation with length, overall and within each family
        corr = {}
        for rm in rms:
            v = np.asarray(s[f"score.{rm}"], float)
            corr[rm] = {"spearman": G.spearman(v, length),
                        "per_family": {f: G.spearman(v[fam == f], length[fam == f]) for f in families}}
        model = G.fit_length_model(gold, length, fam)
        lc = dict(s)
        lc["score.gold"] = G.length_controlled(gold, length, model).tolist()
        names = [n for n, c in curves.items() if "principle" not in c]  # every curve against gold, read again
        lc_curves = bon_summary(lc, names, N, n_max, cfg.bon.bootstrap, stream(cfg.seed, "bon/bootstrap"))
        length_sec = {
            "unit": "response tokens (the policy's tokenizer)",
            "model": model.to_dict(),
            "pool": {"mean": float(length.mean()), "std": float(length.std()),
                     "per_family": {f: float(length[fam == f].mean()) for f in families}},
            "spearman": corr,
            "bon_lc": {n: {"points": [{"n": p["n"], "kl": p["kl"], "gold": p["gold"]} for p in c["points"]],
                           "fit": c["fit"], "kl_peak_ci90": c["kl_peak_ci90"], "peak": _peak(c),
                           "peak_gold_units": _peak(curves[n])}
                       for n, c in lc_curves.items()},
            "labels": _label_length_preference(cfg, label)}
        # per family: each main proxy's best-of-n frontier (gold and length-controlled gold)
        strata: dict = {}
        for f in families:
            keep = np.flatnonzero(fam == f)
            if len(keep) < 2 * N:  # one prompt: no mean over prompts worth fitting
                continue
            sub = {k: [v[i] for i in keep] for k, v in s.items()}
            sub_lc = {**sub, "score.gold": [lc["score.gold"][i] for i in keep]}
            seed = stream(cfg.seed, f"generalization/strata/{f}")
            cg = bon_summary(sub, main, N, n_max, cfg.generalization.strata_bootstrap, seed)
            cl = bon_summary(sub_lc, main, N, n_max, cfg.generalization.strata_bootstrap, seed)
            strata[f] = {"prompts": len(keep) // N,
                         "held_out": f in cfg.proxy.holdout_families,
                         "proxies": {m: {"gold": _slim(cg[m]), "peak": _peak(cg[m]), "peak_lc": _peak(cl[m])}
                                     for m in main}}
        first = {m: G.first_to_peak({f: {"kl": v["proxies"][m]["peak"]["kl_peak"]} for f, v in strata.items()})
                 for m in main}
        # domain: every RM's held-out pairs by family (in vs out of domain with holdout_families)
        domain = _domain(cfg, label, calib, fam_of)
        result = {"length": length_sec, "strata": {"bon": strata, "bon_first_to_peak": first},
                  "domain": domain}
        (out / "generalization.json").write_text(json.dumps(result, indent=1))
        return {"rms": len(rms), "families": len(families)}

    return run_stage(run_dir, "generalization", inputs, fn)


def _label_length_preference(cfg: FrontierConfig, label: StageResult) -> dict:
    """How often each label file prefers the longer response (words), over pairs of unequal length:
    gold labels, the judge's (``label.source: ai``) and gold's on the same pairs."""
    out = {}
    for name, fname in (("labels", "preferences.parquet"), ("gold_same_pairs", "preferences_gold.parquet")):
        path = label.dir / fname
        if not path.exists():
            continue
        t = pq.read_table(path, columns=["response_a", "response_b", "p_a", "labeler"]).to_pydict()
        la = [len(r.split()) for r in t["response_a"]]
        lb = [len(r.split()) for r in t["response_b"]]
        out[name] = {**G.length_preference(la, lb, t["p_a"]), "labeler": t["labeler"][0] if t["labeler"] else None}
    return out


def _domain(cfg: FrontierConfig, label: StageResult, calib: StageResult, fam_of: dict) -> dict:
    """calibration.parquet's rows (one per reward model and held-out pair) split by the pair's family."""
    from orchestrator.data.tables import preference_arrays

    cal = pq.read_table(calib.dir / "calibration.parquet").to_pydict()
    arr = preference_arrays(label.dir / "preferences.parquet", cfg.proxy.val_fraction, stream(cfg.seed, "proxy/val"))
    group = np.asarray(arr["group"])
    rm = np.asarray(cal["rm"])
    pid = np.asarray(cal["pair_id"], dtype=np.int64)
    fam = np.array([fam_of.get(int(g), "?") for g in group[pid]]) if len(pid) else np.array([], str)
    d, y = np.asarray(cal["delta"], float), np.asarray(cal["label"], float)
    held = tuple(cfg.proxy.holdout_families)
    out = {"holdout_families": list(held), "rms": {}}
    for name in dict.fromkeys(rm.tolist()):
        if name == "judge":
            continue
        m = rm == name
        out["rms"][name] = G.domain_split(d[m], y[m], fam[m], held, stream(cfg.seed, f"generalization/{name}"))
    return out


def rl_generalization(rl: list[dict], slope: float | None) -> dict:
    """Per RL run (frontier.json ``rl`` entries with the evaluations' ``length`` and ``gold_family``):
    ``length``: [(kl, mean response tokens)] -- the length drift --, the objective's Spearman with length
    per evaluation, gold and length-controlled gold (``gold - slope * length change``; ``slope``
    from the regression on the SFT policy's samples) with ``fit_rl`` fits on both, and per family its
    gold curve and the KL where it peaks (empirical and fitted); ``first_to_peak``: the family that
    peaks at the smallest KL."""
    runs = {}
    for e in rl:
        pts = e.get("points") or []
        if not pts or "length" not in pts[0]:
            continue  # a run from before issue 21 (no length in its evaluations)
        base_len = pts[0]["length"]
        kl = [p["kl"] for p in pts]
        entry = {"kl": kl, "length": [p["length"] for p in pts],
                 "length_change": pts[-1]["length"] - base_len,
                 "proxy_length_spearman": [p.get("proxy_length_spearman") for p in pts]}
        gold = [p["gold"] for p in pts]
        if slope is not None and all(np.isfinite(gold)):
            lc = [G.length_controlled_delta(g, p["length"] - base_len, slope) for g, p in zip(gold, pts)]
            entry["gold"] = gold
            entry["gold_lc"] = lc
            entry["peak"] = G.empirical_peak(kl, gold)
            entry["peak_lc"] = G.empirical_peak(kl, lc)
            fit_pts = [i for i, k in enumerate(kl) if k > 0]
            if len(fit_pts) >= 3:
                entry["fit"] = fit_rl(np.array([kl[i] for i in fit_pts]), np.array([gold[i] for i in fit_pts])).to_dict()
                entry["fit_lc"] = fit_rl(np.array([kl[i] for i in fit_pts]), np.array([lc[i] for i in fit_pts])).to_dict()
        if "gold_family" in pts[0]:
            fams = sorted(pts[0]["gold_family"])
            per = {}
            for f in fams:
                g = [p["gold_family"].get(f, float("nan")) for p in pts]
                per[f] = {"gold": g, "length": [p["length_family"].get(f) for p in pts],
                          "peak": G.empirical_peak(kl, g)}
            entry["families"] = per
            entry["first_to_peak"] = G.first_to_peak({f: v["peak"] for f, v in per.items()})
        runs[e["trial"]] = entry
    return runs


# --------------------------------------------------------------------------------------------
# domain fine-tuning


def _sample_budget(rows: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` of ``rows`` (pair indices) without replacement, by seed; all of them when fewer."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.permutation(rows)[:k]) if k < len(rows) else np.sort(rows)


def stage_finetune(cfg: FrontierConfig, run_dir: Path, task: StageResult, sample: StageResult, label: StageResult,
                   bon: StageResult, proxies: list[StageResult], progress: bool) -> StageResult | None:
    """Domain fine-tuning (``generalization.finetune_budgets``): each of ``finetune_sizes``' proxies
    fine-tuned on k labelled pairs of each held-out family (drawn from that family's training pairs;
    the family's validation pairs score it), for every budget k; one actor per (proxy, family),
    trained budget after budget from the proxy as trained. Per (proxy, family, k): accuracy, NLL,
    ECE and tau on that family's held-out pairs (``target``) and on the trained families' (``original``:
    what fine-tuning costs the domain it came from), and the family's best-of-n frontier scored by the
    fine-tuned proxy. k = 0 is the proxy as trained."""
    from actors.reward_ensemble import RewardEnsemble
    from orchestrator.data.tables import preference_arrays
    from orchestrator.math.calibration import calibration_summary
    from orchestrator.run.actor_group import ActorGroup
    from orchestrator.run.roles import tokenizer_dir
    from orchestrator.run.stages import family_of_prompt, proxy_name

    g = cfg.generalization
    if not g.finetune_budgets:
        return None
    by = {proxy_name(p): p for p in proxies}
    sizes = list(g.finetune_sizes) or [max(cfg.proxy.names, key=lambda n: by[f"proxy-{n}"].meta["params"])]
    targets = [by[f"proxy-{z}"] for z in sizes]
    lr = g.finetune_lr or cfg.proxy.lr / 2
    inputs = {"stage": "finetune", "v": 1, "proxies": [p.key for p in targets], "bon": bon.key, "label": label.key,
              "budgets": list(g.finetune_budgets), "epochs": g.finetune_epochs, "lr": lr,
              "prompts_per_step": g.finetune_prompts_per_step, "holdout": list(cfg.proxy.holdout_families),
              "length_control": cfg.proxy.length_control, "seed": cfg.seed}
    N = cfg.sample.bon_responses_per_prompt

    def fn(out: Path) -> dict:
        fam_of = family_of_prompt(task)
        pt = pq.read_table(task.dir / "prompts.parquet", columns=["prompt_id", "prompt"]).to_pydict()
        prompt_of = dict(zip(pt["prompt_id"], pt["prompt"]))
        arrays = preference_arrays(label.dir / "preferences.parquet", cfg.proxy.val_fraction,
                                   stream(cfg.seed, "proxy/val"))
        val, group = np.asarray(arrays["val"], bool), np.asarray(arrays["group"])
        pfam = np.array([fam_of.get(int(x), "?") for x in group])
        held = list(cfg.proxy.holdout_families)
        trained = ~np.isin(pfam, held)
        a, b, y = np.asarray(arrays["a"]), np.asarray(arrays["b"]), np.asarray(arrays["p_a"], float)
        s = pq.read_table(bon.dir / "bon_scores.parquet").to_pydict()
        bfam = np.array([fam_of[p] for p in s["prompt_id"]])
        results: dict = {}
        lc = ({"length_control": cfg.proxy.length_control, "length_lambda": cfg.proxy.length_head_lambda}
              if cfg.proxy.length_control != "none" else {})
        for p in targets:
            name = proxy_name(p)
            results[name] = {}
            for f in held:
                pool = np.flatnonzero(~val & (pfam == f))  # the family's training pairs: the budgets come from them
                target_val = np.flatnonzero(val & (pfam == f))
                orig_val = np.flatnonzero(val & trained)
                brow = np.flatnonzero(bfam == f)
                texts = sorted(set(a[target_val]) | set(b[target_val]) | set(a[orig_val]) | set(b[orig_val]))
                where = {t: i for i, t in enumerate(texts)}
                eval_rows = {"prompt": [arrays["texts"][t][0] for t in texts],
                             "response": [arrays["texts"][t][1] for t in texts]}
                bon_rows = {"prompt": [prompt_of[s["prompt_id"][i]] for i in brow],
                            "response": [s["response"][i] for i in brow]}
                per_k = []
                for k in sorted(g.finetune_budgets):
                    member = {"name": name, "kind": "hf", "path": str(p.dir / "model"), "head": "trained"}
                    grp = ActorGroup(RewardEnsemble, cfg.cluster.proxy, "proxy", [member], tokenizer_dir(task),
                                     replicas=1, chat_template=cfg.task.dataset.chat_template)
                    try:
                        chosen = _sample_budget(pool, k, stream(cfg.seed, f"finetune/{name}/{f}/{k}"))
                        st = {}
                        if k:
                            st = ray.get(grp.one("train", ray.put({**arrays, "val": [False] * len(val)}), g.finetune_epochs,
                                                 g.finetune_prompts_per_step, lr,
                                                 stream(cfg.seed, f"finetune/{name}/{f}/{k}/train"),
                                                 member_pairs=[chosen.tolist()], **lc))[name]
                        ev, bs = ray.get([grp.one("score", eval_rows), grp.one("score", bon_rows)])
                    finally:
                        grp.shutdown()
                    v = np.asarray(ev.values[:, 0], float)
                    row = {"k": int(k), "pairs_used": int(len(chosen)), "steps": st.get("steps", 0)}
                    for part, idx in (("target", target_val), ("original", orig_val)):
                        ia, ib = [where[t] for t in a[idx]], [where[t] for t in b[idx]]
                        if len(idx) >= 2:
                            cs = calibration_summary(v[ia] - v[ib], y[idx], stream(cfg.seed, f"finetune/cal/{k}"))
                            row[part] = {q: cs[q] for q in ("acc", "nll", "ece", "tau", "ece_tau", "pairs")}
                        else:
                            row[part] = {"acc": None, "pairs": int(len(idx))}
                    sub = {"prompt_id": [s["prompt_id"][i] for i in brow], "sample_id": [s["sample_id"][i] for i in brow],
                           "response": bon_rows["response"], "score.gold": [s["score.gold"][i] for i in brow],
                           "score.ft": np.asarray(bs.values[:, 0], float).tolist()}
                    if len(brow) >= 2 * N:
                        c = bon_summary(sub, ["ft"], N, cfg.n_max, 0, 0)["ft"]
                        row["bon"] = {"peak": _peak(c), "fit": c["fit"]}
                    per_k.append(row)
                    log.info("finetune %s on %s, k=%d: target acc %s, original acc %s", name, f, k,
                             _fmt(row["target"].get("acc")), _fmt(row["original"].get("acc")))
                results[name][f] = per_k
        (out / "finetune.json").write_text(json.dumps(results, indent=1))
        return {"runs": sum(len(v) for r in results.values() for v in r.values())}

    return run_stage(run_dir, "finetune", inputs, fn)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"



def generalization_section(cfg: FrontierConfig, run_dir: Path, task: StageResult, sample: StageResult,
                           label: StageResult, bon: StageResult, calib: StageResult, proxies: list[StageResult],
                           main: list[str], rl: list[dict], progress: bool) -> tuple[dict, dict[str, StageResult]]:
    """frontier.json's ``generalization`` (schema in the README): the cached analyses, the RL runs'
    length and families, and domain fine-tuning where budgets are set. The stages ride along as
    ``_generalization_stage`` / ``_finetune_stage`` (popped by the caller for the timings)."""
    st = stage_generalization(cfg, run_dir, task, label, bon, calib, main)
    out = json.loads((st.dir / "generalization.json").read_text())
    slope = out["length"]["model"]["slope"]
    runs = rl_generalization(rl, slope)
    out["rl"] = runs
    out["strata"]["rl_first_to_peak"] = {t: r.get("first_to_peak") for t, r in runs.items()}
    ft = stage_finetune(cfg, run_dir, task, sample, label, bon, proxies, progress)
    if ft is not None:
        out["finetune"] = json.loads((ft.dir / "finetune.json").read_text())
    return out, {"generalization": st, **({"finetune": ft} if ft is not None else {})}
