"""Across seeds: does a finding hold, and how much do the estimates move?

A run's checks (``frontier.json["checks"]``) are SCIENCE.md's findings on one seed. The bar is that
they hold for >= 3 seeds (Gao et al. 2022 report trends over several seeds; a single RL run is
noisy). ``aggregate`` reads finished runs of one config that differ only in ``seed`` and returns,
for every boolean check, the seeds it holds in; the per-seed numbers behind the size trends; and
those estimates averaged over seeds (mean, standard error), with the Spearman correlation of the
means against proxy size -- the pooled view the per-seed checks cannot give. The RL findings are
also given as signed effect sizes per seed (``_rl_effects``: > 0 where the check holds) with their
mean, standard error and t over seeds: how far a finding holds, not only whether -- and the power
statement that goes with it (``seeds_for_t``): how many seeds the measured effect and spread need
for t > 2 with 80% probability, so a finding that misses t > 2 on three seeds says whether it is
absent or only underpowered.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from statistics import NormalDist

import numpy as np

from orchestrator.config.schema import (
    ConfigError,
    FrontierConfig,
    build,
    digest,
    load,
    non_default,
    to_dict,
)
from orchestrator.report.pooled import (  # noqa: F401  (re-exported: jobs.seeds' pooled sections)
    _mean_se,
    _monitor_runs,
    ensemble_effects,
    generalization_effects,
    pareto_effects,
    pool_active,
    pool_calibration,
    pool_monitor,
)


class SeedsError(ValueError):
    """Runs that cannot be compared (missing, unfinished, another config, a repeated seed)."""


NUMBERS = {  # the per-seed numbers in the table: label -> (path in frontier.json["checks"], scale)
    "bon: Spearman(size, peak KL)": (("spearman_size_kl_peak",), 1),
    "bon: Spearman(size, peak gold)": (("spearman_size_gold_peak",), 1),
    "rl: smallest proxy's gold drop after its peak": (("rl", "smallest_gold_drop_tail_mean"), 1),
    "rl: 2 s.e. of one evaluation": (("rl", "smallest_gold_se"), 2),
    "rl: pooled R² of the RL form": (("rl", "r2_pooled_rl_form"), 1),
    "rl: pooled R² of the BoN form": (("rl", "r2_pooled_bon_form"), 1),
    "sweep: Spearman(size, fitted RL peak KL)": (("sweep", "spearman_size_kl_peak"), 1),
    "sweep: Spearman(size, fitted RL peak gold)": (("sweep", "spearman_size_gold_peak"), 1),
    "sweep: penalty runs' mean abs gold gap": (("sweep", "penalty_gap_mean_abs"), 1),
}


def _num(x) -> float | None:
    """A finite number, or None (missing, NaN, a bool)."""
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) else None


def _less_lost(single: list, ensembles: list) -> float | None:
    """How much less gold the best ensemble lost than the single runs' mean (None if any is missing)."""
    sv, ev = [_num(v) for v in single], [_num(v) for v in ensembles]
    return float(np.mean(sv)) - min(ev) if sv and ev and None not in sv + ev else None


