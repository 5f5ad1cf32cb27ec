"""The RLAIF section of the report: the judge's measurements, its reliability diagram, and the
judge-trained proxies beside the gold-trained ones (Lee et al. 2023; Bai et al. 2022)."""

from __future__ import annotations

import io

from orchestrator.report.format import fmt as _fmt


def plot_calibration(label: dict) -> bytes:
    """Reliability diagram of the judge's soft labels against gold outcomes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = label["calibration"]["table"]
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    ax.plot([r["mean_p"] for r in t], [r["frac_a_better"] for r in t], "o-", label="judge")
    for r in t:
        ax.annotate(str(r["n"]), (r["mean_p"], r["frac_a_better"]), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("judge's P(a better)")
    ax.set_ylabel("share where gold prefers a")
    ax.set_title(f"RLAIF soft labels (ECE {label['calibration']['ece']:.3f})")
    ax.legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return buf.getvalue()


def rlaif_section(frontier: dict) -> list[str]:
    """The judge's measurements and the RLAIF-vs-gold-label proxy comparison (label.source ai)."""
    lab = frontier["label"]
    j = lab.get("judge", {})
    lines = ["## RLAIF: the AI judge", "",
             f"Judge `{j.get('judge')}`, template `{lab.get('template')}`, {lab.get('pairs')} pairs "
             f"({_fmt(lab.get('pairs_per_s'), 2)} pairs/s, both orders).", "",
             "| measure | value |", "|---|---|",
             f"| agreement with gold (both orders averaged) | {_fmt(lab['agreement'])} |",
             f"| agreement, first order only | {_fmt(lab.get('agreement_first_order_only'))} |",
             f"| position-bias rate (same slot preferred after the swap) | {_fmt(lab.get('position_bias_rate'))} |",
             f"| calibration: ECE / Brier | {_fmt(lab['calibration']['ece'])} / {_fmt(lab['calibration']['brier'])} |",
             f"| mean abs soft-label margin from 0.5 | {_fmt(lab.get('soft_label_mean_abs_margin'))} |"]
    lb = lab.get("length_bias")
    if lb:
        lines.append(f"| prefers the longer response: judge / gold (Spearman with the length difference) | "
                     f"{_fmt(lb['judge_prefers_longer'])} / {_fmt(lb['gold_prefers_longer'])} "
                     f"({_fmt(lb['judge_spearman_with_length_diff'], 2)} / {_fmt(lb['gold_spearman_with_length_diff'], 2)}) |")
    if "agreement_cot" in lab:
        inj = lab.get("injection", {})
        lines += [f"| agreement without / with chain of thought ({lab['measure_pairs']} pairs) | "
                  f"{_fmt(lab['agreement_no_cot'])} / {_fmt(lab['agreement_cot'])} |",
                  f"| pairs/s without / with chain of thought | {_fmt(lab.get('pairs_per_s_no_cot') or lab.get('pairs_per_s'), 2)} / "
                  f"{_fmt(lab.get('pairs_per_s_cot'), 2)} |",
                  f"| agreement of direct 1-10 scoring (sigmoid of the rating difference) | "
                  f"{_fmt(lab.get('agreement_direct'))} ({_fmt(lab.get('pairs_per_s_direct'), 2)} pairs/s) |",
                  f"| injection flip rate: unmitigated / mitigated | "
                  f"{_fmt(inj.get('unmitigated', {}).get('flip_rate'))} / {_fmt(inj.get('mitigated', {}).get('flip_rate'))} |",
                  f"| injection: mean shift of the soft label toward the injected response, unmitigated / mitigated | "
                  f"{_fmt(inj.get('unmitigated', {}).get('mean_shift_toward_injected'))} / "
                  f"{_fmt(inj.get('mitigated', {}).get('mean_shift_toward_injected'))} |"]
    lines += ["", "| principle | pairs | agreement with gold | with gold's own score for it |", "|---|---|---|---|"]
    for name, v in lab.get("agreement_per_principle", {}).items():
        lines.append(f"| {name} | {v['n']} | {_fmt(v['agreement'])} | {_fmt(v.get('agreement_with_gold_principle'))} |")
    lines += ["", "![calibration](rlaif_calibration.png)", ""]
    cmp_ = frontier.get("rlaif", {})
    if cmp_:
        lines += ["Proxies trained on the judge's labels beside proxies trained on gold labels of the same pairs:", "",
                  "| size | labels | val acc (held-out pairs, own labels) | BoN gold peak | BoN KL at peak | RL gold peak | RL KL at peak | RL gold lost by the end |",
                  "|---|---|---|---|---|---|---|---|"]
        for size, row in cmp_.items():
            for lab_, v in sorted(row.items()):
                lines.append(f"| {size} | {lab_} | {_fmt(v.get('val_accuracy_own_labels'))} | {_fmt(v['bon_gold_peak'])} | "
                             f"{_fmt(v['bon_kl_at_peak'], 2)} | {_fmt(v.get('rl_gold_peak'))} | {_fmt(v.get('rl_kl_at_peak'), 2)} | "
                             f"{_fmt(v.get('rl_gold_drop_after_peak'))} |")
        lines.append("")
    return lines
