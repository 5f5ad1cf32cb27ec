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


def write_report(run_dir: Path, frontier: dict, extra: dict) -> dict[str, Path]:
    """frontier.json, bon.png, report.md and a self-contained report.html (PNG inlined)."""
    run_dir = Path(run_dir)
    (run_dir / "frontier.json").write_text(json.dumps(frontier, indent=1))
    png = plot_bon(frontier["bon"])
    (run_dir / "bon.png").write_bytes(png)
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
              "", "## Timings", "", "| stage | seconds | cached |", "|---|---|---|"]
    for name, t in extra.get("timings", {}).items():
        lines.append(f"| {name} | {t['seconds']:.1f} | {t['cached']} |")
    md = "\n".join(lines) + "\n"
    (run_dir / "report.md").write_text(md)
    b64 = base64.b64encode(png).decode()
    body = []
    for line in md.splitlines():
        if line.startswith("![best-of-n]"):
            body.append(f'<img alt="best-of-n" src="data:image/png;base64,{b64}" style="max-width:100%">')
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
    page = ("<!doctype html><html><head><meta charset='utf-8'><title>rlhf-frontier report</title>"
            "<style>body{font-family:sans-serif;max-width:1400px;margin:auto}td{font-size:13px}</style>"
            "</head><body>" + "\n".join(out) + "</body></html>")
    (run_dir / "report.html").write_text(page)
    return {"json": run_dir / "frontier.json", "png": run_dir / "bon.png", "md": run_dir / "report.md",
            "html": run_dir / "report.html"}