def _rl_effects(rl: dict) -> dict[str, float | None]:
    """Issue 3's RL findings (``report.rl_checks``) as signed effect sizes of one seed: each is > 0
    exactly where its check holds, so averaging over seeds says how far, not just whether, a
    finding holds (a pass by 0.002 and one by 0.2 are not the same evidence). Those marked "no
    check" compare ensembles at the end of the step budget rather than at a common KL."""
    out: dict[str, float | None] = {}
    # a run whose KL or proxy never moved has no Spearman (nan) and fails the check: count it as 0
    rho = [_num(v) or 0.0 for v in (rl.get("proxy_spearman_with_kl") or {}).values()]
    out["proxy rises: min Spearman(KL, proxy) - 0.8"] = min(rho) - 0.8 if rho else None
    drop, se = _num(rl.get("smallest_gold_drop_tail_mean")), _num(rl.get("smallest_gold_se"))
    peak = _num((rl.get("smallest_gold_peak") or {}).get("gold"))
    out["smallest proxy: min(gold peak, drop after it) - 2 s.e."] = (
        min(peak, drop) - 2 * se if None not in (drop, se, peak) else None)
    a, b = _num(rl.get("r2_pooled_rl_form")), _num(rl.get("r2_pooled_bon_form"))
    out["pooled R²: RL form - BoN form"] = a - b if None not in (a, b) else None
    logs = {p: math.log(r) if (r := _num(v.get("ratio"))) and r > 0 else None
            for p, v in (rl.get("kl_for_same_gold") or {}).items()}
    out["ln(KL RL / KL BoN) at the same gold: min over proxies"] = (
        min(logs.values()) if logs and None not in logs.values() else None)
    for p, v in logs.items():
        out[f"ln(KL RL / KL BoN) at the same gold: {p}"] = v
    out["gold lost at the common KL: singles' mean - best ensemble"] = _less_lost(
        list((rl.get("gold_drop_single") or {}).values()), list((rl.get("gold_drop_ensemble") or {}).values()))
    # Coste et al. compare runs of one step budget: an ensemble that climbs more slowly in KL gains here
    out["gold lost by the last step: singles' mean - best ensemble (no check)"] = _less_lost(
        list((rl.get("gold_drop_single_end") or {}).values()), list((rl.get("gold_drop_ensemble_end") or {}).values()))
    for src, row in (rl.get("ensembles_by_source") or {}).items():  # issue 20: each source against its member
        for r in row["runs"].values():
            what = f"RL {src} ({r['objective']}, {r['members']} members)" if src != "warm" else "RL WARM"
            out[f"{what}: gold lost at matched KL, member - ensemble"] = _less_lost([r["single"]], [r["ensemble"]])
            out[f"{what}: gold lost by the last step, member - ensemble"] = _less_lost(
                [r["single_end"]], [r["ensemble_end"]])
    se_ = rl.get("seed_ensemble")
    if se_:  # proxy.seed_members: one size's seed ensemble against one of its members
        out["seed ensemble: gold lost at their common KL, one member - best ensemble"] = _less_lost(
            [se_.get("single")], list((se_.get("ensembles") or {}).values()))
        out["seed ensemble: gold lost by the last step, one member - best ensemble (no check)"] = _less_lost(
            [se_.get("single_end")], list((se_.get("ensembles_end") or {}).values()))
    return out


TRENDS = {  # the size law (finding 3) as slopes on ln(proxy parameters): label -> path in checks
    "size law, best-of-n: slope of ln d* (peak KL)": ("size_trend", "d_peak"),
    "size law, best-of-n: slope of ln(peak gold)": ("size_trend", "gold_peak"),
    "size law, RL: slope of ln d* (peak KL)": ("sweep", "size_trend", "d_peak"),
    "size law, RL: slope of ln(peak gold)": ("sweep", "size_trend", "gold_peak"),
}


def _trend_effects(checks: dict) -> dict[str, float | None]:
    """Finding 3 of one seed as signed effects: the slopes of ``checks.bon_size_trend`` and of the
    sweep's no-penalty peaks (> 0 where the peak grows with proxy size)."""
    out = {label: _num((_get(checks, path) or {}).get("slope")) for label, path in TRENDS.items()}
    # best-of-n's other findings as effects (> 0 where the check holds)
    drop = _num(checks.get("smallest_gold_drop_after_peak"))
    peak_n = checks.get("smallest_gold_peak_n")
    # 0 where gold peaks at n = 1 (never rose) or at the last n (never fell): the check fails there
    out["best-of-n: smallest proxy's gold drop after its peak"] = (
        None if drop is None else drop if isinstance(peak_n, int) and peak_n > 1 else 0.0)
    r2 = [_num(v) for v in (checks.get("r2") or {}).values()]
    out["best-of-n: min R² of the BoN form - 0.9"] = min(r2) - 0.9 if r2 and None not in r2 else None
    return out


