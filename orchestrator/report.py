"""``frontier.json``, the plots and the report of a frontier run.

The checks are SCIENCE.md's "what a faithful small reproduction shows", evaluated on the measured
curves and stored with them, so a reader sees at once which findings this run reproduced.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
import platform
from pathlib import Path

import numpy as np

from orchestrator.scaling import spearman


def versions() -> dict:
    import importlib.metadata as md

    out = {"python": platform.python_version()}
    for pkg in ("rlhf-frontier", "torch", "transformers", "ray", "tokenizers", "pyarrow", "numpy", "scipy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = None
    return out


def checks(bon: list[dict]) -> dict:
    """Evaluate the findings a faithful run must show, on the best-of-n curves."""
    out: dict = {}
    by_size = sorted(bon, key=lambda e: e["proxy_params"])
    mono = {}
    for e in by_size:
        p = np.array([pt["proxy"] for pt in e["points"]])
        mono[e["proxy"]] = bool(np.all(np.diff(p) >= -1e-9))
    out["proxy_monotone"] = mono
    small = by_size[0]
    g = np.array([pt["gold"] for pt in small["points"]])
    peak = int(np.argmax(g))
    out["smallest_gold_peak_n"] = int(small["points"][peak]["n"])
    out["smallest_gold_peak"] = float(g[peak])
    out["smallest_gold_drop_after_peak"] = float(g[peak] - g[-1])
    out["smallest_rises_then_falls"] = bool(0 < peak < len(g) - 1 and g[peak] > 0 and g[-1] < g[peak])
    out["r2"] = {e["proxy"]: e["fit"]["r2"] for e in by_size}
    out["r2_all_ge_0.9"] = bool(all(e["fit"]["r2"] >= 0.9 for e in by_size))
    params = [e["proxy_params"] for e in by_size]
    if len(by_size) >= 2:
        out["spearman_size_kl_peak"] = spearman(params, [e["fit"]["kl_peak"] for e in by_size])
        out["spearman_size_gold_peak"] = spearman(params, [e["fit"]["gold_peak"] if e["fit"]["gold_peak"] is not None
                                                           else max(pt["gold"] for pt in e["points"])
                                                           for e in by_size])
    out["all_pass"] = bool(all(mono.values()) and out["smallest_rises_then_falls"] and out["r2_all_ge_0.9"]
                           and out.get("spearman_size_kl_peak", 0) > 0)
    return out


def kl_to_reach(points: list[dict], g: float) -> float | None:
    """KL (nats) at which a measured curve first reaches gold ``g``: linear interpolation in
    d = sqrt(KL) between the last point below and the first point at or above ``g`` (None if never).
    Points must be ordered along the optimization (n for best-of-n, step for RL)."""
    prev_d, prev_g = 0.0, 0.0
    for p in points:
        d, gold = math.sqrt(max(p["kl"], 0.0)), p["gold"]
        if gold >= g:
            if gold == prev_g:
                return d * d
            dd = prev_d + (d - prev_d) * (g - prev_g) / (gold - prev_g) if g > prev_g else d
            return dd * dd
        prev_d, prev_g = d, gold
    return None


def gold_at_kl(points: list[dict], kl: float) -> float | None:
    """Gold of a measured RL curve where its KL first reaches ``kl`` (interpolated in sqrt(KL))."""
    prev = (0.0, 0.0)
    for p in points:
        d, g = math.sqrt(max(p["kl"], 0.0)), p["gold"]
        if d >= math.sqrt(kl):
            if d == prev[0]:
                return g
            return prev[1] + (g - prev[1]) * (math.sqrt(kl) - prev[0]) / (d - prev[0])
        prev = (d, g)
    return None


def drop_by_kl(points: list[dict], kl: float) -> float | None:
    """Peak gold among the points up to ``kl`` minus the gold at ``kl``: how much gold a run has
    lost past its peak by the time it has spent ``kl`` nats."""
    at = gold_at_kl(points, kl)
    if at is None:
        return None
    return max([p["gold"] for p in points if p["kl"] <= kl] + [at]) - at


def rl_checks(bon: list[dict], rl: list[dict]) -> dict:
    """SCIENCE.md's RL findings on the measured RL curves (issue: the RL loop)."""
    from scipy.stats import spearmanr

    out: dict = {}
    single = sorted([e for e in rl if len(e["members"]) == 1 and e["kl_coef"] == 0], key=lambda e: e["proxy_params"])
    ens = [e for e in rl if len(e["members"]) >= 4 and e["objective"] in ("wco", "uwo") and e.get("ensemble") != "seeds"]
    seed_ens = [e for e in rl if e.get("ensemble") == "seeds" and e["objective"] in ("wco", "uwo")]
    rises = {}
    for e in [x for x in rl if x["kl_coef"] == 0]:  # the no-penalty runs (SCIENCE.md's RL findings)
        kl, pr = [p["kl"] for p in e["points"]], [p["proxy"] for p in e["points"]]
        varied = len(kl) > 2 and len(set(kl)) > 1 and len(set(pr)) > 1
        rises[e.get("trial", e["proxy"])] = float(spearmanr(kl, pr).statistic) if varied else float("nan")
    out["proxy_spearman_with_kl"] = rises
    out["proxy_rises_every_run"] = bool(all(v > 0.8 for v in rises.values()))
    if single:
        small = single[0]
        g = np.array([p["gold"] for p in small["points"]])
        se = small.get("gold_se", 0.0)
        peak = int(np.argmax(g))
        out["smallest"] = small["proxy"]
        out["smallest_gold_peak"] = {"gold": float(g[peak]), "kl": small["points"][peak]["kl"],
                                     "step": small["points"][peak]["step"]}
        tail = g[max(peak + 1, len(g) - 3):]  # the last (up to) three evaluations after the peak
        out["smallest_gold_drop_after_peak"] = float(g[peak] - g[-1])
        out["smallest_gold_drop_tail_mean"] = float(g[peak] - tail.mean()) if len(tail) else 0.0
        out["smallest_gold_se"] = se
        # rises: the peak clears 2 standard errors of one evaluation; falls: so does the drop from
        # the peak to the mean of the last evaluations (one noisy last point decides nothing)
        out["smallest_rises_then_falls"] = bool(g[peak] > 2 * se and len(tail) and
                                                out["smallest_gold_drop_tail_mean"] > 2 * se)
    fitted = [e for e in rl if "fit" in e]
    out["r2_rl_form"] = {e["proxy"]: e["fit"]["r2"] for e in fitted}
    out["r2_bon_form"] = {e["proxy"]: e["fit_bon_form"]["r2"] for e in fitted}
    better = [e["fit"]["r2"] > e["fit_bon_form"]["r2"] for e in fitted]
    out["rl_form_fits_better_runs"] = f"{sum(better)}/{len(better)}"
    # pooled over runs: 1 - sum(SSE) / sum(SST). One run's curve is 16 noisy points (eval se ~0.04
    # against effects of 0.1-0.3), so per-run R² comparisons flip with the noise; pooling does not.
    sst = []
    for e in fitted:
        g = np.array([p["gold"] for p in e["points"] if p["kl"] > 0])
        sst.append(float(((g - g.mean()) ** 2).sum()))
    if fitted and sum(sst) > 0:
        for form, key in (("rl", "fit"), ("bon", "fit_bon_form")):
            out[f"r2_pooled_{form}_form"] = 1 - sum((1 - e[key]["r2"]) * t for e, t in zip(fitted, sst)) / sum(sst)
        out["rl_form_fits_better"] = bool(out["r2_pooled_rl_form"] > out["r2_pooled_bon_form"])
    else:
        out["rl_form_fits_better"] = False
    # KL spent for the same gold (Gao et al.: RL spends far more): at 50 / 75 / 90% of the lower of the
    # two measured peaks, each curve's first crossing (interpolated in sqrt(KL))
    bon_by = {e["proxy"]: e for e in bon}
    ratios = {}
    for e in single:
        b = bon_by.get(e["proxy"])
        if b is None:
            continue
        top = min(max(p["gold"] for p in e["points"]), max(p["gold"] for p in b["points"]))
        if top <= 0:
            continue
        # best-of-n's KL: the exact one on the pool's support where known (the analytic
        # ln n - (n-1)/n overstates it for a policy that repeats itself), the bound reported beside
        exact = [{**p, "kl": p.get("kl_exact", p["kl"])} for p in b["points"]]
        levels = []
        for frac in (0.5, 0.75, 0.9):
            k_rl, k_bon, k_bound = (kl_to_reach(e["points"], frac * top), kl_to_reach(exact, frac * top),
                                    kl_to_reach(b["points"], frac * top))
            if k_rl and k_bon and k_bound:
                levels.append({"gold": frac * top, "kl_rl": k_rl, "kl_bon": k_bon, "kl_bon_bound": k_bound,
                               "ratio": k_rl / k_bon, "ratio_vs_bound": k_rl / k_bound})
        if levels:
            gm = lambda key: float(np.exp(np.mean([math.log(x[key]) for x in levels])))  # noqa: E731
            ratios[e["proxy"]] = {"levels": levels, "ratio": gm("ratio"), "ratio_vs_bound": gm("ratio_vs_bound"),
                                  "gold": levels[-1]["gold"]}
    out["kl_for_same_gold"] = ratios
    out["rl_spends_more_kl_than_bon"] = bool(ratios) and all(r["ratio"] > 1 for r in ratios.values())
    if single and ens:
        # at matched KL: runs that optimize further lose more gold whatever their reward, so compare
        # every run at the largest KL all of them reached (Gao et al. plot gold against KL too)
        k = min(max(p["kl"] for p in e["points"]) for e in single + ens)
        out["gold_drop_at_kl"] = k
        out["gold_drop_single"] = {e["proxy"]: drop_by_kl(e["points"], k) for e in single}
        out["gold_drop_ensemble"] = {e["proxy"]: drop_by_kl(e["points"], k) for e in ens}
        out["gold_drop_single_end"] = {e["proxy"]: e.get("gold_drop_after_peak") for e in single}
        out["gold_drop_ensemble_end"] = {e["proxy"]: e.get("gold_drop_after_peak") for e in ens}
        out["ensemble_loses_less"] = bool(min(out["gold_drop_ensemble"].values())
                                          < float(np.mean(list(out["gold_drop_single"].values()))))
    if seed_ens:
        # Coste et al.'s comparison: members of one size differing in seed against one of them alone,
        # at the largest KL all of these runs reached (and, beside it, at the end of the runs)
        z, sd = seed_ens[0]["member_size"], seed_ens[0].get("seed")  # (with sweep.seeds: the first seed's runs)
        seed_ens = [e for e in seed_ens if e.get("seed") == sd]
        base = [e for e in single if e.get("size") == z and e.get("seed") == sd]
        if base:
            runs = base[:1] + seed_ens
            k = min(max(p["kl"] for p in e["points"]) for e in runs)
            drops = {e["proxy"]: drop_by_kl(e["points"], k) for e in seed_ens}
            out["seed_ensemble"] = {"size": z, "members": len(seed_ens[0]["members"]), "at_kl": k,
                                    "single": drop_by_kl(base[0]["points"], k), "ensembles": drops,
                                    "single_end": base[0].get("gold_drop_after_peak"),
                                    "ensembles_end": {e["proxy"]: e.get("gold_drop_after_peak") for e in seed_ens}}
            out["seed_ensemble_loses_less"] = bool(min(drops.values()) < out["seed_ensemble"]["single"])
    keys = ["proxy_rises_every_run", "smallest_rises_then_falls", "rl_form_fits_better", "rl_spends_more_kl_than_bon"]
    for k in ("ensemble_loses_less", "seed_ensemble_loses_less"):
        if k in out:
            keys.append(k)
    out["all_pass"] = bool(all(out.get(k) for k in keys))
    return out


