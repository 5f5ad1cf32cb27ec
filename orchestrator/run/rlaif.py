"""The label stage with an AI judge (``label.source: ai``; SCIENCE.md "RLAIF").

The judge (``actors.ai_labeler.AILabeler``, a Ray actor) labels pairs of the label pool, one
principle sampled per comparison from the constitution (Bai et al. 2022), both orders averaged
(Lee et al. 2023). The gold oracle scores the same pool, so every labelling is measured: agreement
with gold (overall and per principle), position bias, calibration of the soft labels, agreement
with and without chain of thought, and the injection flip rate before and after mitigation. With
``compare_gold`` the same pairs are also written with gold labels, so proxies of the same sizes can
be trained on each and the frontier shows how RLAIF proxies overoptimize beside gold-labelled ones.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import ray
from tqdm import tqdm

from actors import ai_labeler as A
from orchestrator.config.schema import ConfigError, FrontierConfig
from orchestrator.data import tables as D
from orchestrator.run.actor_group import ActorGroup

log = logging.getLogger("rlhf_frontier")

def load_constitution(path: str) -> tuple[list[dict], list[dict]]:
    """(principles, few-shot examples) of a constitution file (validated with the config)."""
    try:
        return A.load_constitution(path)
    except ValueError as e:
        raise ConfigError(f"label.ai.constitution: {e}") from None


def select_pairs(prompt_ids: list[int], gold: np.ndarray, n_prompts: int, per_prompt: int,
                 rng: np.random.Generator) -> list[tuple[int, int]]:
    """Pairs (i, j) of samples of one prompt with a gold winner: ``n_prompts`` prompts drawn at
    random, ``per_prompt`` pairs each (0 = all); the shown order (a, b) is random."""
    by_prompt: dict[int, list[int]] = {}
    for i, p in enumerate(prompt_ids):
        by_prompt.setdefault(p, []).append(i)
    cands = {p: [(x, y) for k, x in enumerate(idx) for y in idx[k + 1:] if gold[x] != gold[y]]
             for p, idx in by_prompt.items()}
    prompts = sorted(p for p, c in cands.items() if c)
    chosen = rng.permutation(len(prompts))[:n_prompts]
    out = []
    for k in sorted(chosen):
        c = cands[prompts[k]]
        take = c if per_prompt == 0 else [c[t] for t in sorted(rng.permutation(len(c))[:per_prompt])]
        for x, y in take:
            out.append((x, y) if rng.random() < 0.5 else (y, x))
    return out


def label_with_judge(cfg: FrontierConfig, run_dir: Path, out: Path, rows: dict, samples: dict, gold: np.ndarray,
                     gold_principles: dict[str, np.ndarray], seed: int, progress: bool) -> dict:
    """Label, write ``preferences.parquet`` (AI labels) and ``preferences_gold.parquet`` (the same
    pairs, gold labels), and measure the judge; returns the stage's meta (with the measurements)."""
    ai = cfg.label.ai
    principles, shots = load_constitution(ai.constitution)
    few_shot = shots[: ai.few_shot]
    if ai.few_shot > len(shots):
        raise ConfigError(f"label.ai.few_shot: {ai.few_shot} examples asked, the constitution has {len(shots)}")
    by_name = {p["name"]: p for p in principles}
    for i, pr in enumerate(cfg.proxy.principles):  # per-principle judgments need that principle's text
        if pr not in by_name:
            raise ConfigError(f"proxy.principles[{i}]: {pr!r}: the judge's constitution "
                              f"({ai.constitution or 'jobs/configs/constitution.yaml'}) has no principle of that name")
    rng = np.random.default_rng(seed)
    pairs = select_pairs(samples["prompt_id"], gold, ai.prompts, ai.pairs_per_prompt, rng)
    if not pairs:
        raise ConfigError("label.ai: the label pool has no pair with a gold winner")
    which = rng.integers(len(principles), size=len(pairs))
    p_text = [principles[w]["text"] for w in which]
    p_name = [principles[w]["name"] for w in which]
    cols = {"prompt": [rows["prompt"][i] for i, _ in pairs], "response_a": [samples["response"][i] for i, _ in pairs],
            "response_b": [samples["response"][j] for _, j in pairs]}
    ga, gb = gold[[i for i, _ in pairs]], gold[[j for _, j in pairs]]

    cache = run_dir / "judge_cache" / f"{ai.judge.replace('/', '_')}.jsonl"
    grp = ActorGroup(A.AILabeler, cfg.cluster.labeler, ai.judge, ai.backend, ai.base_url, name="labeler",
                     batch_size=ai.batch_size, cache_path=str(cache), cot_tokens=ai.cot_tokens, seed=seed)
    def judge(texts: list[str], desc: str) -> dict:  # every pair under its principle's text, in chunks
        chunk = max(ai.batch_size * 4, 64)
        res = {k: [] for k in ("p_a", "p_a_ab", "p_a_ba", "rationale")}
        refs = [grp.one("label_direct", {k: v[s: s + chunk] for k, v in cols.items()}, texts[s: s + chunk],
                        ai.mitigate) if ai.direct else
                grp.one("label", {k: v[s: s + chunk] for k, v in cols.items()}, texts[s: s + chunk], ai.cot,
                        ai.mitigate, few_shot) for s in range(0, len(pairs), chunk)]
        for r in tqdm(refs, desc=desc, disable=not progress, leave=False):
            got = ray.get(r)
            for k in res:
                res[k] += got[k]
        return res

    try:
        t0 = time.perf_counter()
        res = judge(p_text, "judge pairs")
        secs = time.perf_counter() - t0
        info = ray.get(grp.one("info"))
        meta = {"pairs": len(pairs), "judge": info, "template": A.TEMPLATE_VERSION,
                "label_seconds": secs, "pairs_per_s": info["judged"] / max(info["seconds"], 1e-9) if info["judged"] else None}
        meta.update(measure(res, ga, gb, p_name, gold_principles, pairs))
        meta["length_bias"] = length_bias(np.asarray(res["p_a"]), ga, gb, cols)
        if ai.measure_pairs:
            meta.update(measure_extra(grp, cols, p_text, ga, gb, ai, few_shot, rng))
        per_principle = {pr: judge([by_name[pr]["text"]] * len(pairs), f"judge pairs: {pr}")
                         for pr in cfg.proxy.principles}  # issue 22: the same pairs, judged by each principle alone
        if per_principle:  # what those judgments cost (the judge's cache answers the ones it has seen)
            after = ray.get(grp.one("info"))
            meta["principles_judge"] = {k: after[k] - info[k] for k in ("judged", "cached")}
    finally:
        grp.shutdown()
    # the labeler column names the judge, the template version and the mode of judging
    labeler = f"ai:{ai.judge}/{A.TEMPLATE_VERSION}" + ("/direct" if ai.direct else "/cot" if ai.cot else "")
    prefs = {k: [] for k in D.PREFERENCES}
    gold_prefs = {k: [] for k in D.PREFERENCES}
    for n, (i, j) in enumerate(pairs):
        for tab, p_a, who, why, rat in ((prefs, res["p_a"][n], labeler, p_name[n], res["rationale"][n]),
                                        (gold_prefs, 1.0 if ga[n] > gb[n] else 0.0, "gold", "gold", "")):
            tab["pair_id"].append(n)
            tab["prompt_id"].append(samples["prompt_id"][i])
            tab["prompt"].append(cols["prompt"][n])
            tab["response_a"].append(cols["response_a"][n])
            tab["response_b"].append(cols["response_b"][n])
            tab["p_a"].append(float(p_a))
            tab["labeler"].append(who)
            tab["principle"].append(why)
            tab["rationale"].append(rat)
    meta["labeler"] = labeler
    D.write_table(prefs, out / "preferences.parquet")
    if per_principle:
        meta["principles"] = {}
    for pr, r in per_principle.items():  # the per-principle proxies' labels, and the judge against that principle's gold
        D.write_table({**prefs, "p_a": [float(x) for x in r["p_a"]], "principle": [pr] * len(pairs),
                       "rationale": list(r["rationale"])}, out / f"preferences_{pr}.parquet")
        gp = gold_principles[pr]
        meta["principles"][pr] = {"pairs": len(pairs), "agreement_with_gold_principle": A.agreement(
            np.asarray(r["p_a"]), gp[[i for i, _ in pairs]], gp[[j for _, j in pairs]])}
    if ai.compare_gold:
        D.write_table(gold_prefs, out / "preferences_gold.parquet")
    log.info("judge %s: %d pairs, agreement with gold %.3f, position bias %.3f, ECE %.3f (%.1f pairs/s)",
             ai.judge, len(pairs), meta["agreement"], meta["position_bias_rate"], meta["calibration"]["ece"],
             meta["pairs_per_s"] or float("nan"))
    return meta