def _ivw(per_seed: dict[str, dict]) -> dict | None:
    """Best-of-n slopes pooled by inverse variance (each seed's bootstrap s.e. over prompts): the
    pool's noise only, so its interval is narrower than the spread over seeds when proxies and
    labels vary from seed to seed -- both are reported."""
    got = [(t["slope"], t["se"]) for t in per_seed.values() if t and _num(t.get("slope")) is not None
           and _num(t.get("se"))]
    if len(got) < 2:
        return None
    w = np.array([1 / se**2 for _, se in got])
    m = float(np.sum(w * np.array([b for b, _ in got])) / w.sum())
    se = float(1 / math.sqrt(w.sum()))
    return {"mean": m, "se": se, "z": m / se, "n": len(got)}


def seeds_for_t(mean: float | None, se: float | None, n: int, t: float = 2.0, power: float = 0.8) -> int | None:
    """How many seeds a pooled mean needs for ``t`` (mean / s.e. over seeds) to exceed ``t`` with
    probability ``power``, if the effect and the spread over seeds are what ``n`` seeds measured:
    the smallest m with mean * sqrt(m) / sd >= t + z_power (normal approximation; z_0.8 = 0.84).
    None where the measured mean is not positive (no number of seeds would show it) or n < 2."""
    if mean is None or se is None or n < 2 or not mean > 0:
        return None
    sd = se * math.sqrt(n)
    return max(2, math.ceil(((t + NormalDist().inv_cdf(power)) * sd / mean) ** 2))


def _get(d: dict, path: tuple, scale: float = 1):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return scale * d if isinstance(d, (int, float)) and not isinstance(d, bool) else d


def default_root(config: dict) -> Path:
    """``runs/seeds-<hash of the config without its seed>``: one place for every seed of a config
    (hashed like ``config_digest``: its non-default leaves, so a new config field renames nothing)."""
    chosen = non_default(build(FrontierConfig, config))
    return Path("runs") / f"seeds-{digest({k: v for k, v in chosen.items() if k != 'seed'})[:10]}"


def bool_checks(checks: dict, prefix: str = "") -> dict[str, bool]:
    """Every boolean leaf of a checks tree, keyed by its dotted path."""
    out = {}
    for k, v in checks.items():
        if isinstance(v, bool):
            out[prefix + k] = v
        elif isinstance(v, dict):
            out.update(bool_checks(v, f"{prefix}{k}."))
    return out


def load_runs(dirs: list[Path]) -> list[dict]:
    """Each finished run's config and frontier.json, checked to be one config over distinct seeds."""
    runs = []
    for d in dirs:
        d = Path(d)
        for f in ("config.yaml", "frontier.json"):
            if not (d / f).is_file():
                raise SeedsError(f"{d}: no {f} (not a finished run of jobs.frontier)")
        try:  # loaded, so runs saved before a field existed compare equal when it has its default
            cfg = to_dict(load(FrontierConfig, d / "config.yaml"))
            fr = json.loads((d / "frontier.json").read_text())
        except ConfigError as e:
            raise SeedsError(f"{d}/config.yaml: {e}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SeedsError(f"{d}/frontier.json: unreadable ({type(e).__name__}: {e})") from None
        if not isinstance(fr, dict) or "checks" not in fr:
            raise SeedsError(f"{d}/frontier.json: not a finished run's record (no checks)")
        runs.append({"dir": str(d), "seed": cfg.get("seed"), "config": cfg, "frontier": fr})
    if len(runs) < 2:
        raise SeedsError("give at least two run directories (one per seed)")
    base = {k: v for k, v in runs[0]["config"].items() if k != "seed"}
    for r in runs[1:]:
        other = {k: v for k, v in r["config"].items() if k != "seed"}
        if other != base:
            key = _first_difference(base, other)
            raise SeedsError(f"{r['dir']}: another config than {runs[0]['dir']} (differs at {key}); "
                             "compare runs that differ only in seed")
    seeds = [r["seed"] for r in runs]
    if len(set(seeds)) != len(seeds):
        dup = next(s for s in seeds if seeds.count(s) > 1)
        raise SeedsError(f"seed {dup} is given twice ({', '.join(r['dir'] for r in runs if r['seed'] == dup)})")
    return sorted(runs, key=lambda r: r["seed"])


def _first_difference(a, b, path: str = "") -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b), key=str):
            if a.get(k) != b.get(k):
                return _first_difference(a.get(k), b.get(k), f"{path}.{k}" if path else str(k))
    return path or "<top>"


