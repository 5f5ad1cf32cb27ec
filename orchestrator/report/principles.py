"""The report's per-principle section (issue 22): each principle's proxies' best-of-n frontier against
that principle's own gold."""

from __future__ import annotations

from orchestrator.report.format import fmt
from orchestrator.report.format import png as _png


def plot_principles(bon: list[dict]) -> bytes:
    """One panel per principle: its proxies' best-of-n gain in that principle's gold (solid) and in their
    own score (dashed) against KL, one colour per size, the fitted peak marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    entries = [e for e in bon if e.get("kind") == "principle"]
    principles = list(dict.fromkeys(e["principle"] for e in entries))
    fig, axes = plt.subplots(1, len(principles), figsize=(4.2 * len(principles), 3.4), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, pr in zip(axes[0], principles):
        for i, e in enumerate(sorted((e for e in entries if e["principle"] == pr), key=lambda e: e["proxy_params"])):
            c = colors[i % len(colors)]
            kl = [p["kl"] for p in e["points"]]
            ax.plot(kl, [p["gold"] for p in e["points"]], color=c, label=e["proxy"].removeprefix("proxy-"))
            ax.plot(kl, [p["proxy"] for p in e["points"]], color=c, ls="--", lw=0.8)
            f = e["fit"]
            if f.get("kl_peak") is not None and f["kl_peak"] <= max(kl):
                ax.plot([f["kl_peak"]], [f["gold_peak"]], "o", color=c, ms=4)
        ax.set(title=f"{pr}: its gold (-), its proxy (--)", xlabel="KL (nats, best-of-n bound)", ylabel="gain")
        ax.legend(fontsize=6)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def principle_lines(bon: list[dict], has_png: bool) -> list[str]:
    entries = [e for e in bon if e.get("kind") == "principle"]
    lines = ["## Per-principle proxies", "",
             "Each proxy trained on one principle's labels of the same pairs (the oracle's principle score; "
             "ties dropped), its best-of-n measured against that principle's gold.", ""]
    if has_png:
        lines += ["![per-principle best-of-n](principles.png)", ""]
    lines += ["| proxy | principle | params | val acc | peak KL (fit) | peak gain (fit) | best measured gain |",
              "|---|---|---|---|---|---|---|"]
    for e in sorted(entries, key=lambda e: (e["principle"], e["proxy_params"])):
        f = e["fit"]
        lines.append(f"| {e['proxy']} | {e['principle']} | {e['proxy_params']} | {fmt(e.get('val_accuracy'))} | "
                     f"{fmt(f.get('kl_peak'), 2)} | {fmt(f.get('gold_peak'))} | {max(p['gold'] for p in e['points']):.3f} |")
    return lines + [""]


def plot_pareto(pareto: dict) -> bytes:
    """2-D projections of the front: each pair of principles, every weighted run's gold gains at its
    gold peak (grey), the non-dominated runs in colour with their weights, the reference at 0."""
    import itertools

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prs = pareto["principles"]
    pairs = list(itertools.combinations(range(len(prs)), 2)) or [(0, 0)]
    fig, axes = plt.subplots(1, len(pairs), figsize=(3.8 * len(pairs), 3.5), squeeze=False)
    pts = pareto["points"]
    for ax, (i, j) in zip(axes[0], pairs):
        for k, p in enumerate(pts):
            g = p["peak"]["gold"]
            on = k in pareto["front"]
            ax.plot(g[prs[i]], g[prs[j]], "o", color="C0" if on else "0.7", ms=5 if on else 3)
            if on and p.get("weights"):
                ax.annotate("/".join(f"{w:g}" for w in p["weights"]), (g[prs[i]], g[prs[j]]), fontsize=5)
        ax.axhline(0, color="k", lw=0.4)
        ax.axvline(0, color="k", lw=0.4)
        ax.set(xlabel=f"{prs[i]} gold gain", ylabel=f"{prs[j]} gold gain")
    fig.suptitle(f"weighted runs at their gold peak; front in colour (hypervolume {pareto['hypervolume']:.4f})",
                 fontsize=9)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def pareto_lines(pareto: dict, has_png: bool) -> list[str]:
    prs = pareto["principles"]
    lines = ["## The Pareto front of the principles", "",
             f"Runs optimizing fixed weights of the per-principle proxies; gold gains over the SFT policy per "
             f"principle at each run's overall gold peak. Non-dominated: {len(pareto['front'])} of "
             f"{len(pareto['points'])}; hypervolume above the SFT policy {pareto['hypervolume']:.4f} at the peaks, "
             f"{pareto['hypervolume_end']:.4f} at the runs' ends.", ""]
    if has_png:
        lines += ["![pareto](pareto.png)", ""]
    lines += ["| run | weights | KL at peak | " + " | ".join(prs) + " | on the front |",
              "|---|---|---|" + "---|" * len(prs) + "---|"]
    for k, p in enumerate(pareto["points"]):
        g = p["peak"]["gold"]
        lines.append(f"| {p['trial']} | {p.get('weights')} | {p['peak']['kl']:.2f} | " +
                     " | ".join(fmt(g[x]) for x in prs) + f" | {k in pareto['front']} |")
    return lines + [""]
