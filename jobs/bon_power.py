"""``python -m jobs.bon_power``: where the spread of best-of-n's fitted peaks comes from.

Gao et al. (2022)'s size law for best-of-n -- the gold peak's KL (d* = sqrt(KL*)) and height grow
with reward-model size -- is read off four fitted peaks per run. This job takes finished runs
(one per seed, one config) and splits the spread of ln d* per proxy size into

- **pool, prompts**: the bootstrap over the pool's prompts (the job's own ``bon.bootstrap``);
- **pool, samples**: the two halves of every prompt's samples fitted apart (N/2 each); their
  difference's variance / 2 is the variance of one half, / 4 that of the full pool (sampling
  variance goes as 1/N);
- **the fit**: the same pool fitted with and without the d-spacing weights, and on n <= N/4, N/2;
- **everything else** (the task's prompts, the LMs, the labels, the proxies' training): the
  spread over seeds minus the pool's share.

and gives, per run, the size trend (the weighted slope of ln d* and ln peak gold on ln params
with its bootstrap interval, ``checks.size_trend``) and over runs the same slopes' mean, standard
error and t.

``--factors order,labels,lm`` splits "everything else" further: every proxy size of each run is
retrained ``--replicates`` times with exactly one input redrawn -- the head's seed and minibatch
order, a bootstrap of the label pairs by prompt, or the starting LMs' seed
(``orchestrator.run.proxy_factors``; cached stages of the run directory, minutes each on 2 cores:
the ``lm`` factor trains four LMs) -- and the spread of ln d* and of the size slope over each
factor's replicates is printed beside the pool's.

    python -m jobs.bon_power RUN_DIR [RUN_DIR ...] [--bootstrap 200] [--json OUT.json]
    python -m jobs.bon_power RUN_DIR --factors order,labels,lm --replicates 2

Runs need ``stages/bon-*/bon_scores.parquet`` (any finished run has it; ``rl.enabled=false``
runs best-of-n only).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path


def _pool(run: Path):
    import pyarrow.parquet as pq

    from orchestrator.math.bon import pool_matrix
    from orchestrator.run.cli import user_error

    fr = run / "frontier.json"
    files = sorted(run.glob("stages/bon-*/bon_scores.parquet"))
    if not fr.is_file() or not files:
        user_error(f"{run}: not a finished run (needs frontier.json and stages/bon-*/bon_scores.parquet)")
    frontier = json.loads(fr.read_text())
    t = pq.read_table(files[-1]).to_pydict()
    N = len(t["prompt_id"]) // len(set(t["prompt_id"]))
    gold = pool_matrix(t, "score.gold", N)
    entries = sorted([e for e in frontier["bon"] if e.get("labels", "gold") == "gold" and e.get("kind", "proxy") == "proxy"],
                     key=lambda e: e["proxy_params"])
    proxies = {e["proxy"]: pool_matrix(t, f"score.{e['proxy']}", N) for e in entries}
    return frontier, entries, gold, proxies


def _peak(proxy, gold, n_max: int, weighted: bool = True) -> tuple[float | None, float | None, float]:
    """(fitted peak KL, fitted peak gold, weighted R²) of best-of-n on one pool."""
    from orchestrator.math.bon import bon_curves, kl_bon
    from orchestrator.math.scaling import d_spacing_weights, fit_bon

    _, gb = bon_curves(proxy, gold, n_max)
    g = gb.mean(0) - gb[:, 0].mean()
    kl = kl_bon(range(1, n_max + 1))
    f = fit_bon(kl, g, d_spacing_weights(kl) if weighted else None)
    return f.kl_peak, f.gold_peak, f.r2


def _ln_d(kl: float | None, cap: float) -> float:
    return 0.5 * math.log(min(kl, cap) if kl is not None else cap)


def analyse(run: Path, bootstrap: int) -> dict:
    import numpy as np

    from orchestrator.math.bon import kl_bon
    from orchestrator.math.checks import bon_size_trend

    frontier, entries, gold, proxies = _pool(run)
    P, N = gold.shape
    cap = float(kl_bon(N))
    rng = np.random.default_rng(12345)
    boots = [rng.integers(0, P, P) for _ in range(bootstrap)]
    sizes = {}
    for e in entries:
        name, px = e["proxy"], proxies[e["proxy"]]
        kl_w, g_w, r2_w = _peak(px, gold, N)
        kl_u, _, r2_u = _peak(px, gold, N, weighted=False)
        h = N // 2
        halves = [_peak(px[:, :h], gold[:, :h], h)[0], _peak(px[:, h:], gold[:, h:], h)[0]]
        ln_b = [_ln_d(_peak(px[b], gold[b], N)[0], cap) for b in boots]
        sizes[name] = {
            "params": e["proxy_params"], "val_accuracy": e.get("val_accuracy"),
            "kl_peak": kl_w, "gold_peak": g_w, "r2": r2_w, "kl_peak_unweighted": kl_u, "r2_unweighted": r2_u,
            "kl_peak_n_quarter": _peak(px, gold, N // 4)[0], "kl_peak_n_half": _peak(px, gold, N // 2)[0],
            "kl_peak_halves": halves,
            "ln_d_prompts_sd": float(np.std(ln_b, ddof=1)) if len(ln_b) > 1 else None,
            # one half's variance is (difference)² / 2; the full pool's half that (1/N sampling variance)
            "ln_d_samples_sd": abs(_ln_d(halves[0], cap) - _ln_d(halves[1], cap)) / 2.0,
            "censored": kl_w is None or kl_w > cap,
        }
    trend = bon_size_trend(entries)
    return {"run": str(run), "seed": frontier["seed"], "prompts": P, "samples": N, "kl_cap": cap,
            "label_pairs": (frontier.get("label") or {}).get("pairs"), "sizes": sizes, "size_trend": trend}


def summarize(runs: list[dict]) -> dict:
    """Per size, the spread of ln d* over seeds against the pool's share of it; the slopes over runs."""
    import numpy as np

    names = list(runs[0]["sizes"])
    out = {"sizes": {}, "slopes": {}}
    for n in names:
        lnd = [_ln_d(r["sizes"][n]["kl_peak"], r["kl_cap"]) for r in runs if n in r["sizes"]]
        pr = [r["sizes"][n]["ln_d_prompts_sd"] for r in runs if n in r["sizes"]]
        sa = [r["sizes"][n]["ln_d_samples_sd"] for r in runs if n in r["sizes"]]
        total = float(np.var(lnd, ddof=1)) if len(lnd) > 1 else None
        pool = float(np.mean(np.square(pr)) + np.mean(np.square(sa)))  # prompts and samples, both resampled per seed
        out["sizes"][n] = {"ln_d_over_seeds_var": total, "ln_d_pool_var": pool,
                           "pool_share": (min(pool / total, 1.0) if total else None),
                           "ln_d_mean": float(np.mean(lnd)), "censored_in": sum(r["sizes"][n]["censored"] for r in runs)}
    for q in ("d_peak", "gold_peak"):
        s = [r["size_trend"][q]["slope"] for r in runs if r["size_trend"][q]["slope"] is not None]
        m, se = (float(np.mean(s)), float(np.std(s, ddof=1) / math.sqrt(len(s)))) if len(s) > 1 else (None, None)
        out["slopes"][q] = {"per_run": s, "mean": m, "se": se, "t": (m / se if se else None),
                            "ci90_per_run": [r["size_trend"][q]["ci90"] for r in runs]}
    return out


