"""The frontier map of an RL sweep (KL coefficient x proxy size): checks and plots.

Gao et al. 2022, section 3: over proxy sizes, the gold peak of RL moves to larger KL and higher
gold; a KL penalty stops runs earlier (lower final KL) but traces about the same gold-vs-KL
frontier ("the KL penalty acts like early stopping"). Peaks come from the fitted RL form
R(d) = d (alpha - beta ln d) with d = sqrt(KL): the empirical argmax of noisy evaluations is too
noisy to rank sizes by.
"""

from __future__ import annotations

import io
import math

import numpy as np


def _single(rl: list[dict]) -> list[dict]:
    return [e for e in rl if len(e["members"]) == 1]


def cells(rl: list[dict]) -> dict[tuple[str, float], list[dict]]:
    """(proxy, kl_coef) -> runs (one per seed)."""
    out: dict = {}
    for e in _single(rl):
        out.setdefault((e["members"][0], e["kl_coef"]), []).append(e)
    return out


def gold_on_curve(points: list[dict], kl: float) -> float | None:
    """Gold of a curve at ``kl`` (linear in sqrt(KL) between its points, the curve's running
    order); None beyond the KL the curve reached."""
    d = math.sqrt(max(kl, 0.0))
    prev = (0.0, 0.0)
    for p in points:
        dp = math.sqrt(max(p["kl"], 0.0))
        if dp >= d:
            return p["gold"] if dp == prev[0] else prev[1] + (p["gold"] - prev[1]) * (d - prev[0]) / (dp - prev[0])
        prev = (dp, p["gold"])
    return None


def sweep_checks(bon: list[dict], rl: list[dict]) -> dict:
    """Issue 4's findings on a sweep: size trends of the no-penalty RL peaks (fitted), and whether
    penalty runs stop at lower KL on the no-penalty frontier (the gap, in gold units)."""
    from orchestrator.scaling import spearman

    out: dict = {}
    c = cells(rl)
    proxies = sorted({p for p, _ in c}, key=lambda p: c[(p, min(k for q, k in c if q == p))][0]["proxy_params"])
    coefs = sorted({k for _, k in c})
    out["proxies"], out["kl_coefs"] = proxies, coefs
    if 0.0 in coefs:
        peaks = {}
        for p in proxies:
            runs = c.get((p, 0.0), [])
            fits = [r["fit"] for r in runs if r.get("fit")]
            kl_pk = [f["kl_peak"] for f in fits]
            g_pk = [f["gold_peak"] for f in fits]
            peaks[p] = {"params": runs[0]["proxy_params"] if runs else None,
                        "kl_peak_fit": float(np.mean(kl_pk)) if kl_pk and None not in kl_pk else None,
                        "gold_peak_fit": float(np.mean(g_pk)) if g_pk and None not in g_pk else None,
                        "gold_peak_empirical": _mean([r["gold_peak_empirical"]["gold"] for r in runs
                                                      if r.get("gold_peak_empirical")])}
        out["no_penalty_peaks"] = peaks
        sizes = [peaks[p]["params"] for p in proxies]
        if len(proxies) >= 3:
            out["spearman_size_kl_peak"] = spearman(sizes, [peaks[p]["kl_peak_fit"] for p in proxies])
            gp = [peaks[p]["gold_peak_fit"] for p in proxies]
            out["spearman_size_gold_peak"] = spearman(sizes, [-math.inf if v is None else v for v in gp])
            out["peak_kl_grows_with_size"] = bool(out["spearman_size_kl_peak"] > 0)
            out["peak_gold_grows_with_size"] = bool(out["spearman_size_gold_peak"] > 0)
        pen = {}
        for p in proxies:
            base = c.get((p, 0.0), [])
            if not base:
                continue
            for k in coefs:
                if k == 0.0:
                    continue
                for r in c.get((p, k), []):
                    b = next((x for x in base if x.get("seed") == r.get("seed")), base[0])
                    gaps = [g - pt["gold"] for pt in r["points"][1:]
                            if (g := gold_on_curve(b["points"], pt["kl"])) is not None]
                    pen[f"{p}@{k:g}"] = {
                        "final_kl": r["points"][-1]["kl"], "final_kl_no_penalty": b["points"][-1]["kl"],
                        "lower_final_kl": bool(r["points"][-1]["kl"] < b["points"][-1]["kl"]),
                        "gap_mean_abs": float(np.mean(np.abs(gaps))) if gaps else None,
                        "gap_mean": float(np.mean(gaps)) if gaps else None,
                        "gold_se": r.get("gold_se")}
        out["penalty"] = pen
        if pen:
            out["penalty_lower_final_kl"] = bool(all(v["lower_final_kl"] for v in pen.values()))
            gaps = [v["gap_mean_abs"] for v in pen.values() if v["gap_mean_abs"] is not None]
            ses = [v["gold_se"] for v in pen.values() if v["gold_se"]]
            out["penalty_gap_mean_abs"] = float(np.mean(gaps)) if gaps else None
            out["gold_se_mean"] = float(np.mean(ses)) if ses else None
            # "near": within two standard errors of one evaluation's gold (difference of two curves)
            out["penalty_near_frontier"] = bool(gaps and ses and np.mean(gaps) <= 2 * math.sqrt(2) * np.mean(ses))
    keys = [k for k in ("peak_kl_grows_with_size", "peak_gold_grows_with_size", "penalty_lower_final_kl",
                        "penalty_near_frontier") if k in out]
    out["all_pass"] = bool(keys) and all(out[k] for k in keys)
    # the scaling of the fitted coefficients with proxy size, BoN and RL (no penalty)
    bon_by = {e["proxy"]: e for e in bon}
    out["coefficients"] = {p: {"params": out.get("no_penalty_peaks", {}).get(p, {}).get("params"),
                               "bon": {k: bon_by[p]["fit"][k] for k in ("alpha", "beta")} if p in bon_by else None,
                               "rl": _mean_fit(c.get((p, 0.0), []))} for p in proxies}
    return out


