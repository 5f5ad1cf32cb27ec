"""The report's calibration section (issue 20): reliability diagrams, one panel per reward model, at
tau = 1 and at the fitted tau, and the table of ``frontier.json``'s ``bon[i].calibration``."""

from __future__ import annotations

from orchestrator.report.format import fmt
from orchestrator.report.format import png as _png


def plot_reliability(summary: dict) -> bytes:
    """``summary``: {rm: calibration_summary + reliability bins (``reliability``, ``reliability_tau``)}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [n for n, s in summary.items() if s.get("tau") is not None]  # (too few held-out pairs: no panel)
    if not names:
        return b""
    cols = min(6, len(names))
    rows = -(-len(names) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat[len(names):]:
        ax.set_visible(False)
    for ax, name in zip(axes.flat, names):
        s = summary[name]
        for key, style, label in (("reliability", "o-", "tau = 1"), ("reliability_tau", "s--", f"tau = {s['tau']:.3g}")):
            pts = [(b["p_mean"], b["y_mean"]) for b in s[key] if b["n"]]
            ax.plot([p for p, _ in pts], [y for _, y in pts], style, ms=3, label=label)
        ax.plot([0, 1], [0, 1], color="gray", lw=0.6)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_title(f"{name}\nECE {s['ece']:.3f} -> {s['ece_tau']:.3f}", fontsize=8)
        ax.set_xlabel("predicted P(a preferred)")
        ax.legend(fontsize=6)
    for r in range(rows):
        axes[r, 0].set_ylabel("labelled share preferred")
    fig.tight_layout()
    data = _png(fig)
    plt.close(fig)
    return data


def calibration_lines(bon: list[dict], judge: dict | None = None, image: bool = True) -> list[str]:
    """The calibration table: every reward model of ``bon`` (proxies, members, WARM, ensembles) and,
    for an AI-labelled run, the judge (its soft labels against gold's)."""
    lines = ["## Calibration of the reward models (held-out pairs)", "",
             "P(a preferred) = sigma(delta / tau); tau fitted on one half of each proxy's held-out pairs, NLL and "
             "ECE at that tau on the other half (`calibration.parquet` has every pair's delta and label).", "",
             *(["![reliability](reliability.png)", ""] if image else []),
             "| proxy | pairs | acc | NLL | Brier | ECE | tau | NLL at tau | ECE at tau |",
             "|---|---|---|---|---|---|---|---|---|"]
    order = {"proxy": 0, "member": 1, "warm": 2, "ensemble": 3}
    for e in sorted(bon, key=lambda e: (order.get(e.get("kind", "proxy"), 0), e["proxy_params"])):
        c = e.get("calibration")
        if c and c.get("tau") is None:
            lines.append(f"| {e['proxy']} | {c.get('pairs', '-')} | too few held-out pairs | | | | | | |")
        elif c:
            lines.append(f"| {e['proxy']} | {c.get('pairs', '-')} | {fmt(c['acc'])} | {fmt(c['nll'])} | "
                         f"{fmt(c['brier'])} | {fmt(c['ece'])} | {c['tau']:.3g} | {fmt(c['nll_tau'])} | "
                         f"{fmt(c['ece_tau'])} |")
    for name, c in ({"judge (soft labels vs gold)": judge} if judge else {}).items():
        if c.get("tau") is None:
            continue
        lines.append(f"| {name} | {c.get('pairs', '-')} | {fmt(c['acc'])} | {fmt(c['nll'])} | {fmt(c['brier'])} | "
                     f"{fmt(c['ece'])} | {c['tau']:.3g} | {fmt(c['nll_tau'])} | {fmt(c['ece_tau'])} |")
    return lines + [""]
