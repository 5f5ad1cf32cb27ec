"""The report's generalization section (issue 21): length, per-family frontiers, domain shift and
domain fine-tuning, from frontier.json's ``generalization``."""

from __future__ import annotations

from orchestrator.report.format import fmt
from orchestrator.report.format import png as _png


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_generalization(gen: dict, main: list[str], bon_points: dict[str, list]) -> bytes:
    """Six panels: best-of-n gold and length-controlled gold of each proxy; every RM's Spearman with
    length on the pool; the smallest proxy's best-of-n gold per family; RL length drift; RL gold and
    length-controlled gold of the no-penalty runs; accuracy per family (held-out families marked)."""
    plt = _plt()
    fig, ax = plt.subplots(3, 3, figsize=(16, 12.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    L = gen["length"]
    a = ax[0, 0]
    for i, m in enumerate(main):
        lc = L["bon_lc"].get(m)
        if not lc:
            continue
        c = colors[i % len(colors)]
        kl = [p["kl"] for p in lc["points"]]
        a.plot(kl, [p["gold"] for p in bon_points[m]], color=c, label=f"{m.removeprefix('proxy-')} gold")
        a.plot(kl, [p["gold"] for p in lc["points"]], color=c, ls="--", label="length-controlled")
    a.set(xlabel="KL (nats, best-of-n bound)", ylabel="gold gain", title="best-of-n: gold (-) and length-controlled (--)")
    a.legend(fontsize=6, ncol=2)
    a = ax[0, 1]
    sp = {k: v["spearman"] for k, v in L["spearman"].items() if v["spearman"] is not None}
    names = sorted(sp, key=lambda k: (k != "gold", k))[:18]
    a.barh(range(len(names)), [sp[n] for n in names], color=[colors[3] if n == "gold" else colors[0] for n in names])
    a.set_yticks(range(len(names)), [n.removeprefix("proxy-") for n in names], fontsize=7)
    a.axvline(0, color="k", lw=0.5)
    a.set(xlabel="Spearman(score, response length)", title="length correlation on the SFT pool")
    a = ax[0, 2]
    strata = gen["strata"]["bon"]
    if main and strata:
        m = main[0]
        for i, (f, v) in enumerate(sorted(strata.items())):
            g = v["proxies"][m]["gold"]["points"]
            a.plot([p["kl"] for p in g], [p["gold"] for p in g], color=colors[i % len(colors)],
                   ls="--" if v["held_out"] else "-", label=f + (" (held out)" if v["held_out"] else ""))
            pk = v["proxies"][m]["peak"]
            if pk["kl_peak"] is not None:
                a.plot([pk["kl_peak"]], [pk["gold_peak"]], "o", color=colors[i % len(colors)], ms=4)
        a.set(title=f"best-of-n per family ({m.removeprefix('proxy-')}); dots: peaks")
        a.legend(fontsize=6)
    a.set(xlabel="KL (nats)", ylabel="gold gain")
    runs = gen.get("rl", {})
    a = ax[1, 0]
    for i, (t, r) in enumerate(sorted(runs.items())):
        a.plot(r["kl"], r["length"], color=colors[i % len(colors)], lw=0.8, label=t if i < 10 else None)
    a.set(xlabel="KL (nats)", ylabel="mean response tokens", title="RL: length drift")
    if runs:
        a.legend(fontsize=5, ncol=2)
    a = ax[1, 1]
    k0 = [(t, r) for t, r in sorted(runs.items()) if t.endswith("-kl0") and "gold_lc" in r]
    for i, (t, r) in enumerate(k0[:6]):
        c = colors[i % len(colors)]
        a.plot(r["kl"], r["gold"], color=c, label=t)
        a.plot(r["kl"], r["gold_lc"], color=c, ls="--")
    a.set(xlabel="KL (nats)", ylabel="gold gain", title="RL (no penalty): gold (-), length-controlled (--)")
    if k0:
        a.legend(fontsize=6)
    a = ax[1, 2]
    dom = gen["domain"]["rms"]
    fams = sorted({f for m in main if m in dom for f in dom[m]["per_family"]})
    held = set(gen["domain"]["holdout_families"])
    w = 0.8 / max(1, len(main))
    for i, m in enumerate(m for m in main if m in dom):
        pf = dom[m]["per_family"]
        a.bar([j + i * w for j in range(len(fams))], [pf.get(f, {}).get("acc") or 0 for f in fams], w,
              color=colors[i % len(colors)], label=m.removeprefix("proxy-"))
    a.set_xticks([j + 0.4 - w / 2 for j in range(len(fams))],
                 [f + ("*" if f in held else "") for f in fams], fontsize=7)
    a.set(ylabel="held-out pair accuracy", ylim=(0.4, 1.0),
          title="accuracy per family" + (" (* never trained on)" if held else ""))
    a.legend(fontsize=6)
    # row 3: one no-penalty RL run per family; the length-controlled proxies' best-of-n; the objective's
    # rank correlation with length along the no-penalty runs
    a = ax[2, 0]
    first = next(((t, r) for t, r in sorted(runs.items()) if t.endswith("-kl0") and r.get("families")
                  and main and t.startswith(main[0] + "-kl0")), None) or next(
        ((t, r) for t, r in sorted(runs.items()) if r.get("families")), None)
    if first:
        t, r = first
        for i, (f, v) in enumerate(sorted(r["families"].items())):
            a.plot(r["kl"], v["gold"], color=colors[i % len(colors)], label=f)
            if v["peak"]["kl"] is not None:
                a.plot([v["peak"]["kl"]], [v["peak"]["gold"]], "o", color=colors[i % len(colors)], ms=4)
        a.set(title=f"RL per family: {t}; dots: peaks")
        a.legend(fontsize=6)
    a.set(xlabel="KL (nats)", ylabel="gold gain")
    a = ax[2, 1]
    lcs = [n for n in bon_points if "-lc-" in n]
    for i, base in enumerate(dict.fromkeys(n.rsplit("-lc-", 1)[0] for n in lcs)):
        c = colors[i % len(colors)]
        for n, ls in ((base, "-"), (f"{base}-lc-regress", "--"), (f"{base}-lc-head", ":")):
            if n in bon_points:
                a.plot([p["kl"] for p in bon_points[n]], [p["gold"] for p in bon_points[n]], color=c, ls=ls,
                       label=n.removeprefix("proxy-"))
    a.set(xlabel="KL (nats, best-of-n bound)", ylabel="gold gain",
          title="length-controlled proxies: plain (-), regress (--), head (:)")
    if lcs:
        a.legend(fontsize=6)
    a = ax[2, 2]
    for i, (t, r) in enumerate([(t, r) for t, r in sorted(runs.items()) if t.endswith("-kl0")][:10]):
        pts = [(k, x) for k, x in zip(r["kl"], r["proxy_length_spearman"]) if x is not None]
        if pts:
            a.plot(*zip(*pts), color=colors[i % len(colors)], lw=0.8, label=t)
    a.axhline(0, color="k", lw=0.5)
    a.set(xlabel="KL (nats)", ylabel="Spearman(objective, length)", title="RL (no penalty): the objective's length correlation")
    if a.get_legend_handles_labels()[0]:
        a.legend(fontsize=5)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def plot_finetune(ft: dict) -> bytes:
    """Per (proxy, family): accuracy on the family and on the trained ones, ECE, and the family's
    best-of-n peak gold and peak KL, each against the fine-tuning budget k."""
    plt = _plt()
    fig, ax = plt.subplots(1, 4, figsize=(17, 3.8))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    i = 0
    for name, fams in ft.items():
        for f, rows in fams.items():
            c = colors[i % len(colors)]
            i += 1
            k = [max(r["k"], 1) for r in rows]  # k = 0 drawn at 1 on the log axis
            lab = f"{name.removeprefix('proxy-')} on {f}"
            ax[0].plot(k, [r["target"].get("acc") for r in rows], "o-", color=c, label=f"{lab}: {f}")
            ax[0].plot(k, [r["original"].get("acc") for r in rows], "s--", color=c, label=f"{lab}: trained families")
            ax[1].plot(k, [r["target"].get("ece") for r in rows], "o-", color=c, label=f"{lab}: {f}")
            ax[1].plot(k, [r["original"].get("ece") for r in rows], "s--", color=c)
            ax[2].plot(k, [(r.get("bon") or {}).get("peak", {}).get("gold_peak") for r in rows], "o-", color=c, label=lab)
            ax[3].plot(k, [(r.get("bon") or {}).get("peak", {}).get("kl_peak") for r in rows], "o-", color=c, label=lab)
    for a, t in zip(ax, ("pair accuracy", "ECE (tau = 1)", "family's best-of-n peak gold", "its peak KL (nats)")):
        a.set(xscale="log", xlabel="fine-tuning pairs k (0 at 1)", title=t)
    ax[0].legend(fontsize=6)
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def generalization_lines(gen: dict, main: list[str], has_png: bool, has_ft_png: bool) -> list[str]:
    L = gen["length"]
    m = L["model"]
    lines = ["## Generalization: length and domain", "",
             f"Gold regressed on response length (tokens) with one intercept per family, on the SFT policy's "
             f"best-of-n pool ({m['n']} samples): slope {m['slope']:.4f} gold per token (R² {m['r2']:.3f}, "
             f"families alone {m['r2_family_only']:.3f}). Length-controlled gold = gold - slope x (length - "
             f"{m['ref_length']:.1f}).", ""]
    if has_png:
        lines += ["![generalization](generalization.png)", ""]
    lab = L.get("labels") or {}
    if lab:
        lines.append("Share of labelled pairs (unequal length) where the label prefers the longer response: " +
                     "; ".join(f"{k} ({v.get('labeler')}) {fmt(v['share'])} of {v['pairs']}" for k, v in lab.items()))
        lines.append("")
    lines += ["| reward model | Spearman with length | BoN peak gold (fit) | LC peak gold (fit) | peak KL | LC peak KL |",
              "|---|---|---|---|---|---|"]
    for name in [*main, *[n for n in L["bon_lc"] if n not in main]]:
        c = L["bon_lc"].get(name)
        if c is None:
            continue
        sp = L["spearman"].get(name, {}).get("spearman")
        g, lc = c["peak_gold_units"], c["peak"]
        lines.append(f"| {name} | {fmt(sp, 2)} | {fmt(g['gold_peak_fit'])} | {fmt(lc['gold_peak_fit'])} | "
                     f"{fmt(g['kl_peak_fit'], 2)} | {fmt(lc['kl_peak_fit'], 2)} |")
    gs = L["spearman"].get("gold", {}).get("spearman")
    lines += ["", f"Gold's own Spearman with length on the pool: {fmt(gs, 2)}.", ""]
    strata = gen["strata"]["bon"]
    if strata and main:
        lines += ["Per family, each proxy's best-of-n gold peak (KL where the measured gold is highest; "
                  "the family that peaks first is where proxy and gold decouple first):", "",
                  "| family | prompts | held out | " + " | ".join(f"{x} peak KL / gold" for x in main) + " |",
                  "|---|---|---|" + "---|" * len(main)]
        for f, v in sorted(strata.items()):
            cells = [f"{fmt(v['proxies'][x]['peak']['kl_peak'], 2)} / {fmt(v['proxies'][x]['peak']['gold_peak'])}"
                     for x in main]
            lines.append(f"| {f} | {v['prompts']} | {v['held_out']} | " + " | ".join(cells) + " |")
        lines += ["", "First family to peak (best-of-n): " +
                  ", ".join(f"{k} {v}" for k, v in gen["strata"]["bon_first_to_peak"].items()), ""]
    runs = gen.get("rl", {})
    if runs:
        lines += ["| RL run | length change (tokens) | final Spearman(objective, length) | peak gold @ KL | "
                  "LC peak gold @ KL | first family to peak |", "|---|---|---|---|---|---|"]
        for t, r in sorted(runs.items()):
            sp = [x for x in r["proxy_length_spearman"] if x is not None]
            pk, pl = r.get("peak") or {}, r.get("peak_lc") or {}
            lines.append(f"| {t} | {r['length_change']:+.1f} | {fmt(sp[-1], 2) if sp else '-'} | "
                         f"{fmt(pk.get('gold'))} @ {fmt(pk.get('kl'), 2)} | {fmt(pl.get('gold'))} @ {fmt(pl.get('kl'), 2)} | "
                         f"{r.get('first_to_peak') or '-'} |")
        lines.append("")
    dom = gen["domain"]
    if dom["holdout_families"]:
        lines += [f"Domain shift: the proxies never trained on {', '.join(dom['holdout_families'])}.", "",
                  "| proxy | in-domain acc | ECE | pairs | out-of-domain acc | ECE | pairs | gap |",
                  "|---|---|---|---|---|---|---|---|"]
        for name in main:
            d = dom["rms"].get(name)
            if not d:
                continue
            i, o = d["in_domain"], d["out_of_domain"]
            lines.append(f"| {name} | {fmt(i['acc'])} | {fmt(i['ece'])} | {i['pairs']} | {fmt(o['acc'])} | "
                         f"{fmt(o['ece'])} | {o['pairs']} | {fmt(d['gap'])} |")
        lines.append("")
    ft = gen.get("finetune")
    if ft:
        lines += ["### Domain fine-tuning", ""]
        if has_ft_png:
            lines += ["![domain fine-tuning](finetune.png)", ""]
        lines += ["| proxy | family | k | steps | family acc | ECE | tau | trained-families acc | ECE | "
                  "family BoN peak gold | peak KL |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for name, fams in ft.items():
            for f, rows in fams.items():
                for r in rows:
                    t, o, b = r["target"], r["original"], (r.get("bon") or {}).get("peak", {})
                    lines.append(f"| {name} | {f} | {r['k']} | {r['steps']} | {fmt(t.get('acc'))} | {fmt(t.get('ece'))} | "
                                 f"{fmt(t.get('tau'), 2)} | {fmt(o.get('acc'))} | {fmt(o.get('ece'))} | "
                                 f"{fmt(b.get('gold_peak'))} | {fmt(b.get('kl_peak'), 2)} |")
        lines.append("")
    return lines