def aggregate(runs: list[dict]) -> dict:
    """Per-check seed counts, per-seed numbers, and seed-averaged size trends (see module doc)."""
    from orchestrator.math.scaling import spearman

    seeds = [r["seed"] for r in runs]
    per = {r["seed"]: bool_checks(r["frontier"]["checks"]) for r in runs}
    names = sorted({k for c in per.values() for k in c})
    checks = {n: {"holds_in": [s for s in seeds if per[s].get(n) is True],
                  "fails_in": [s for s in seeds if per[s].get(n) is False],
                  "missing_in": [s for s in seeds if n not in per[s]]} for n in names}
    numbers = {label: {str(r["seed"]): _get(r["frontier"]["checks"], path, scale) for r in runs}
               for label, (path, scale) in NUMBERS.items()}
    numbers["job wall (s)"] = {str(r["seed"]): r["frontier"].get("wall_seconds") for r in runs}
    per_effects = {str(r["seed"]): {**_trend_effects(r["frontier"]["checks"]),
                                    **_rl_effects(r["frontier"]["checks"].get("rl") or {}),
                                    **ensemble_effects(r["frontier"]),
                                    **generalization_effects(r["frontier"]),
                                    **pareto_effects(r["frontier"])} for r in runs}
    effects = {}
    for label in dict.fromkeys(k for e in per_effects.values() for k in e):
        vals = {s: e.get(label) for s, e in per_effects.items()}
        got = [v for v in vals.values() if v is not None]
        effects[label] = {"per_seed": vals, **_mean_se(got), "positive_in": sum(v > 0 for v in got)}
        st = effects[label]
        st["t"] = st["mean"] / st["se"] if st["se"] else None  # mean over its standard error across seeds
        st["seeds_for_t2"] = seeds_for_t(st["mean"], st["se"], st["n"])
    pooled: dict = {}
    for kind in ("bon", "rl"):
        sizes: dict[str, dict] = {}
        for r in runs:
            fr = r["frontier"]
            if kind == "bon":
                ests = {e["proxy"]: (e["proxy_params"], e["fit"]["kl_peak"], e["fit"]["gold_peak"])
                        for e in fr.get("bon", []) if e.get("labels", "gold") == "gold" and e.get("fit")
                        and e.get("kind", "proxy") == "proxy"}  # the size law: one proxy per size
            else:
                peaks = fr["checks"].get("sweep", {}).get("no_penalty_peaks", {})
                ests = {p: (v["params"], v["kl_peak_fit"], v["gold_peak_fit"]) for p, v in peaks.items()}
            for p, (n, kl, g) in ests.items():
                s = sizes.setdefault(p, {"params": n, "kl_peak": {}, "gold_peak": {}})
                s["kl_peak"][str(r["seed"])], s["gold_peak"][str(r["seed"])] = kl, g
        if not sizes:
            continue
        order = sorted(sizes, key=lambda p: sizes[p]["params"])
        for p in order:
            for q in ("kl_peak", "gold_peak"):
                sizes[p][q + "_over_seeds"] = _mean_se(list(sizes[p][q].values()))
        out = {"sizes": {p: sizes[p] for p in order}}
        if len(order) >= 3:
            for q in ("kl_peak", "gold_peak"):
                for stat in ("mean", "median"):  # the median: one seed's runaway fit moves the mean
                    v = [sizes[p][q + "_over_seeds"][stat] for p in order]
                    out[f"spearman_size_{q}_of_{stat}s"] = (spearman([sizes[p]["params"] for p in order], v)
                                                           if None not in v else None)
        if kind == "bon":
            for q in ("d_peak", "gold_peak"):
                out[f"{q}_slope_inverse_variance"] = _ivw(
                    {str(r["seed"]): (r["frontier"]["checks"].get("size_trend") or {}).get(q) for r in runs})
        pooled[kind] = out
    return {"seeds": seeds, "runs": [r["dir"] for r in runs], "config_hash": runs[0]["frontier"].get("config_hash"),
            "checks": checks, "numbers": numbers, "effects": effects, "pooled": pooled, "monitor": pool_monitor(runs),
            "active": pool_active(runs), "calibration": pool_calibration(runs)}