def plot_rl(bon: list[dict], rl: list[dict]) -> bytes:
    """Per proxy size: RL gold and proxy vs sqrt(KL) beside best-of-n gold, with the RL fit; a last
    panel compares ensemble objectives with the single-member runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    single = sorted([e for e in rl if len(e["members"]) == 1 and e["kl_coef"] == 0], key=lambda e: e["proxy_params"])
    ens = [e for e in rl if len(e["members"]) > 1]
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


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def plot_bon(bon: list[dict]) -> bytes:
    """Gold (solid) and proxy (dashed) vs sqrt(KL), one panel per proxy size, with the fitted form."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_size = sorted(bon, key=lambda e: e["proxy_params"])
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


def _fmt(x, nd=3) -> str:
    if x is None:
        return "none (no peak)"
    if isinstance(x, float):
        return f"{x:.{nd}f}"
    return str(x)


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


def write_report(run_dir: Path, frontier: dict, extra: dict) -> dict[str, Path]:
    """frontier.json, bon.png, report.md and a self-contained report.html (PNG inlined)."""
    run_dir = Path(run_dir)
    (run_dir / "frontier.json").write_text(json.dumps(frontier, indent=1))
    images = {"bon.png": plot_bon(frontier["bon"])}
    if frontier.get("rl"):
        from orchestrator import frontier_map as FM

        images["rl.png"] = plot_rl(frontier["bon"], frontier["rl"])
        images["sweep_cells.png"] = FM.plot_cells(frontier["rl"])
        images["sweep_heatmap.png"] = FM.plot_heatmaps(frontier["rl"])
        images["sweep_penalty.png"] = FM.plot_penalty(frontier["rl"])
        if frontier["checks"].get("sweep", {}).get("coefficients"):
            images["sweep_coefficients.png"] = FM.plot_coefficients(frontier["checks"]["sweep"])
    if "agreement" in frontier.get("label", {}):  # an AI-labelled run: the judge's report section
        from orchestrator.rlaif import plot_calibration, rlaif_section

        images["rlaif_calibration.png"] = plot_calibration(frontier["label"])
    for name, png in images.items():
        (run_dir / name).write_bytes(png)
    c = frontier["checks"]
    lines = ["# rlhf-frontier report", "",
             f"config hash `{frontier['config_hash'][:12]}`, seed {frontier['seed']}", "",
             "## Best-of-n", "", "![best-of-n](bon.png)", "",
             "| proxy | params | val acc | alpha | beta | R² | peak KL (fit) | 90% CI | peak gold (fit) | max proxy gain |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for e in sorted(frontier["bon"], key=lambda e: e["proxy_params"]):
        f = e["fit"]
        ci = e.get("kl_peak_ci90") or [None, None]
        lines.append(f"| {e['proxy']} | {e['proxy_params']} | {_fmt(e.get('val_accuracy'))} | {f['alpha']:.3f} | "
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
              ""]
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
                  f"{_fmt(sw.get('gold_se_mean'))})", ""]
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