def _slope(params: list[int], lnd: list[float]) -> float | None:
    """Ordinary least-squares slope of ln d* on ln params (one replicate set's size trend); None
    for fewer than two sizes."""
    import numpy as np

    if len(params) < 2:
        return None
    x = np.log(np.asarray(params, float))
    return float(np.polyfit(x, np.asarray(lnd, float), 1)[0])


def factors(run: Path, which: list[str], replicates: int, progress: bool, sizes: list[str] | None = None) -> dict:
    """Per factor: ln d* of every size (or of ``sizes``) in the run's own proxies and in each
    replicate set (that factor redrawn), the s.d. over them per size, and the s.d. of the size slope."""
    import dataclasses

    import numpy as np
    import pyarrow.parquet as pq

    from orchestrator.config.schema import FrontierConfig, load
    from orchestrator.math.bon import kl_bon, pool_matrix
    from orchestrator.run.cli import init_ray
    from orchestrator.run.proxy_factors import replicate_proxies

    frontier, entries, gold, proxies = _pool(run)
    cfg = load(FrontierConfig, run / "config.yaml")
    if sizes:
        missing = [z for z in sizes if f"proxy-{z}" not in proxies]
        if missing:
            from orchestrator.run.cli import user_error

            user_error(f"--sizes: {missing} not among the run's proxies ({', '.join(proxies)})")
        entries = [e for e in entries if e["proxy"].removeprefix("proxy-") in sizes]
        if cfg.proxy.models:  # proxies of your own models go by name
            keep = tuple(m for m, n in zip(cfg.proxy.models, cfg.proxy.names) if n in sizes)
            cfg = dataclasses.replace(cfg, proxy=dataclasses.replace(cfg.proxy, models=keep))
        else:
            cfg = dataclasses.replace(cfg, proxy=dataclasses.replace(cfg.proxy, sizes=tuple(sizes)))
    if "lm" in which and cfg.proxy.models:
        from orchestrator.run.cli import user_error

        user_error("--factors lm: this run's proxies are models of yours (proxy.models), with no LM to redraw")
    P, N = gold.shape
    cap = float(kl_bon(N))
    params = [e["proxy_params"] for e in entries]
    own = [_ln_d(_peak(proxies[e["proxy"]], gold, N)[0], cap) for e in entries]
    init_ray(cfg.cluster)
    out = {"run": str(run), "seed": frontier["seed"], "sizes": [e["proxy"] for e in entries], "params": params,
           "own": {"ln_d": own, "slope": _slope(params, own)}, "factors": {}}
    for f in which:
        sets = []
        for k in range(1, replicates + 1):
            st = replicate_proxies(cfg, run, f, k, progress)
            lnd, acc = [], []
            for e in entries:
                size = e["proxy"].removeprefix("proxy-")
                t = pq.read_table(st[size].dir / "bon_scores.parquet").to_pydict()
                lnd.append(_ln_d(_peak(pool_matrix(t, "score", N), gold, N)[0], cap))
                acc.append(st[size].meta.get("val_accuracy"))
            sets.append({"ln_d": lnd, "val_accuracy": acc, "slope": _slope(params, lnd)})
        allv = np.array([own] + [x["ln_d"] for x in sets])
        slopes = [out["own"]["slope"]] + [x["slope"] for x in sets]
        out["factors"][f] = {"replicates": sets, "ln_d_sd": np.std(allv, axis=0, ddof=1).tolist(),
                             "slope_sd": float(np.std(slopes, ddof=1)) if None not in slopes else None}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.bon_power", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="finished runs of one config (one per seed)")
    p.add_argument("--bootstrap", type=int, default=200, help="prompt resamples per run (default 200)")
    p.add_argument("--json", default=None, help="also write the numbers to this file")
    p.add_argument("--factors", default="", metavar="F[,F...]",
                   help="retrain the proxies with one input redrawn: order, labels, lm (see above)")
    p.add_argument("--replicates", type=int, default=2, help="replicate sets per factor (default 2)")
    p.add_argument("--sizes", default="", metavar="S[,S...]",
                   help="with --factors: only these proxy sizes (default: all of the run's)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (log lines only)")
    args = p.parse_args(argv)
    from orchestrator.run.cli import setup_logging, user_error

    which = [f.strip() for f in args.factors.split(",") if f.strip()]
    if which:  # the retraining path imports the pipeline (torch, transformers): only when asked
        from orchestrator.run.proxy_factors import FACTORS

        bad = [f for f in which if f not in FACTORS]
        if bad or args.replicates < 1:
            user_error(f"--factors: {bad} not among {', '.join(FACTORS)}" if bad else "--replicates must be >= 1")
    res = [analyse(Path(r), args.bootstrap) for r in args.runs]
    summ = summarize(res) if len(res) > 1 else None
    for r in res:
        print(f"seed {r['seed']}: {r['prompts']} prompts x {r['samples']} samples (KL up to {r['kl_cap']:.2f})")
        print(f"  {'proxy':10s} {'params':>7s} {'val acc':>7s} {'KL* w':>6s} {'R² w':>5s} {'KL* unw':>7s} {'R² unw':>6s} "
              f"{'KL* N/4':>7s} {'KL* N/2':>7s} {'halves':>11s} {'sd prompts':>10s} {'sd samples':>10s}")
        for n, s in r["sizes"].items():
            f = lambda v: "   none" if v is None else f"{v:7.2f}"
            print(f"  {n:10s} {s['params']:7d} {s['val_accuracy'] or float('nan'):7.3f} {f(s['kl_peak'])[1:]} "
                  f"{s['r2']:5.2f} {f(s['kl_peak_unweighted'])} {s['r2_unweighted']:6.2f} {f(s['kl_peak_n_quarter'])} "
                  f"{f(s['kl_peak_n_half'])} {f(s['kl_peak_halves'][0])[2:]}/{f(s['kl_peak_halves'][1])[2:]} "
                  f"{s['ln_d_prompts_sd']:10.3f} {s['ln_d_samples_sd']:10.3f}")
        for q, t in r["size_trend"].items():
            ci = t["ci90"]
            print(f"  slope {q}: {t['slope']:+.3f}" + (f"  90% [{ci[0]:+.3f}, {ci[1]:+.3f}]  p(<=0) {t['p_le0']:.2f}"
                                                      if ci else ""))
    if summ:
        print("over runs: ln d* variance over seeds vs the pool's (prompts + samples) share")
        g = lambda v, f=".4f": "-" if v is None else format(v, f)
        for n, s in summ["sizes"].items():
            print(f"  {n:10s} over seeds {g(s['ln_d_over_seeds_var'])}  pool {g(s['ln_d_pool_var'])}  "
                  f"share {g(s['pool_share'], '.2f')}  censored in {s['censored_in']} of {len(res)}")
        for q, s in summ["slopes"].items():
            if s["mean"] is not None:
                print(f"  slope {q}: mean {s['mean']:+.3f} ± {g(s['se'], '.3f')} (t {g(s['t'], '+.1f')}) "
                      f"over {len(s['per_run'])} runs")
    fac = []
    if which:
        setup_logging()
        for r, a in zip(args.runs, res):
            fx = factors(Path(r), which, args.replicates, progress=not args.quiet and sys.stderr.isatty(),
                         sizes=[z.strip() for z in args.sizes.split(",") if z.strip()] or None)
            fac.append(fx)
            sd_pr = [a["sizes"][n]["ln_d_prompts_sd"] for n in fx["sizes"]]
            print(f"seed {fx['seed']}: s.d. of ln d* per size ({' / '.join(x.removeprefix('proxy-') for x in fx['sizes'])})"
                  f" and of the size slope, over the run's own proxies and {args.replicates} replicate(s) per factor")
            sl = "" if fx["own"]["slope"] is None else f"   slope {fx['own']['slope']:+.3f}"
            print(f"  {'own proxies':24s} ln d* {' '.join(f'{v:6.3f}' for v in fx['own']['ln_d'])}{sl}")
            print(f"  {'pool (prompts, bootstrap)':24s} s.d.  {' '.join(f'{v:6.3f}' for v in sd_pr)}")
            for f, d in fx["factors"].items():
                sl = "" if d["slope_sd"] is None else (
                    f"   slope s.d. {d['slope_sd']:.3f}   slopes " + " ".join(format(x["slope"], "+.3f") for x in d["replicates"]))
                print(f"  {f:24s} s.d.  {' '.join(f'{v:6.3f}' for v in d['ln_d_sd'])}{sl}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": res, "summary": summ, "factors": fac}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
