"""Sections of ``jobs.seeds`` pooled over runs of one config (``orchestrator.report.seeds``
aggregates them): the gold-free detectors with a leave-one-seed-out check of their rules, jobs.active's
arms against random, and the proxies' calibration against the frontier."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np


def _mean_se(xs: list) -> dict:
    v = [float(x) for x in xs if x is not None and math.isfinite(x)]
    if not v:
        return {"mean": None, "se": None, "median": None, "n": 0}
    return {"mean": float(np.mean(v)), "se": float(np.std(v, ddof=1) / math.sqrt(len(v))) if len(v) > 1 else None,
            "median": float(np.median(v)), "n": len(v)}


def pool_calibration(runs: list[dict]) -> dict | None:
    """The proxies' calibration (``bon[i].calibration``) over seeds: per proxy size the mean ± s.e.
    of acc, NLL, ECE, ECE at the fitted tau and tau; and across every (proxy, seed) whether
    calibration or accuracy predicts the frontier -- Spearman of acc, NLL and ECE against the fitted
    best-of-n peak KL and peak gold (Wen et al. 2024 find accuracy a weak predictor). None when no
    run has calibration (runs before issue 20)."""
    from orchestrator.math.scaling import spearman

    pts = [(r["seed"], e) for r in runs for e in r["frontier"].get("bon", [])
           if e.get("calibration") and e.get("labels", "gold") == "gold" and e.get("fit")]
    if not pts:
        return None
    by: dict = {}
    for _, e in pts:
        by.setdefault(e["proxy"], {"params": e["proxy_params"], **{k: [] for k in ("acc", "nll", "ece", "ece_tau", "tau")}})
        for k in ("acc", "nll", "ece", "ece_tau", "tau"):
            by[e["proxy"]][k].append(e["calibration"][k])
    sizes = {p: {"params": v["params"], **{k: _mean_se(v[k]) for k in ("acc", "nll", "ece", "ece_tau", "tau")}}
             for p, v in sorted(by.items(), key=lambda kv: kv[1]["params"])}
    pred = {}
    singles = [(s, e) for s, e in pts if e.get("kind", "proxy") == "proxy"]  # the proxies, not the ensembles
    for m in ("acc", "nll", "ece"):
        x = [e["calibration"][m] for _, e in singles]
        pred[m] = {t: spearman(x, [e["fit"][f] for _, e in singles]) for t, f in (("kl_peak", "kl_peak"),
                                                                                  ("gold_peak", "gold_peak"))}
    return {"seeds": sorted({s for s, _ in pts}), "n": len(singles), "sizes": sizes, "predicts_frontier": pred}


def pool_active(runs: list[dict]) -> dict | None:
    """``jobs.active`` over seeds, where the runs have its ``active.json``: per acquisition arm and
    measure, the arm minus the random arm at equal labels (mean over the acquisition rounds) per
    seed, with mean, s.e. and t over seeds, and the per-round curves averaged. None when fewer than
    two runs have it."""
    res = {}
    for r in runs:
        f = Path(r["dir"]) / "active.json"
        if f.is_file():
            try:
                res[str(r["seed"])] = json.loads(f.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                continue
    if len(res) < 2:
        return None
    setting = lambda v: {k: v.get(k) for k in ("arms", "members", "size", "bootstrap", "initial", "per_round",  # noqa: E731
                                                "rounds")}
    first = setting(next(iter(res.values())))
    if any(setting(v) != first for v in res.values()):
        return {"seeds": list(res), "error": "the runs' active.json differ in their settings (arms, members, size, "
                                             "bootstrap, initial, per_round, rounds): not pooled"}
    from orchestrator.math.active import MEASURES

    out: dict = {"seeds": list(res), "versus_random": {}, "curves": {}}
    for arm in sorted({a for v in res.values() for a in v["versus_random"]}):
        per = {m: {s: v["versus_random"][arm]["mean"][m] for s, v in res.items() if arm in v["versus_random"]}
               for m in MEASURES}
        out["versus_random"][arm] = {}
        for m, vals in per.items():
            st = {"per_seed": vals, **_mean_se(list(vals.values()))}
            st["t"] = st["mean"] / st["se"] if st["se"] else None
            out["versus_random"][arm][m] = st
    for arm in sorted({row["arm"] for v in res.values() for row in v["rows"]}):
        by_round: dict = {}
        for v in res.values():
            for row in v["rows"]:
                if row["arm"] == arm:
                    by_round.setdefault(row["round"], {"labels": row["labels"], **{m: [] for m in MEASURES}})
                    for m in MEASURES:
                        by_round[row["round"]][m].append(row[m])
        out["curves"][arm] = [{"round": k, "labels": x["labels"], **{m: _mean_se(x[m]) for m in MEASURES}}
                              for k, x in sorted(by_round.items())]
    return out


def _monitor_runs(frontier: dict, name: str, seed) -> list[dict]:
    """A run's RL entries as ``score_detector`` takes them, for detector ``name`` (runs where its
    signal is defined at least once)."""
    out = []
    for e in frontier.get("rl", []):
        sig = (e.get("monitor") or {}).get(name)
        se = e.get("gold_se_per_eval")
        if (not sig or not se or any(x is None for x in se) or all(v is None for v in sig)
                or not all(math.isfinite(p["gold"]) for p in e["points"])):  # as run_frontier scores them
            continue
        out.append({"trial": f"{seed}/{e['trial']}", "steps": [p["step"] for p in e["points"]],
                    "kl": [p["kl"] for p in e["points"]], "gold": [p["gold"] for p in e["points"]], "gold_se": se,
                    "signal": [np.nan if v is None else v for v in sig]})
    return out


def pool_monitor(runs: list[dict], grid_points: int = 41) -> dict:
    """The gold-free detectors (``frontier.json`` ``monitor``) over seeds: each detector's run
    records pooled (a run is ``seed/trial``) and summarized as one run's are, beside each seed's own
    summary -- at the config's thresholds. With two or more seeds, also ``cross_validated``: each
    seed's runs scored by the rule ``orchestrator.math.monitor.calibrate`` chose on the *other*
    seeds' runs (threshold on a grid of their signal's quantiles, patience 1 or 2, the most gold
    kept at a false-alarm rate <= 10%), the held-out records pooled -- what the detector is worth on
    a run nobody tuned it to."""
    from orchestrator.config.monitor import MONITOR_DETECTORS
    from orchestrator.math.monitor import (
        Rule,
        calibrate,
        score_detector,
        summarize_records,
    )

    out: dict = {}
    for r in runs:
        for d in (r["frontier"].get("monitor") or {}).get("detectors", []):
            m = out.setdefault(d["name"], {"rule": d.get("rule"), "records": [], "per_seed": {}})
            m["records"] += [{**x, "trial": f"{r['seed']}/{x['trial']}"} for x in d["runs"]]
            m["per_seed"][str(r["seed"])] = summarize_records(d["runs"])
    for name, m in out.items():
        m["pooled"] = summarize_records(m["records"])
        if len(runs) < 2:
            continue
        folds, held = [], []
        for i, r in enumerate(runs):
            cal = [x for j, q in enumerate(runs) if j != i for x in _monitor_runs(q["frontier"], name, q["seed"])]
            test = _monitor_runs(r["frontier"], name, r["seed"])
            vals = np.array([v for x in cal for v in x["signal"] if np.isfinite(v)])
            if not cal or not test or not len(vals):
                continue
            grid = np.unique(np.quantile(vals, np.linspace(0, 1, grid_points)))
            best = calibrate(name, MONITOR_DETECTORS[name], (1, 2), cal, grid)
            fold = {"held_out": r["seed"], "threshold": best["threshold"], "patience": best["patience"],
                    "calibration": best["best"]}
            if best["threshold"] is not None:
                held += score_detector(name, Rule(best["threshold"], MONITOR_DETECTORS[name], best["patience"]),
                                       test)["runs"]
            folds.append(fold)
        m["cross_validated"] = {"folds": folds, "held_out": summarize_records(held) if held else None}
    return out


def ensemble_effects(frontier: dict) -> dict[str, float | None]:
    """Issue 20, best-of-n side, as signed effects of one seed (> 0 where the ensemble does better):
    per ensemble (and WARM), its measured peak gold and its gold at the largest n minus the mean of
    its members' own (best-of-n curves share one KL grid, so both are at matched KL). Entries of the
    run's own labels (gold, or the judge's with label.source ai)."""
    bon = frontier.get("bon", [])
    by = {e["proxy"]: e for e in bon}
    main = "ai" if any(e.get("labels") == "ai" and e.get("kind", "proxy") == "proxy" for e in bon) else "gold"
    out: dict[str, float | None] = {}
    for e in bon:
        if e.get("kind") not in ("ensemble", "warm") or e.get("labels", "gold") != main:
            continue
        members = [by[m] for m in e.get("members", []) if m in by]
        if not members:
            continue
        peak = lambda x: max(p["gold"] for p in x["points"])  # noqa: E731
        last = lambda x: x["points"][-1]["gold"]  # noqa: E731
        what = (f"BoN {e['source']} ({e['objective']}, {len(members)} members)" if e["kind"] == "ensemble"
                else f"BoN WARM ({len(members)} members)")
        out[f"{what}: peak gold, ensemble - members' mean"] = peak(e) - float(np.mean([peak(m) for m in members]))
        out[f"{what}: gold at the largest n, ensemble - members' mean"] = (
            last(e) - float(np.mean([last(m) for m in members])))
        out[f"{what}: gold lost past the peak by the largest n, members' mean - ensemble"] = (
            float(np.mean([peak(m) - last(m) for m in members])) - (peak(e) - last(e)))
    return out


def generalization_effects(frontier: dict) -> dict[str, float | None]:
    """Issue 21 as per-seed numbers (jobs.seeds pools each over seeds: mean, s.e., t): the length
    regression's slope; each proxy's and gold's Spearman with length on the pool; the labels'
    preference for the longer response (share - 0.5); per proxy, best-of-n peak gold in gold minus in
    length-controlled gold (the part of the peak that is length); per no-penalty RL run, its length
    change and its peak gold minus its length-controlled peak gold; per proxy, in-domain minus
    out-of-domain accuracy; per length-controlled proxy, its best-of-n peak gold and Spearman with
    length minus its size's own proxy's; per fine-tuning budget, the held-out family's accuracy and the
    trained families' accuracy minus k = 0's."""
    g = frontier.get("generalization")
    if not g:
        return {}
    L = g["length"]
    out: dict[str, float | None] = {"Length: gold per token (regression on the SFT pool, families fixed)":
                                    L["model"]["slope"],
                                    "Length: Spearman(gold, length) on the pool": L["spearman"].get("gold", {}).get("spearman")}
    lab = (L.get("labels") or {}).get("labels")
    if lab and lab.get("share") is not None:
        out["Length: labels prefer the longer response, share - 0.5"] = lab["share"] - 0.5
    bon = frontier.get("bon", [])
    main = [e for e in bon if e.get("kind", "proxy") == "proxy" and e.get("labels", "gold") == "gold"]
    for e in main:
        p = e["proxy"]
        out[f"Length: Spearman({p}, length) on the pool"] = L["spearman"].get(p, {}).get("spearman")
        lc = L["bon_lc"].get(p)
        if lc:
            out[f"BoN {p}: peak gold - peak length-controlled gold (measured)"] = (
                lc["peak_gold_units"]["gold_peak"] - lc["peak"]["gold_peak"])
        d = g["domain"]["rms"].get(p)
        if d and d.get("gap") is not None and g["domain"]["holdout_families"]:
            out[f"Domain: {p} accuracy, in domain - out of domain"] = d["gap"]
    by = {e["proxy"]: e for e in bon}
    for e in bon:
        if e.get("kind") != "length_control":
            continue
        base = by.get(e["proxy"].rsplit("-lc-", 1)[0])
        if not base:
            continue
        peak = lambda x: max(q["gold"] for q in x["points"])  # noqa: E731
        out[f"BoN {e['proxy']}: peak gold - its size's own proxy's"] = peak(e) - peak(base)
        a, b = (L["spearman"].get(x["proxy"], {}).get("spearman") for x in (base, e))
        out[f"Length: Spearman with length, {base['proxy']} - {e['proxy']}"] = None if a is None or b is None else a - b
    for t, r in g.get("rl", {}).items():
        if not t.endswith("-kl0") or "peak" not in r:
            continue
        out[f"RL {t}: length change (tokens)"] = r["length_change"]
        if r["peak"]["gold"] is not None and r["peak_lc"]["gold"] is not None:
            out[f"RL {t}: peak gold - peak length-controlled gold"] = r["peak"]["gold"] - r["peak_lc"]["gold"]
    for p, fams in (g.get("finetune") or {}).items():
        for f, rows in fams.items():
            k0 = next((r for r in rows if r["k"] == 0), None)
            if not k0:
                continue
            for r in rows:
                if r["k"] == 0:
                    continue
                for part, what in (("target", f"{f} accuracy"), ("original", "trained families' accuracy")):
                    a, b = r[part].get("acc"), k0[part].get("acc")
                    out[f"Fine-tune {p} on {f}, k={r['k']}: {what} - k=0's"] = None if a is None or b is None else a - b
    return out


def pareto_effects(frontier: dict) -> dict[str, float | None]:
    """Issue 22 as per-seed numbers (jobs.seeds pools each over seeds): the front's hypervolume at the
    runs' gold peaks and ends; at each equal-KL level, the constrained runs' hypervolume minus the
    aggregations'; per per-principle proxy, its best-of-n peak gold against its own principle's gold;
    per run, its gold gain at the peak (all principles), the KL there, the principles below the SFT
    policy at its end, and for constrained runs the share of steps violating a constraint; the
    learned weights; per kind of run, how often each principle overoptimized first."""
    pa = frontier.get("pareto")
    if not pa:
        return {}
    out: dict[str, float | None] = {"Pareto: hypervolume at the runs' gold peaks": pa["hypervolume"],
                                    "Pareto: hypervolume at the runs' ends": pa["hypervolume_end"],
                                    "Pareto: hypervolume above the nadir, at the peaks": pa.get("hypervolume_nadir"),
                                    "Pareto: hypervolume above the nadir, at the ends": pa.get("hypervolume_nadir_end")}
    comp = pa.get("compare")
    if comp and {"aggregation", "constrained"} <= set(comp["hypervolume"]):
        n = len(comp["kl"])
        for i in range(n):
            at = f"Pareto at equal KL, level {i + 1} of {n} (half the median gold-peak KL ... the common reach)"
            out[f"{at}: hypervolume, constrained - aggregation"] = (
                comp["hypervolume"]["constrained"][i] - comp["hypervolume"]["aggregation"][i])
            for k, what in (("hypervolume_nadir", "hypervolume above the nadir"), ("gold_sum", "mean summed gold gain"),
                            ("below_reference", "mean principles below SFT")):
                a, b = (comp.get(k, {}).get(g, [None] * n)[i] for g in ("constrained", "aggregation"))
                out[f"{at}: {what}, constrained - aggregation"] = None if a is None or b is None else a - b
        for g, counts in comp["first_overoptimized"].items():
            for p, c in counts.items():
                out[f"First to overoptimize ({g} runs): {p}"] = float(c)
    for e in frontier.get("bon", []):
        if e.get("kind") == "principle":
            out[f"BoN {e['proxy']} vs {e['principle']} gold: peak gold"] = max(q["gold"] for q in e["points"])
    by = {e.get("trial"): e for e in frontier.get("rl", [])}
    for p in pa["points"]:
        t = p["trial"]
        out[f"RL {t}: gold gain at its peak"] = max(q["gold"] for q in by[t]["points"]) if t in by else None
        out[f"RL {t}: KL at its gold peak"] = p["peak"]["kl"]
        out[f"RL {t}: principles below SFT at the end"] = float(len(p.get("degraded_end", [])))
        lg = p.get("lagrange")
        if lg and lg["violated_fraction"] and None not in lg["violated_fraction"]:
            out[f"RL {t}: share of steps violating a constraint (mean)"] = float(np.mean(lg["violated_fraction"]))
    learned = pa.get("learned")
    if learned:
        for pr, w in zip(learned["principles"], learned["weights"]):
            out[f"Learned weight: {pr}"] = w
    return out