def _mean(xs: list[float]) -> float | None:
    return float(np.mean(xs)) if xs else None


def _mean_fit(runs: list[dict]) -> dict | None:
    fits = [r["fit"] for r in runs if r.get("fit")]
    if not fits:
        return None
    return {k: float(np.mean([f[k] for f in fits])) for k in ("alpha", "beta")}


def _png(fig) -> bytes:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def plot_cells(rl: list[dict]) -> bytes:
    """Gold (solid) and proxy (dashed) vs sqrt(KL), one panel per (proxy size, KL coefficient)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = cells(rl)
    proxies = sorted({p for p, _ in c}, key=lambda p: c[next(k for k in c if k[0] == p)][0]["proxy_params"])
    coefs = sorted({k for _, k in c})
    fig, axes = plt.subplots(len(proxies), len(coefs), figsize=(3.0 * len(coefs), 2.4 * len(proxies)),
                             squeeze=False, sharex=True)
    for i, p in enumerate(proxies):
        for j, k in enumerate(coefs):
            ax = axes[i, j]
            for r in c.get((p, k), []):
                d = np.sqrt([pt["kl"] for pt in r["points"]])
                ax.plot(d, [pt["gold"] for pt in r["points"]], "-o", ms=2, color="tab:red")
                ax.plot(d, [pt["proxy"] for pt in r["points"]], "--", color="tab:blue")
            ax.axhline(0, color="grey", lw=0.5)
            ax.set_title(f"{p}  beta={k:g}", fontsize=8)
            if i == len(proxies) - 1:
                ax.set_xlabel("sqrt(KL)")
    axes[0, 0].legend(["gold", "proxy"], fontsize=7)
    fig.tight_layout()
    return _png(fig)


def plot_heatmaps(rl: list[dict]) -> bytes:
    """Peak gold and the KL at the peak (empirical, mean over seeds) over KL coefficient x size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = cells(rl)
    proxies = sorted({p for p, _ in c}, key=lambda p: c[next(k for k in c if k[0] == p)][0]["proxy_params"])
    coefs = sorted({k for _, k in c})
    gold = np.full((len(proxies), len(coefs)), np.nan)
    kl = np.full_like(gold, np.nan)
    for i, p in enumerate(proxies):
        for j, k in enumerate(coefs):
            pk = [r["gold_peak_empirical"] for r in c.get((p, k), []) if r.get("gold_peak_empirical")]
            if pk:
                gold[i, j] = np.mean([x["gold"] for x in pk])
                kl[i, j] = np.mean([x["kl"] for x in pk])
    fig, axes = plt.subplots(1, 2, figsize=(4 + 1.2 * len(coefs) * 2, 1.0 + 0.7 * len(proxies)))
    for ax, m, title in ((axes[0], gold, "peak gold"), (axes[1], kl, "KL at the gold peak (nats)")):
        im = ax.imshow(m, cmap="viridis", aspect="auto")
        ax.set_xticks(range(len(coefs)), [f"{k:g}" for k in coefs])
        ax.set_yticks(range(len(proxies)), proxies)
        ax.set_xlabel("KL coefficient (beta)")
        ax.set_title(title)
        for (a, b), v in np.ndenumerate(m):
            if np.isfinite(v):
                ax.text(b, a, f"{v:.2f}", ha="center", va="center", color="white", fontsize=8)
        fig.colorbar(im, ax=ax)
    fig.tight_layout()
    return _png(fig)


def plot_coefficients(checks: dict) -> bytes:
    """Fitted alpha and beta per proxy size vs log10 parameters, best-of-n and RL (no penalty)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    co = {p: v for p, v in checks.get("coefficients", {}).items() if v.get("params")}
    x = np.log10([v["params"] for v in co.values()])
    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    for ax, key in zip(axes, ("alpha", "beta")):
        for kind, style in (("bon", "o-"), ("rl", "s--")):
            y = [v[kind][key] if v.get(kind) else np.nan for v in co.values()]
            ax.plot(x, y, style, label=kind.upper() if kind == "rl" else "BoN")
        ax.set_xlabel("log10 proxy parameters")
        ax.set_title(f"fitted {key}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def plot_penalty(rl: list[dict]) -> bytes:
    """Per proxy size: gold vs sqrt(KL) of every KL coefficient on one axis (do penalty runs trace
    the no-penalty frontier and stop earlier?)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = cells(rl)
    proxies = sorted({p for p, _ in c}, key=lambda p: c[next(k for k in c if k[0] == p)][0]["proxy_params"])
    coefs = sorted({k for _, k in c})
    fig, axes = plt.subplots(1, len(proxies), figsize=(3.4 * len(proxies), 3), squeeze=False)
    colors = plt.cm.plasma(np.linspace(0, 0.85, len(coefs)))
    for i, p in enumerate(proxies):
        ax = axes[0, i]
        for k, col in zip(coefs, colors):
            for n, r in enumerate(c.get((p, k), [])):
                d = np.sqrt([pt["kl"] for pt in r["points"]])
                ax.plot(d, [pt["gold"] for pt in r["points"]], "-o", ms=2, color=col,
                        label=f"beta={k:g}" if n == 0 else None)
        ax.set_title(p, fontsize=9)
        ax.set_xlabel("sqrt(KL)")
        ax.axhline(0, color="grey", lw=0.5)
    axes[0, 0].set_ylabel("gold (relative to the initial policy)")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    return _png(fig)