def measure(res: dict, ga: np.ndarray, gb: np.ndarray, p_name: list[str], gold_principles: dict, pairs) -> dict:
    p = np.asarray(res["p_a"])
    names = np.asarray(p_name)
    per = {}
    for nm in sorted(set(p_name)):
        s = names == nm
        per[nm] = {"n": int(s.sum()), "agreement": A.agreement(p[s], ga[s], gb[s])}
        if nm in gold_principles:  # agreement with the gold's own score for this principle
            pa_, pb_ = gold_principles[nm][[i for i, _ in pairs]][s], gold_principles[nm][[j for _, j in pairs]][s]
            per[nm]["agreement_with_gold_principle"] = A.agreement(p[s], pa_, pb_)
    return {"agreement": A.agreement(p, ga, gb), "agreement_per_principle": per,
            "position_bias_rate": A.position_bias_rate(res["p_a_ab"], res["p_a_ba"]),
            "agreement_first_order_only": A.agreement(np.asarray(res["p_a_ab"]), ga, gb),
            "calibration": A.calibration(p, ga, gb), "soft_label_mean_abs_margin": float(np.mean(np.abs(p - 0.5)))}


def length_bias(p_a: np.ndarray, ga: np.ndarray, gb: np.ndarray, cols: dict) -> dict:
    """Does the judge prefer the longer response (Singhal et al. 2023), and does gold? Spearman of
    each preference margin with the word-count difference a - b, and the share of pairs where the
    preferred response is the longer one (pairs of equal length left out)."""
    from scipy.stats import spearmanr

    d = np.array([len(a.split()) - len(b.split()) for a, b in zip(cols["response_a"], cols["response_b"])])
    m = d != 0
    out = {}
    for who, margin in (("judge", p_a - 0.5), ("gold", ga - gb)):
        ok = m & (margin != 0)
        out[f"{who}_spearman_with_length_diff"] = float(spearmanr(margin, d).statistic) if len(set(d)) > 1 else None
        out[f"{who}_prefers_longer"] = float(np.mean((margin[ok] > 0) == (d[ok] > 0))) if ok.any() else None
    return out


