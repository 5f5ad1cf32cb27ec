"""``jobs.active``'s outputs: ``active.png`` (each measure against labels, one line per arm),
``active.md`` and a self-contained ``active.html``."""

from __future__ import annotations

from pathlib import Path

from orchestrator.report.format import fmt
from orchestrator.report.render import _png, md_to_html

PANELS = (("val_acc", "held-out pair accuracy"), ("val_ece", "held-out ECE"),
          ("bon_peak_gold", "best-of-n peak gold (vs n = 1)"), ("bon_peak_kl", "KL at the best-of-n gold peak (nats)"))


def plot_active(result: dict) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(3.6 * len(PANELS), 3.3), squeeze=False)
    for ax, (key, title) in zip(axes[0], PANELS):
        for arm in result["arms"]:
            rows = sorted((r for r in result["rows"] if r["arm"] == arm), key=lambda r: r["round"])
            ax.plot([r["labels"] for r in rows], [r[key] for r in rows], "o-" if arm != "random" else "s--",
                    label=arm, color="black" if arm == "random" else None)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("labelled pairs")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"active learning: {result['members']} proxies of {result['size']}, seed {result['seed']}")
    data = _png(fig)
    plt.close(fig)
    return data


def _f(x) -> str:
    return "-" if x is None else f"{x:.3g}"


def markdown(result: dict) -> str:
    lines = [f"# Active learning (seed {result['seed']})", "",
             f"An ensemble of {result['members']} proxies of size {result['size']} (one LM, seeds differ"
             + (", each on a bootstrap resample of the labels" if result.get("bootstrap") else "") + "), retrained "
             f"each round on the arm's labelled pairs ({result['labels']} labels); {result['initial']} random pairs "
             f"first, then {result['per_round']} acquired per round for {result['rounds']} rounds; "
             f"{result['pool_pairs']} candidate pairs, {result['val_pairs']} held-out pairs.", "",
             "![active](active.png)", "",
             "| arm | round | labels | val acc | val ECE | members' acc | BoN peak gold | its KL | BoN gold at n max "
             "| acquired disagreement | pool disagreement |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(result["rows"], key=lambda r: (r["arm"], r["round"])):
        lines.append(f"| {r['arm']} | {r['round']} | {r['labels']} | {fmt(r['val_acc'])} | {fmt(r['val_ece'])} | "
                     f"{fmt(r['val_acc_members'])} | {fmt(r['bon_peak_gold'])} | {fmt(r['bon_peak_kl'])} | "
                     f"{fmt(r['bon_gold_at_nmax'])} | {_f(r.get('acquired_disagreement'))} | "
                     f"{_f(r.get('pool_disagreement'))} |")
    vs = result.get("versus_random") or {}
    if vs:
        lines += ["", "Minus the random arm at equal labels, mean over the acquisition rounds:", "",
                  "| arm | val acc | val ECE | BoN peak gold | its KL |", "|---|---|---|---|---|"]
        for arm, v in vs.items():
            m = v["mean"]
            lines.append(f"| {arm} | {fmt(m['val_acc'])} | {fmt(m['val_ece'])} | {fmt(m['bon_peak_gold'])} | "
                         f"{fmt(m['bon_peak_kl'])} |")
    lines += ["", f"Wall time {fmt(result['wall_seconds'])} s (this invocation; cached rounds cost nothing)."]
    return "\n".join(lines) + "\n"


def write_active(run_dir: Path, result: dict) -> dict[str, Path]:
    png = plot_active(result)
    md = markdown(result)
    out = {"png": run_dir / "active.png", "md": run_dir / "active.md", "html": run_dir / "active.html"}
    out["png"].write_bytes(png)
    out["md"].write_text(md)
    out["html"].write_text(md_to_html(md, {"active.png": png}, f"active learning, seed {result['seed']}"))
    return out
