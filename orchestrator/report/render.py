"""``frontier.json``, the plots and the report of a frontier run.

The checks are SCIENCE.md's "what a faithful small reproduction shows", evaluated on the measured
curves and stored with them, so a reader sees at once which findings this run reproduced.
"""

from __future__ import annotations

import base64
import html
import json
import math
import platform
from pathlib import Path

import numpy as np

from orchestrator.report.format import fmt as _fmt
from orchestrator.report.format import png as _png


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("rlhf-frontier", "torch", "transformers", "ray", "tokenizers", "pyarrow", "numpy", "scipy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def plot_rl(bon: list[dict], rl: list[dict]) -> bytes:
    """Per proxy size: RL gold and proxy vs sqrt(KL) beside best-of-n gold, with the RL fit; a last
    panel compares ensemble objectives with the single-member runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    single = sorted([e for e in rl if len(e["members"]) == 1 and e["kl_coef"] == 0 and not e.get("ensemble")],
                    key=lambda e: e["proxy_params"])
    ens = [e for e in rl if len(e["members"]) > 1 or e.get("ensemble")]
    bon_by = {e["proxy"]: e for e in bon}
    k = len(single)
    fig, axes = plt.subplots(1, k + 1, figsize=(3.6 * (k + 1), 3.4), squeeze=False)
    for i, e in enumerate(single):
        ax = axes[0, i]
        d = np.sqrt([p["kl"] for p in e["points"]])
        ax.plot(d, [p["proxy"] for p in e["points"]], "--", color="tab:blue", label="RL proxy")
        ax.plot(d, [p["gold"] for p in e["points"]], "-o", ms=2, color="tab:red", label="RL gold")
        if "fit" in e:
            f = e["fit"]
            dd = np.linspace(1e-3, d.max(), 100)
            ax.plot(dd, dd * (f["alpha"] - f["beta"] * np.log(dd)), ":", color="black", label=f"RL fit R²={f['r2']:.2f}")
        b = bon_by.get(e["proxy"])
        if b is not None:
            ax.plot(np.sqrt([p["kl"] for p in b["points"]]), [p["gold"] for p in b["points"]], "-",
                    color="tab:orange", label="BoN gold")
        ax.axhline(0, color="gray", lw=0.5)
        ax.set_title(f"{e['proxy']} (beta={e['kl_coef']:g})")
        ax.set_xlabel("sqrt(KL) (sqrt nats)")
        if i == 0:
            ax.set_ylabel("score relative to the initial policy")
        ax.legend(fontsize=7)
    ax = axes[0, k]
    for e in single[:1] + ens:
        ax.plot(np.sqrt([p["kl"] for p in e["points"]]), [p["gold"] for p in e["points"]], "-o", ms=2,
                label=f"{e['proxy']} ({e['objective']})")
    ax.axhline(0, color="gray", lw=0.5)
    ax.set_title("gold: ensembles vs one member")
    ax.set_xlabel("sqrt(KL) (sqrt nats)")
    ax.legend(fontsize=7)
    fig.suptitle("RL (no KL penalty) vs best-of-n: gold and proxy against KL (Gao et al. 2022)")
    data = _png(fig)
    plt.close(fig)
    return data




def plot_bon(bon: list[dict]) -> bytes:
    """Gold (solid) and proxy (dashed) vs sqrt(KL), one panel per proxy size, with the fitted form."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_size = sorted([e for e in bon if e.get("kind", "proxy") == "proxy"], key=lambda e: e["proxy_params"])
    k = len(by_size)
    fig, axes = plt.subplots(1, k + 1, figsize=(3.6 * (k + 1), 3.4), squeeze=False)
    cmap = plt.get_cmap("viridis")
    for i, e in enumerate(by_size):
        ax = axes[0, i]
        d = np.sqrt([p["kl"] for p in e["points"]])
        ax.plot(d, [p["proxy"] for p in e["points"]], "--", color="tab:blue", label="proxy")
        ax.plot(d, [p["gold"] for p in e["points"]], "-", color="tab:orange", label="gold")
        f = e["fit"]
        dd = np.linspace(0, d.max(), 100)
        ax.plot(dd, dd * (f["alpha"] - f["beta"] * dd), ":", color="black", label=f"fit R²={f['r2']:.2f}")
        if f["kl_peak"] is not None and math.sqrt(f["kl_peak"]) <= d.max() * 1.5:
            ax.axvline(math.sqrt(f["kl_peak"]), color="gray", lw=0.8)
        ax.axhline(0, color="gray", lw=0.5)
        ax.set_title(f"{e['proxy']} ({e['proxy_params'] / 1e3:.0f}k params)")
        ax.set_xlabel("sqrt(KL) (sqrt nats)")
        if i == 0:
            ax.set_ylabel("score relative to n = 1")
        ax.legend(fontsize=7)
        axes[0, k].plot(d, [p["gold"] for p in e["points"]], color=cmap(i / max(1, k - 1)), label=e["proxy"])
    axes[0, k].set_title("gold, all proxy sizes")
    axes[0, k].set_xlabel("sqrt(KL) (sqrt nats)")
    axes[0, k].axhline(0, color="gray", lw=0.5)
    axes[0, k].legend(fontsize=7)
    fig.suptitle("best-of-n: proxy vs gold (Gao et al. 2022)")
    data = _png(fig)
    plt.close(fig)
    return data


def plot_bon_ensembles(bon: list[dict]) -> bytes:
    """Issue 20: best-of-n gold vs sqrt(KL), one panel per ensemble source (size, seed, bootstrap,
    pretrain), its mean / WCO / UWO curves and their fits (dotted) over its members' own curves (thin
    gray), WARM in the panel of the members it averages. b"" when the run has no ensemble."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ens = [e for e in bon if e.get("kind") == "ensemble"]
    if not ens:
        return b""
    by_name = {e["proxy"]: e for e in bon}
    sources = list(dict.fromkeys((e["source"], e["labels"]) for e in ens))
    fig, axes = plt.subplots(1, len(sources), figsize=(max(6.5, 4.2 * len(sources)), 3.6), squeeze=False)
    style = {"mean": "tab:blue", "wco": "tab:red", "uwo": "tab:green"}
    for ax, (src, lab) in zip(axes[0], sources):
        group = [e for e in ens if e["source"] == src and e["labels"] == lab]
        members = group[0]["members"]
        for i, m in enumerate(members):
            if m in by_name:
                pts = by_name[m]["points"]
                ax.plot(np.sqrt([p["kl"] for p in pts]), [p["gold"] for p in pts], color="gray", lw=0.7,
                        label="members" if i == 0 else None)
        for e in group:
            pts = e["points"]
            d = np.sqrt([p["kl"] for p in pts])
            ax.plot(d, [p["gold"] for p in pts], color=style.get(e["objective"]), lw=1.6, label=e["objective"])
            f = e["fit"]  # fitted like a single proxy's curve (dotted)
            dd = np.linspace(0, d.max(), 100)
            ax.plot(dd, dd * (f["alpha"] - f["beta"] * dd), ":", color=style.get(e["objective"]), lw=1.0)
        for w in [e for e in bon if e.get("kind") == "warm" and set(e.get("members", [])) <= set(members)]:
            pts = w["points"]
            ax.plot(np.sqrt([p["kl"] for p in pts]), [p["gold"] for p in pts], "--", color="black", label="WARM")
        ax.axhline(0, color="gray", lw=0.5)
        ax.set_title(f"{src} ensemble{' (AI labels)' if lab == 'ai' else ''}: {len(members)} members", fontsize=9)
        ax.set_xlabel("sqrt(KL) (sqrt nats)")
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("gold relative to n = 1")
    fig.suptitle("best-of-n of ensembles (members scaled, then aggregated; Coste et al. 2023)")
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def _fmtd(d: dict | None) -> str:
    return "-" if not d else ", ".join(f"{k} {_fmt(v)}" for k, v in d.items())


def md_to_html(md: str, images: dict[str, bytes], title: str) -> str:
    """The report's markdown as one self-contained HTML page: headings, tables, lists, and each
    ``![..](name.png)`` line as the PNG inlined (opens in a browser without a server)."""
    body = []
    for line in md.splitlines():
        if line.startswith("![") and line.endswith(".png)"):
            name = line[line.index("(") + 1:-1]
            b64 = base64.b64encode(images[name]).decode()
            body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{b64}" style="max-width:100%">')
        elif line.startswith("### "):
            body.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("|---"):
            continue
        elif line.startswith("|"):
            cells = [html.escape(x.strip()) for x in line.strip("|").split("|")]
            body.append("<tr>" + "".join(f"<td>{x}</td>" for x in cells) + "</tr>")
        elif line.startswith("- "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line:
            body.append(f"<p>{html.escape(line)}</p>")
    out, in_table = [], False
    for b in body:  # wrap consecutive rows in a table
        if b.startswith("<tr>") and not in_table:
            out.append("<table border=1 cellspacing=0 cellpadding=3>")
            in_table = True
        if not b.startswith("<tr>") and in_table:
            out.append("</table>")
            in_table = False
        out.append(b)
    if in_table:
        out.append("</table>")
    return ("<!doctype html><html><head><meta charset='utf-8'><title>" + html.escape(title) + "</title>"
            "<style>body{font-family:sans-serif;max-width:1400px;margin:auto}td{font-size:13px}</style>"
            "</head><body>" + "\n".join(out) + "</body></html>")


def _trend_lines(trend: dict | None) -> list[str]:
    """The size law as slopes with their bootstrap intervals (``checks.bon_size_trend``)."""
    if not trend:
        return []
    out = []
    for k, what in (("d_peak", "ln d* (d* = sqrt of the fitted peak KL)"), ("gold_peak", "ln(fitted peak gold)")):
        t = trend.get(k) or {}
        if t.get("slope") is None:
            continue
        ci = t.get("ci90")
        iv = (f", 90% interval [{ci[0]:+.3f}, {ci[1]:+.3f}] over prompt resamples, slope <= 0 in "
              f"{100 * t['p_le0']:.0f}% of them" if ci else "")
        cens = f"; {t['censored']} peak(s) past the data, censored at KL {t['cap']:.2f}" if t.get("censored") else ""
        out.append(f"- size law: slope of {what} on ln(proxy params) = {t['slope']:+.3f}{iv}{cens}")
    if out:
        out.append("- one run does not settle the size law: the interval covers the pool's prompts only, and "
                   "the proxies of one seed (their LMs, labels, training) move the peaks far more; "
                   "`python -m jobs.seeds` judges it over seeds (README, \"The size law over seeds\")")
    return out


def _not_evaluated(section: dict) -> list[str]:
    """A line per check the runs could not evaluate, with the reason (``math.checks``)."""
    return [f"- **not evaluated**: `{k}`: {why}" for k, why in (section.get("not_evaluated") or {}).items()]


def write_report(run_dir: Path, frontier: dict, extra: dict) -> dict[str, Path]:
    """frontier.json, bon.png, report.md and a self-contained report.html (PNG inlined)."""
    run_dir = Path(run_dir)
    (run_dir / "frontier.json").write_text(json.dumps(frontier, indent=1))
    images = {"bon.png": plot_bon(frontier["bon"])}
    if any(e.get("kind") == "ensemble" for e in frontier["bon"]):
        images["bon_ensembles.png"] = plot_bon_ensembles(frontier["bon"])
    if frontier.get("rl"):
        from orchestrator.report import frontier_map as FM

        grid = [e for e in frontier["rl"] if not str(e.get("labels", "")).endswith("-half")]  # the monitor's
        images["rl.png"] = plot_rl(frontier["bon"], grid)                                 # disjoint-labels run
        images["sweep_cells.png"] = FM.plot_cells(grid)                                   # is no cell of the map
        images["sweep_heatmap.png"] = FM.plot_heatmaps(grid)
        images["sweep_penalty.png"] = FM.plot_penalty(grid)
        if frontier["checks"].get("sweep", {}).get("coefficients"):
            images["sweep_coefficients.png"] = FM.plot_coefficients(frontier["checks"]["sweep"])
    if "agreement" in frontier.get("label", {}):  # an AI-labelled run: the judge's report section
        from orchestrator.report.rlaif import plot_calibration, rlaif_section

        images["rlaif_calibration.png"] = plot_calibration(frontier["label"])
    if extra.get("calibration"):  # reliability diagrams, one panel per reward model (issue 20)
        from orchestrator.report.calibration import calibration_lines, plot_reliability

        rel = plot_reliability(extra["calibration"])
        if rel:
            images["reliability.png"] = rel
    if any(e.get("kind") == "principle" for e in frontier["bon"]):  # per-principle proxies (issue 22)
        from orchestrator.report.principles import plot_principles

        images["principles.png"] = plot_principles(frontier["bon"])
    if frontier.get("pareto", {}).get("points"):
        from orchestrator.report.principles import plot_pareto

        images["pareto.png"] = plot_pareto(frontier["pareto"])
    gen = frontier.get("generalization")
    main = [e["proxy"] for e in frontier["bon"] if e.get("kind", "proxy") == "proxy"
            and e.get("labels", "gold") == ("ai" if "agreement" in frontier.get("label", {}) else "gold")]
    if gen:  # length, families, domain shift and fine-tuning (issue 21)
        from orchestrator.report.generalization import (
            generalization_lines,
            plot_finetune,
            plot_generalization,
        )

        images["generalization.png"] = plot_generalization(gen, main, {e["proxy"]: e["points"] for e in frontier["bon"]})
        if gen.get("finetune"):
            images["finetune.png"] = plot_finetune(gen["finetune"])
    for name, png in images.items():
        (run_dir / name).write_bytes(png)
    c = frontier["checks"]
    lines = ["# rlhf-frontier report", "",
             f"config hash `{frontier['config_hash'][:12]}`, seed {frontier['seed']}", "",
             "## Best-of-n", "", "![best-of-n](bon.png)", "",
             *(["![best-of-n of the ensembles](bon_ensembles.png)", ""] if "bon_ensembles.png" in images else []),
             "| proxy | kind | params | val acc | alpha | beta | R² | peak KL (fit) | 90% CI | peak gold (fit) | "
             "max proxy gain |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    order = {"proxy": 0, "member": 1, "warm": 2, "ensemble": 3}
    for e in sorted(frontier["bon"], key=lambda e: (order.get(e.get("kind", "proxy"), 0), e["proxy_params"])):
        f = e["fit"]
        ci = e.get("kl_peak_ci90") or [None, None]
        kind = e.get("kind", "proxy") + (f" ({e['source']}, {e['objective']})" if e.get("kind") == "ensemble" else "")
        acc = "-" if e.get("val_accuracy") is None else _fmt(e["val_accuracy"])  # ensembles: see calibration
        lines.append(f"| {e['proxy']} | {kind} | {e['proxy_params']} | {acc} | {f['alpha']:.3f} | "
                     f"{f['beta']:.3f} | {f['r2']:.3f} | {_fmt(f['kl_peak'], 2)} | "
                     f"[{_fmt(ci[0], 2)}, {_fmt(ci[1], 2)}] | {_fmt(f['gold_peak'])} | "
                     f"{e['points'][-1]['proxy']:.3f} |")
    lines += ["", "## Checks (SCIENCE.md)", "",
              f"- proxy rises monotonically in n for every size: {all(c['proxy_monotone'].values())}",
              f"- smallest proxy: gold rises then falls: {c['smallest_rises_then_falls']} "
              f"(peak {c['smallest_gold_peak']:.3f} at n = {c['smallest_gold_peak_n']}, "
              f"falls {c['smallest_gold_drop_after_peak']:.3f} by n = {frontier['bon'][0]['points'][-1]['n']})",
              f"- BoN fit R² >= 0.9 for every size: {c['r2_all_ge_0.9']}",
              f"- Spearman(size, fitted peak KL) = {_fmt(c.get('spearman_size_kl_peak'), 2)}; "
              f"Spearman(size, peak gold) = {_fmt(c.get('spearman_size_gold_peak'), 2)}",
              *_trend_lines(c.get("size_trend")),
              *_not_evaluated(c), ""]
    if extra.get("calibration"):
        lines += calibration_lines(frontier["bon"], frontier.get("calibration_judge"), "reliability.png" in images)
    if frontier.get("rl"):
        rc = c.get("rl", {})
        ratios = ", ".join(f"{k} {v['ratio']:.1f}x ({v['ratio_vs_bound']:.1f}x against the ln n bound)"
                           for k, v in rc.get("kl_for_same_gold", {}).items())
        lines += ["## RL", "", "![rl](rl.png)", "",
                  "| run | objective | beta | steps | final KL | peak gold (at KL) | final gold | final proxy | "
                  "R² RL form | R² BoN form | RL-fit peak KL |", "|---|---|---|---|---|---|---|---|---|---|---|"]
        for e in frontier["rl"]:
            pts = e["points"]
            pk = e.get("gold_peak_empirical", {})
            lines.append(f"| {e.get('trial', e['proxy'])} | {e['objective']} | {e['kl_coef']:g} | {e['steps']} | {pts[-1]['kl']:.2f} | "
                         f"{_fmt(pk.get('gold'))} ({_fmt(pk.get('kl'), 2)}) | {pts[-1]['gold']:.3f} | "
                         f"{pts[-1]['proxy']:.3f} | {_fmt(e.get('fit', {}).get('r2'))} | "
                         f"{_fmt(e.get('fit_bon_form', {}).get('r2'))} | {_fmt(e.get('fit', {}).get('kl_peak'), 2)} |")
        lines += ["", "### RL checks (SCIENCE.md)", "",
                  f"- proxy rises with KL in every run (Spearman > 0.8): {rc.get('proxy_rises_every_run')}",
                  f"- smallest proxy: gold rises then falls: {rc.get('smallest_rises_then_falls')} "
                  f"(peak {rc.get('smallest_gold_peak')}, drop to the last point {_fmt(rc.get('smallest_gold_drop_after_peak'))}, "
                  f"to the mean of the last three {_fmt(rc.get('smallest_gold_drop_tail_mean'))}, "
                  f"one evaluation's standard error {_fmt(rc.get('smallest_gold_se'))})",
                  f"- RL form fits the RL curves better than the BoN form: {rc.get('rl_form_fits_better')} "
                  f"(pooled R² {_fmt(rc.get('r2_pooled_rl_form'))} vs {_fmt(rc.get('r2_pooled_bon_form'))}; "
                  f"better in {rc.get('rl_form_fits_better_runs')} runs)",
                  f"- RL spends more KL than BoN for the same gold: {rc.get('rl_spends_more_kl_than_bon')} "
                  f"(geometric mean of KL_RL / KL_BoN at 50/75/90% of the lower peak, BoN at its exact KL: {ratios})",
                  f"- ensembles (WCO/UWO) lose less gold past the peak than single members, at the KL all runs "
                  f"reached ({_fmt(rc.get('gold_drop_at_kl'), 2)} nats): {rc.get('ensemble_loses_less')} "
                  f"(drops: ensemble {_fmtd(rc.get('gold_drop_ensemble'))}, single {_fmtd(rc.get('gold_drop_single'))}; "
                  f"at the end of the runs: ensemble {_fmtd(rc.get('gold_drop_ensemble_end'))}, "
                  f"single {_fmtd(rc.get('gold_drop_single_end'))})"]
        lines += _not_evaluated(rc)
        se = rc.get("seed_ensemble")
        if se:
            lines.append(f"- seed ensembles ({se['members']} proxies of size {se['size']} differing in seed) lose less "
                         f"gold past the peak than one of them, at {_fmt(se['at_kl'], 2)} nats: "
                         f"{rc.get('seed_ensemble_loses_less')} (drops: ensemble {_fmtd(se['ensembles'])}, single "
                         f"{_fmt(se['single'])}; at the end of the runs: ensemble {_fmtd(se['ensembles_end'])}, "
                         f"single {_fmt(se['single_end'])})")
        lines.append("")
    sw = c.get("sweep")
    if sw:
        lines += ["## Frontier map (the Tune sweep)", "",
                  "Gold (red) and proxy (blue, dashed) against sqrt(KL) for every (proxy size, KL coefficient) cell:",
                  "", "![cells](sweep_cells.png)", "",
                  "Peak gold and the KL at the peak (empirical, mean over seeds) per cell:", "",
                  "![heat maps](sweep_heatmap.png)", "",
                  "Penalty runs against the no-penalty frontier (Gao et al.: the penalty acts like early stopping):",
                  "", "![penalty](sweep_penalty.png)", ""]
        if "sweep_coefficients.png" in images:
            lines += ["Fitted alpha and beta against proxy size, best-of-n and RL (no penalty):", "",
                      "![coefficients](sweep_coefficients.png)", ""]
        lines += ["| proxy | params | RL peak KL (fit) | RL peak gold (fit) | peak gold (empirical) |", "|---|---|---|---|---|"]
        for p, v in sw.get("no_penalty_peaks", {}).items():
            lines.append(f"| {p} | {v['params']} | {_fmt(v['kl_peak_fit'], 2)} | {_fmt(v['gold_peak_fit'])} | "
                         f"{_fmt(v['gold_peak_empirical'])} |")
        lines += ["", "| cell | final KL | no-penalty final KL | mean abs gold gap to the no-penalty curve | mean gap |",
                  "|---|---|---|---|---|"]
        for cell, v in sw.get("penalty", {}).items():
            lines.append(f"| {cell} | {v['final_kl']:.2f} | {v['final_kl_no_penalty']:.2f} | {_fmt(v['gap_mean_abs'])} | "
                         f"{_fmt(v['gap_mean'])} |")
        lines += ["", "### Sweep checks", "",
                  f"- RL gold-peak KL (fitted) grows with proxy size: {sw.get('peak_kl_grows_with_size')} "
                  f"(Spearman {_fmt(sw.get('spearman_size_kl_peak'), 2)})",
                  f"- RL peak gold (fitted) grows with proxy size: {sw.get('peak_gold_grows_with_size')} "
                  f"(Spearman {_fmt(sw.get('spearman_size_gold_peak'), 2)})",
                  f"- penalty runs end at lower KL than the no-penalty run: {sw.get('penalty_lower_final_kl')}",
                  f"- penalty runs lie near the no-penalty gold-vs-KL curve: {sw.get('penalty_near_frontier')} "
                  f"(mean abs gap {_fmt(sw.get('penalty_gap_mean_abs'))}, one evaluation's gold se "
                  f"{_fmt(sw.get('gold_se_mean'))})", *_not_evaluated(sw), ""]
    mon = frontier.get("monitor")
    if mon and mon.get("detectors"):
        lines += ["## Overoptimization monitor (gold-free detectors, scored against gold)", "",
                  "Each detector's signal is computed at every RL evaluation without gold; its rule gives an alarm "
                  "step. Lead: evaluations from the alarm to the true gold peak (median over runs whose alarm was "
                  "not false); a false alarm comes before gold rose 2 s.e., or in a run whose gold never fell "
                  "2 s.e.; gold kept: the gain at the alarm as a share of the gain at the peak (no alarm: at the "
                  "end).", "",
                  "| detector | rule | runs | alarms | warned before the peak | median lead (evals / nats) | "
                  "false-alarm rate | gold kept |", "|---|---|---|---|---|---|---|---|"]
        def f(x, nd):
            return "-" if x is None else _fmt(float(x), nd)

        for d in mon["detectors"]:
            lines.append(f"| {d['name']} | {d['rule']} | {len(d['runs'])} | {d['alarms']} | {d['warned_before_peak']} | "
                         f"{f(d['lead_median'], 1)} / {f(d['lead_kl_median'], 2)} | "
                         f"{f(d['false_alarm_rate'], 2)} | {f(d['gold_kept_frac'], 2)} |")
        if mon.get("no_stop"):
            lines.append(f"| (no stopping) | - | {mon['no_stop']['n_runs']} | - | - | - | - | "
                         f"{f(mon['no_stop']['gold_kept_frac'], 2)} |")
        lines += [*_not_evaluated(mon), ""]
    if "principles.png" in images:
        from orchestrator.report.principles import principle_lines

        lines += principle_lines(frontier["bon"], True)
    if "pareto.png" in images:
        from orchestrator.report.principles import pareto_lines

        lines += pareto_lines(frontier["pareto"], True)
    if gen:
        lines += generalization_lines(gen, main, "generalization.png" in images, "finetune.png" in images)
    if "agreement" in frontier.get("label", {}):
        lines += rlaif_section(frontier)
    lines += ["## Timings", "", "| stage | seconds | cached |", "|---|---|---|"]
    for name, t in extra.get("timings", {}).items():
        lines.append(f"| {name} | {t['seconds']:.1f} | {t['cached']} |")
    md = "\n".join(lines) + "\n"
    (run_dir / "report.md").write_text(md)
    (run_dir / "report.html").write_text(md_to_html(md, images, "rlhf-frontier report"))
    return {"json": run_dir / "frontier.json", "png": run_dir / "bon.png", "md": run_dir / "report.md",
            "html": run_dir / "report.html"}