def measure_extra(grp: ActorGroup, cols: dict, p_text: list[str], ga, gb, ai, few_shot, rng) -> dict:
    """On ``measure_pairs`` labelled pairs: agreement with and without CoT and with direct 1-10
    scoring (and pairs/s of each), and the injection flip rate with and without mitigation."""
    idx = sorted(rng.permutation(len(p_text))[: ai.measure_pairs])
    sub = {k: [v[i] for i in idx] for k, v in cols.items()}
    pt = [p_text[i] for i in idx]
    out = {"measure_pairs": len(idx)}
    for cot in (False, True):
        t0 = time.perf_counter()
        r = ray.get(grp.one("label", sub, pt, cot, ai.mitigate, few_shot))
        dt = time.perf_counter() - t0
        fresh = len(idx) - sum(r["cached"])
        out[f"agreement_{'cot' if cot else 'no_cot'}"] = A.agreement(np.asarray(r["p_a"]), ga[idx], gb[idx])
        out[f"pairs_per_s_{'cot' if cot else 'no_cot'}"] = fresh / dt if fresh else None
        out[f"position_bias_rate_{'cot' if cot else 'no_cot'}"] = A.position_bias_rate(r["p_a_ab"], r["p_a_ba"])
        if cot:
            out["rationale_examples"] = r["rationale"][:3]
    t0 = time.perf_counter()
    r = ray.get(grp.one("label_direct", sub, pt, ai.mitigate))
    dt = time.perf_counter() - t0
    out["agreement_direct"] = A.agreement(np.asarray(r["p_a"]), ga[idx], gb[idx])
    fresh = len(idx) - sum(r["cached"])
    out["pairs_per_s_direct"] = fresh / dt if fresh else None
    out["injection"] = {("mitigated" if m else "unmitigated"): ray.get(grp.one("injection", sub, pt, m))
                        for m in (False, True)}
    return out


def compare_labels(bon: list[dict], rl: list[dict]) -> dict:
    """Per proxy size, the judge-trained proxy beside the gold-trained one (same pairs): validation
    accuracy on gold, the best-of-n gold peak and its KL, and, where RL ran with no penalty, the RL
    gold peak, the KL there and the gold lost by the end (how each overoptimizes)."""
    out: dict = {}
    for e in bon:
        size = e["proxy"].removeprefix("proxy-").removesuffix("-ai")
        row = out.setdefault(size, {})
        g = [p["gold"] for p in e["points"]]
        k = int(np.argmax(g))
        row[e["labels"]] = {"proxy": e["proxy"], "val_accuracy_own_labels": e.get("val_accuracy"),
                            "bon_gold_peak": float(g[k]), "bon_kl_at_peak": float(e["points"][k]["kl"]),
                            "bon_gold_at_max_n": float(g[-1]), "bon_fit": e.get("fit")}
    for e in rl:
        if len(e.get("members", [])) != 1 or e.get("kl_coef", 0) != 0:
            continue
        size = e["proxy"].removeprefix("proxy-").removesuffix("-ai")
        pts = e["points"]
        if size in out and e.get("labels", "gold") in out[size] and pts:
            g = [p["gold"] for p in pts]
            k = int(np.argmax(g))
            out[size][e.get("labels", "gold")].update(
                {"rl_gold_peak": float(g[k]), "rl_kl_at_peak": float(pts[k]["kl"]),
                 "rl_gold_drop_after_peak": float(g[k] - g[-1]), "rl_final_kl": float(pts[-1]["kl"])})
    return out
