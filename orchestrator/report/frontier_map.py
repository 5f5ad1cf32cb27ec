"""The frontier map of an RL sweep (KL coefficient x proxy size): plots (its checks are
``orchestrator.math.checks.sweep_checks``).

Gao et al. 2022, section 3: over proxy sizes, the gold peak of RL moves to larger KL and higher
gold; a KL penalty stops runs earlier (lower final KL) but traces about the same gold-vs-KL
frontier ("the KL penalty acts like early stopping"). Peaks come from the fitted RL form
R(d) = d (alpha - beta ln d) with d = sqrt(KL): the empirical argmax of noisy evaluations is too
noisy to rank sizes by.
"""

from __future__ import annotations

import io

import numpy as np

from orchestrator.math.checks import cells


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