def plot(agg: dict) -> bytes | None:
    """Fitted peak KL and peak gold against proxy size: one thin line per seed, the mean over
    seeds (± 1 s.e.) in black; best-of-n above, RL (no penalty) below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    from orchestrator.report.render import _png

    kinds = [k for k in ("bon", "rl") if k in agg["pooled"]]
    if not kinds:
        return None
    fig, axes = plt.subplots(len(kinds), 2, figsize=(9, 3.4 * len(kinds)), squeeze=False)
    for i, kind in enumerate(kinds):
        sizes = agg["pooled"][kind]["sizes"]
        x = [v["params"] for v in sizes.values()]
        for j, (q, label) in enumerate((("kl_peak", "peak KL (nats, fitted)"), ("gold_peak", "peak gold (fitted)"))):
            ax = axes[i, j]
            for s in agg["seeds"]:
                y = [v[q].get(str(s)) for v in sizes.values()]
                ax.plot(x, [np.nan if v is None else v for v in y], "o-", lw=0.8, alpha=0.6, label=f"seed {s}")
            m = [v[q + "_over_seeds"] for v in sizes.values()]
            ax.errorbar(x, [np.nan if e["mean"] is None else e["mean"] for e in m],
                        yerr=[0 if not e["se"] else e["se"] for e in m], color="black", lw=2, capsize=3, label="mean ± s.e.")
            ax.plot(x, [np.nan if e["median"] is None else e["median"] for e in m], "k--", lw=1.5, label="median")
            rho = agg["pooled"][kind].get(f"spearman_size_{q}_of_medians")
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.set_xticks(x, [f"{n / 1e3:.0f}k" for n in x])
            ax.set_xlabel("proxy parameters")
            ax.set_title(f"{'best-of-n' if kind == 'bon' else 'RL, no penalty'}: {label}"
                         + (f"\nSpearman of the medians {rho:+.2f}" if rho is not None else ""), fontsize=9)
            ax.legend(fontsize=7)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def markdown(agg: dict) -> str:
    seeds = agg["seeds"]
    head = "| | " + " | ".join(f"seed {s}" for s in seeds) + " | holds in |"
    rule = "|---|" + "---|" * (len(seeds) + 1)
    lines = [f"# Across seeds: {', '.join(map(str, seeds))}", "",
             f"config hash of the first run `{str(agg['config_hash'])[:12]}`; runs: "
             + ", ".join(f"`{d}`" for d in agg["runs"]), "", "![peaks over seeds](seeds.png)", "",
             "## Checks", "", head, rule]
    mark = {True: "yes", False: "**no**", None: "-"}
    for name, c in agg["checks"].items():
        cells = [mark[True if s in c["holds_in"] else False if s in c["fails_in"] else None] for s in seeds]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {len(c['holds_in'])} of {len(seeds)} |")
    lines += ["", "## Numbers", "", "| | " + " | ".join(f"seed {s}" for s in seeds) + " |",
              "|---|" + "---|" * len(seeds)]
    for label, vals in agg["numbers"].items():
        cells = ["-" if vals[str(s)] is None else f"{vals[str(s)]:.3f}" if isinstance(vals[str(s)], float)
                 else str(vals[str(s)]) for s in seeds]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    if agg.get("effects"):
        lines += ["", "## Findings as effect sizes (> 0 where the finding holds)", "",
                  "| | " + " | ".join(f"seed {s}" for s in seeds)
                  + " | mean ± s.e. | t | > 0 in | seeds for t > 2 (80% power) |",
                  "|---|" + "---|" * (len(seeds) + 4)]
        for label, e in agg["effects"].items():
            cells = ["-" if e["per_seed"].get(str(s)) is None else f"{e['per_seed'][str(s)]:+.3f}" for s in seeds]
            ms = "-" if e["mean"] is None else f"{e['mean']:+.3f}" + (f" ± {e['se']:.3f}" if e["se"] else "")
            t = "-" if e["t"] is None else f"{e['t']:+.1f}"
            need = e.get("seeds_for_t2")
            need = "-" if need is None else str(need)
            lines.append(f"| {label} | " + " | ".join(cells) + f" | {ms} | {t} | {e['positive_in']} of {e['n']} | {need} |")
    for kind, p in agg["pooled"].items():
        lines += ["", f"## {'Best-of-n' if kind == 'bon' else 'RL (no penalty)'}: fitted peaks over seeds", "",
                  "| proxy | params | peak KL: mean ± s.e. (median) | peak gold: mean ± s.e. (median) |",
                  "|---|---|---|---|"]
        for name, v in p["sizes"].items():
            f = lambda e: "-" if e["mean"] is None else (f"{e['mean']:.3f}" + (f" ± {e['se']:.3f}" if e["se"] else "")  # noqa: E731
                                                        + f" ({e['median']:.3f})")
            lines.append(f"| {name} | {v['params']} | {f(v['kl_peak_over_seeds'])} | {f(v['gold_peak_over_seeds'])} |")
        lines.append("")
        for q in ("kl_peak", "gold_peak"):
            rho = [p.get(f"spearman_size_{q}_of_{stat}s") for stat in ("mean", "median")]
            if None not in rho:
                lines.append(f"- Spearman(size, {q.replace('_', ' ')}) over seeds: of the means {rho[0]:+.2f}, "
                             f"of the medians {rho[1]:+.2f}")
        for q, what in (("d_peak", "ln d*"), ("gold_peak", "ln(peak gold)")):
            iv = p.get(f"{q}_slope_inverse_variance")
            if iv:
                lines.append(f"- slope of {what} on ln params, the seeds pooled by their bootstrap variance (the "
                             f"pool's noise only): {iv['mean']:+.3f} ± {iv['se']:.3f} (z {iv['z']:+.1f}, "
                             f"{iv['n']} seeds)")
    if agg.get("monitor"):
        lines += ["", "## Gold-free overoptimization detectors, pooled over seeds", "",
                  "| detector | rule | runs | gold falls in | alarms | warned before the peak | lead (evals, median) "
                  "| lead (nats, median) | false-alarm rate | gold kept |", "|---|---|---|---|---|---|---|---|---|---|"]
        for name, m in agg["monitor"].items():
            p = m["pooled"]
            f = lambda x, nd=2: "-" if x is None else f"{x:.{nd}f}"  # noqa: E731
            lines.append(f"| {name} | {m['rule']} | {p['n_runs']} | {p['runs_gold_falls']} | {p['alarms']} | "
                         f"{p['warned_before_peak']} | {f(p['lead_median'], 1)} | {f(p['lead_kl_median'])} | "
                         f"{f(p['false_alarm_rate'])} | {f(p['gold_kept_frac'])} |")
        cv = {n: m["cross_validated"] for n, m in agg["monitor"].items() if m.get("cross_validated")}
        if cv:
            lines += ["", "Each seed's runs scored by the rule chosen on the other seeds' runs (the most gold kept at a "
                      "false-alarm rate <= 10%; `orchestrator.math.monitor.calibrate`), the held-out runs pooled:", "",
                      "| detector | thresholds chosen (held-out seed: threshold, patience) | held-out runs | alarms | "
                      "warned before the peak | lead (evals, median) | false-alarm rate | gold kept |",
                      "|---|---|---|---|---|---|---|---|"]
            for name, c in cv.items():
                ch = "; ".join(f"{x['held_out']}: " + ("none within 10%" if x["threshold"] is None
                                                       else f"{x['threshold']:.3g}, {x['patience']}") for x in c["folds"])
                h = c["held_out"]
                if h is None:
                    lines.append(f"| {name} | {ch} | - | - | - | - | - | - |")
                else:
                    lines.append(f"| {name} | {ch} | {h['n_runs']} | {h['alarms']} | {h['warned_before_peak']} | "
                                 f"{f(h['lead_median'], 1)} | {f(h['false_alarm_rate'])} | {f(h['gold_kept_frac'])} |")
    cal = agg.get("calibration")
    if cal:
        lines += ["", "## Calibration of the proxies over seeds (held-out pairs)", "",
                  "| proxy | params | acc | NLL | ECE | ECE at tau | tau |", "|---|---|---|---|---|---|---|"]
        ms = lambda e: "-" if e["mean"] is None else f"{e['mean']:.3f}" + (f" ± {e['se']:.3f}" if e["se"] else "")  # noqa: E731
        for name, v in cal["sizes"].items():
            lines.append(f"| {name} | {v['params']} | {ms(v['acc'])} | {ms(v['nll'])} | {ms(v['ece'])} | "
                         f"{ms(v['ece_tau'])} | {ms(v['tau'])} |")
        lines += ["", f"Does calibration or accuracy predict the frontier? Spearman over {cal['n']} (proxy, seed) "
                  "pairs against the fitted best-of-n peak:", "", "| | peak KL | peak gold |", "|---|---|---|"]
        for m, v in cal["predicts_frontier"].items():
            lines.append(f"| {m} | {v['kl_peak']:+.2f} | {v['gold_peak']:+.2f} |")
    act = agg.get("active")
    if act and act.get("error"):
        lines += ["", f"Active learning: {act['error']}."]
    elif act:
        lines += ["", "## Active learning (jobs.active): each arm minus random at equal labels", "",
                  "Mean over the acquisition rounds, per seed; then mean ± s.e. (t) over seeds "
                  f"({', '.join(act['seeds'])}):", "",
                  "| arm | held-out acc | held-out ECE | best-of-n peak gold | its KL |", "|---|---|---|---|---|"]
        for arm, ms in act["versus_random"].items():
            cell = lambda e: ("-" if e["mean"] is None else f"{e['mean']:+.4f}" + (  # noqa: E731
                f" ± {e['se']:.4f} (t {e['t']:+.1f})" if e["se"] else ""))
            lines.append(f"| {arm} | " + " | ".join(cell(ms[m]) for m in ("val_acc", "val_ece", "bon_peak_gold",
                                                                              "bon_peak_kl")) + " |")
    return "\n".join(lines) + "\n"


def write(agg: dict, out: Path) -> dict[str, Path]:
    """seeds.json, seeds.md, seeds.png and a self-contained seeds.html in ``out``."""
    from orchestrator.report.render import md_to_html

    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "seeds.json", "md": out / "seeds.md", "html": out / "seeds.html"}
    paths["json"].write_text(json.dumps(agg, indent=1))
    md = markdown(agg)
    png = plot(agg)
    images = {}
    if png:
        paths["png"] = out / "seeds.png"
        paths["png"].write_bytes(png)
        images["seeds.png"] = png
    else:
        md = md.replace("![peaks over seeds](seeds.png)\n", "")
    paths["md"].write_text(md)
    paths["html"].write_text(md_to_html(md, images, "rlhf-frontier: across seeds"))
    return paths
