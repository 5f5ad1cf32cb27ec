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


def describe(p: dict) -> str:
    """A Pareto point's aggregation in a few characters: its weights, ``learned``, ``per-family`` or
    its constraint (what it maximizes, the level)."""
    a, w = p.get("aggregation", "fixed"), p.get("weights")
    if a == "constrained":
        c = p.get("constraints") or {}
        return f"max {c.get('maximize')} s.t. c={c.get('level', 0):g}"
    if a == "family":
        return "per-family"
    text = "/".join(f"{x:.2g}" for x in w) if isinstance(w, list) else str(w)
    return f"learned {text}" if a == "learned" else text


GROUP_STYLE = {"aggregation": ("o", "C0"), "constrained": ("s", "C3")}


def plot_pareto(pareto: dict) -> bytes:
    """2-D projections of the front: each pair of principles, every run's gold gains at its gold peak
    (circles: weighted aggregations, squares: constrained runs; grey off the front), the
    non-dominated runs in colour with their aggregation; and, where both kinds ran, each kind's
    hypervolume at equal KL (the last panel)."""
    import itertools

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from orchestrator.math.pareto import AGGREGATION_GROUPS

    prs = pareto["principles"]
    pairs = list(itertools.combinations(range(len(prs)), 2)) or [(0, 0)]
    comp = pareto.get("compare")
    n = len(pairs) + (1 if comp else 0)
    fig, axes = plt.subplots(1, n, figsize=(3.8 * n, 3.5), squeeze=False)
    pts = pareto["points"]
    for ax, (i, j) in zip(axes[0], pairs):
        for k, p in enumerate(pts):
            g = p["peak"]["gold"]
            on = k in pareto["front"]
            marker, colour = GROUP_STYLE.get(AGGREGATION_GROUPS.get(p.get("aggregation", "fixed"), ""), ("o", "C0"))
            ax.plot(g[prs[i]], g[prs[j]], marker, color=colour if on else "0.7", ms=5 if on else 3)
            if on:
                ax.annotate(describe(p), (g[prs[i]], g[prs[j]]), fontsize=5)
        ax.axhline(0, color="k", lw=0.4)
        ax.axvline(0, color="k", lw=0.4)
        ax.set(xlabel=f"{prs[i]} gold gain", ylabel=f"{prs[j]} gold gain")
    if comp:
        ax = axes[0][-1]
        for g, hv in comp["hypervolume"].items():
            marker, colour = GROUP_STYLE.get(g, ("o", "C1"))
            ax.plot(comp["kl"], hv, marker + "-", color=colour, label=g)
        ax.set(xlabel="KL (nats)", ylabel="hypervolume above SFT", title="at equal KL")
        ax.legend(fontsize=7)
    fig.suptitle(f"runs at their gold peak; front in colour (hypervolume {pareto['hypervolume']:.4f})", fontsize=9)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def pareto_lines(pareto: dict, has_png: bool) -> list[str]:
    prs = pareto["principles"]
    lines = ["## The Pareto front of the principles", "",
             f"Runs optimizing aggregations of the per-principle proxies (fixed, learned and per-family weights) "
             f"and constrained runs; gold gains over the SFT policy per principle at each run's overall gold peak. "
             f"Non-dominated: {len(pareto['front'])} of {len(pareto['points'])}; hypervolume above the SFT policy "
             f"{pareto['hypervolume']:.4g} at the peaks, {pareto['hypervolume_end']:.4g} at the runs' ends; above the "
             f"nadir of these points {pareto.get('hypervolume_nadir', float('nan')):.4g} and "
             f"{pareto.get('hypervolume_nadir_end', float('nan')):.4g}.", ""]
    if has_png:
        lines += ["![pareto](pareto.png)", ""]
    lines += ["| run | aggregation | KL at peak | " + " | ".join(prs) + " | on the front | below SFT at the end |",
              "|---|---|---|" + "---|" * len(prs) + "---|---|"]
    for k, p in enumerate(pareto["points"]):
        g = p["peak"]["gold"]
        lines.append(f"| {p['trial']} | {describe(p)} | {p['peak']['kl']:.2f} | " +
                     " | ".join(fmt(g[x]) for x in prs) + f" | {k in pareto['front']} | "
                     f"{', '.join(p.get('degraded_end', [])) or '-'} |")
    lines.append("")
    comp = pareto.get("compare")
    if comp:
        gs = list(comp["hypervolume"])
        lines += ["Aggregation vs constrained runs at equal KL (log-spaced from half the median KL of the runs' gold peaks "
                  "to the largest KL both kinds reach), "
                  "each kind's runs where their KL reaches it (counted in brackets): the hypervolume of their gold "
                  "gains above the SFT policy and above the nadir of both kinds' points there, their mean summed gain "
                  "and their mean number of principles below the SFT policy; and the principle whose gold peaks first "
                  "in each run:", "",
                  "| KL | " + " | ".join(f"{g}: hypervolume (SFT / nadir) | summed gain | below SFT" for g in gs) + " |",
                  "|---|" + "---|---|---|" * len(gs)]
        for i, kl in enumerate(comp["kl"]):
            lines.append(f"| {kl:.3g} | " + " | ".join(
                f"{comp['hypervolume'][g][i]:.3g} / {comp.get('hypervolume_nadir', {}).get(g, [float('nan')] * (i + 1))[i]:.3g}"
                f" ({comp['runs'][g][i]}) | {fmt(comp['gold_sum'][g][i])} | "
                f"{fmt(comp['below_reference'][g][i], 2)}" for g in gs) + " |")
        lines += ["", "First to overoptimize: " + "; ".join(
            f"{g}: " + ", ".join(f"{p} {c}" for p, c in counts.items() if c) for g, counts in
            comp["first_overoptimized"].items()), ""]
    for p in pareto["points"]:
        lg = p.get("lagrange")
        if lg:
            lines.append(f"- {p['trial']}: thresholds " + ", ".join(
                f"{n} {t:.3f} (SFT {r:.3f})" for n, t, r in zip(lg["names"], lg["threshold"], lg["reference"])) +
                "; final multipliers " + ", ".join(f"{x:.3f}" for x in lg["final"]) +
                "; steps violated " + ", ".join(f"{v:.0%}" if v is not None else "-" for v in lg["violated_fraction"]))
    return lines + [""]
