"""orchestrator.math.checks on hand-made curves whose answers are known by construction (no Ray, no torch).

Curves linear in d = sqrt(KL) between their points are interpolated exactly by the helpers, so the
KL at which a curve reaches a gold level is (gold / slope)^2 and the BoN/RL KL ratio is the squared
ratio of the slopes.
"""
import math

import numpy as np
import pytest

from orchestrator.math.bon import kl_bon
from orchestrator.math.checks import (
    bon_checks,
    cells,
    drop_by_kl,
    gold_at_kl,
    gold_on_curve,
    kl_to_reach,
    rl_checks,
    sweep_checks,
)
from orchestrator.math.scaling import d_spacing_weights, fit_bon, fit_rl

RL_KEYS = ("proxy_rises_every_run", "smallest_rises_then_falls", "rl_form_fits_better", "rl_spends_more_kl_than_bon",
           "ensemble_loses_less", "seed_ensemble_loses_less")


def sq(ds):
    """KL values (nats) at the given d = sqrt(KL)."""
    return [float(d) ** 2 for d in ds]


def curve(kls, golds):
    return [{"kl": k, "gold": g} for k, g in zip(kls, golds)]


# --------------------------------------------------------------------------------------------
# the curve helpers


def test_kl_to_reach_interpolates_in_sqrt_kl():
    pts = curve([0, 1, 4, 9], [0.0, 0.2, 0.1, 0.4])
    assert kl_to_reach(pts, 0.1) == pytest.approx(0.25)  # d = 0.5, halfway to (1, 0.2)
    assert kl_to_reach(pts, 0.2) == pytest.approx(1.0)  # exactly a measured point
    # past a dip: from the last point below (d 2, 0.1) to the first at or above (d 3, 0.4)
    assert kl_to_reach(pts, 0.3) == pytest.approx((2 + 0.2 / 0.3) ** 2)
    assert kl_to_reach(pts, 0.41) is None
    assert kl_to_reach(pts, 0.0) == 0.0  # the origin already reaches it
    # a curve whose first point is past the origin: the implicit start is (d 0, gold 0)
    assert kl_to_reach(curve([4, 9], [0.4, 0.6]), 0.1) == pytest.approx(0.25)  # d = 2 * 0.1 / 0.4


def test_gold_at_kl_and_drop_by_kl():
    pts = curve([0, 1, 4, 9], [0.0, 0.2, 0.1, 0.4])
    assert gold_at_kl(pts, 0.0) == 0.0
    assert gold_at_kl(pts, 1.0) == pytest.approx(0.2)
    assert gold_at_kl(pts, 2.25) == pytest.approx(0.15)  # d 1.5: halfway from 0.2 to 0.1
    assert gold_at_kl(pts, 6.25) == pytest.approx(0.25)  # d 2.5: halfway from 0.1 to 0.4
    assert gold_at_kl(pts, 9.0) == pytest.approx(0.4)
    assert gold_at_kl(pts, 9.01) is None
    assert drop_by_kl(pts, 2.25) == pytest.approx(0.05)  # peak 0.2 so far, 0.15 at d 1.5
    assert drop_by_kl(pts, 4.0) == pytest.approx(0.1)
    assert drop_by_kl(pts, 6.25) == pytest.approx(0.0)  # back above the old peak
    assert drop_by_kl(pts, 1.0) == pytest.approx(0.0)
    assert drop_by_kl(pts, 10.0) is None


def test_gold_on_curve():
    pts = curve([0, 1, 1, 4], [0.05, 0.2, 0.3, 0.5])
    assert gold_on_curve(pts, 0.0) == 0.05  # the curve's own first point, not the origin
    assert gold_on_curve(pts, -1.0) == 0.05  # negative KL is clipped to 0
    assert gold_on_curve(pts, 0.25) == pytest.approx(0.125)  # d 0.5 between (0, 0.05) and (1, 0.2)
    assert gold_on_curve(pts, 1.0) == pytest.approx(0.2)  # the first point at that KL
    assert gold_on_curve(pts, 2.25) == pytest.approx(0.4)  # d 1.5 between (1, 0.3) and (2, 0.5)
    assert gold_on_curve(pts, 4.0) == pytest.approx(0.5)
    assert gold_on_curve(pts, 4.41) is None


def test_cells_group_single_runs_by_proxy_and_coefficient():
    rl = [{"members": ["a"], "kl_coef": 0.0, "seed": 0}, {"members": ["a"], "kl_coef": 0.0, "seed": 1},
          {"members": ["a"], "kl_coef": 0.1, "seed": 0}, {"members": ["b"], "kl_coef": 0.0, "seed": 0},
          {"members": ["a", "b"], "kl_coef": 0.0, "seed": 0}]
    c = cells(rl)
    assert set(c) == {("a", 0.0), ("a", 0.1), ("b", 0.0)}  # the two-member run is no cell
    assert [r["seed"] for r in c[("a", 0.0)]] == [0, 1]


# --------------------------------------------------------------------------------------------
# best-of-n


def bon_entry(name, params, alpha, beta, N=64):
    """Best-of-n gold exactly d (alpha - beta d) at n = 1..N; the proxy rises with d."""
    n = np.arange(1, N + 1)
    kl = kl_bon(n)
    d = np.sqrt(kl)
    gold = d * (alpha - beta * d)
    f = fit_bon(kl, gold, d_spacing_weights(kl))
    return {"proxy": name, "proxy_params": params, "seed": 0, "fit": f.to_dict(),
            "points": [{"n": int(a), "kl": float(k), "gold": float(g), "proxy": float(x)}
                       for a, k, g, x in zip(n, kl, gold, d)]}


def gold_bon(n, alpha, beta):
    d = math.sqrt(kl_bon(n))
    return d * (alpha - beta * d)


GAO = [("s", 10_000, 0.3, 0.20), ("m", 50_000, 0.4, 0.18), ("l", 200_000, 0.5, 0.16)]


def test_bon_checks_pass_on_gao_like_curves():
    c = bon_checks([bon_entry(*a) for a in reversed(GAO)])  # any order: sorted by size
    assert c["proxy_monotone"] == {"s": True, "m": True, "l": True}
    # peak at d* = 0.3 / 0.4 = 0.75 (KL 0.5625): among the measured n, n = 4 (KL 0.636) is closest
    assert c["smallest_gold_peak_n"] == 4
    assert c["smallest_gold_peak"] == pytest.approx(gold_bon(4, 0.3, 0.2))
    assert c["smallest_gold_drop_after_peak"] == pytest.approx(gold_bon(4, 0.3, 0.2) - gold_bon(64, 0.3, 0.2))
    assert c["smallest_rises_then_falls"] is True
    assert c["r2"] == {"s": pytest.approx(1.0), "m": pytest.approx(1.0), "l": pytest.approx(1.0)}
    assert c["r2_all_ge_0.9"] is True
    assert c["spearman_size_kl_peak"] == pytest.approx(1.0)  # fitted peaks 0.5625, 1.23, 2.44 nats
    assert c["spearman_size_gold_peak"] == pytest.approx(1.0)
    assert c["not_evaluated"] == {}
    assert c["all_pass"] is True


def test_bon_checks_record_a_reversed_size_trend_without_failing_the_run():
    """One run cannot settle the size law (the seed's proxies dominate its spread): a reversed trend
    is recorded -- Spearman, the slopes -- and judged over seeds (jobs.seeds), not by all_pass."""
    rev = [("s", 10_000, 0.5, 0.16), ("m", 50_000, 0.4, 0.18), ("l", 200_000, 0.3, 0.20)]
    c = bon_checks([bon_entry(*a) for a in rev])
    assert c["smallest_rises_then_falls"] is True and c["r2_all_ge_0.9"] is True
    assert c["spearman_size_kl_peak"] == pytest.approx(-1.0)
    assert c["spearman_size_gold_peak"] == pytest.approx(-1.0)
    assert c["size_trend"]["d_peak"]["slope"] < 0 and c["size_trend"]["gold_peak"]["slope"] < 0
    assert c["all_pass"] is True


def test_bon_checks_all_pass_ignores_the_gold_peak_trend():
    # KL peaks grow with size (0.5625, 1, 1.5625 nats), gold peaks shrink (0.1125, 0.1, 0.0625)
    c = bon_checks([bon_entry("s", 1, 0.3, 0.2), bon_entry("m", 2, 0.2, 0.1), bon_entry("l", 3, 0.1, 0.04)])
    assert c["spearman_size_kl_peak"] == pytest.approx(1.0)
    assert c["spearman_size_gold_peak"] == pytest.approx(-1.0)
    assert c["all_pass"] is True


def test_bon_checks_catch_a_falling_proxy():
    bon = [bon_entry(*a) for a in GAO]
    bon[1]["points"][10]["proxy"] = -5.0
    c = bon_checks(bon)
    assert c["proxy_monotone"] == {"s": True, "m": False, "l": True}
    assert c["all_pass"] is False


def test_bon_checks_smallest_keeps_rising():
    # peaks at d* = 3, 4, 5: beyond the largest measured d = sqrt(kl_bon(64)) = 1.78
    bon = [bon_entry("s", 1, 0.3, 0.05), bon_entry("m", 2, 0.4, 0.05), bon_entry("l", 3, 0.5, 0.05)]
    c = bon_checks(bon)
    assert c["smallest_gold_peak_n"] == 64
    assert c["smallest_gold_drop_after_peak"] == 0.0
    assert c["smallest_rises_then_falls"] is False
    assert c["spearman_size_kl_peak"] == pytest.approx(1.0)
    assert c["all_pass"] is False


def test_bon_checks_smallest_falls_from_the_start():
    bon = [bon_entry("s", 1, -0.1, 0.1), bon_entry("m", 2, 0.4, 0.18), bon_entry("l", 3, 0.5, 0.16)]
    c = bon_checks(bon)
    assert c["smallest_gold_peak_n"] == 1 and c["smallest_gold_peak"] == 0.0
    assert c["smallest_rises_then_falls"] is False
    assert c["all_pass"] is False


def test_bon_checks_r2_below_0_9_fails():
    bon = [bon_entry(*a) for a in GAO]
    bon[2]["fit"]["r2"] = 0.85
    c = bon_checks(bon)
    assert c["r2"]["l"] == 0.85 and c["r2_all_ge_0.9"] is False
    assert c["all_pass"] is False


def test_bon_checks_single_size_leaves_the_trend_unevaluated():
    c = bon_checks([bon_entry("s", 10_000, 0.3, 0.2)])
    assert set(c["not_evaluated"]) == {"spearman_size_kl_peak", "spearman_size_gold_peak"}
    assert "1 proxy size" in c["not_evaluated"]["spearman_size_kl_peak"]
    assert "spearman_size_kl_peak" not in c and "spearman_size_gold_peak" not in c
    assert c["all_pass"] is True  # the other checks hold; the trend is not required
    c = bon_checks([bon_entry("s", 10_000, 0.3, 0.05)])  # ... but they still count
    assert c["all_pass"] is False


def test_bon_checks_a_fit_without_peak_ranks_highest_and_the_measured_gold_stands_in():
    bon = [bon_entry(*a) for a in GAO]
    bon[0]["fit"].update(kl_peak=None, gold_peak=None)  # the smallest: "no peak in sight"
    c = bon_checks(bon)
    assert c["spearman_size_kl_peak"] == pytest.approx(-0.5)  # ranks 3, 1, 2
    # gold: its best measured point (0.112) stands in, below the others' fitted peaks
    assert c["spearman_size_gold_peak"] == pytest.approx(1.0)
    assert c["size_trend"]["d_peak"]["censored"] == 1  # at the largest KL of the points


def test_bon_checks_no_fitted_peak_anywhere_is_no_size_trend():
    bon = [bon_entry(*a) for a in GAO]
    for e in bon:
        e["fit"].update(kl_peak=None, gold_peak=None)
    assert bon_checks(bon).get("spearman_size_kl_peak") != pytest.approx(1.0)


# --------------------------------------------------------------------------------------------
# RL


def fit_dict(r2=0.95, kl_peak=None, gold_peak=None, alpha=0.1, beta=0.05):
    return {"alpha": alpha, "beta": beta, "r2": r2, "kl_peak": kl_peak, "gold_peak": gold_peak}


def rl_run(proxy, params, kls, golds, *, kl_coef=0.0, members=None, objective="mean", se=0.01, proxies=None,
           r2=(0.95, 0.8), real_fits=False, **labels):
    """A run's frontier.json entry as ``rl_loop.summarize`` and ``sweep.stage_sweep`` write it."""
    proxies = proxies if proxies is not None else [math.sqrt(k) for k in kls]
    pts = [{"step": 10 * i, "kl": float(k), "gold": float(g), "proxy": float(p)}
           for i, (k, g, p) in enumerate(zip(kls, golds, proxies))]
    peak = int(np.argmax(golds))
    e = {"proxy": proxy, "trial": f"{proxy}-kl{kl_coef:g}", "proxy_params": params, "kl_coef": kl_coef, "seed": 0,
         "objective": objective, "members": members or [proxy], "points": pts, "gold_se": se,
         "gold_peak_empirical": {"step": pts[peak]["step"], "kl": pts[peak]["kl"], "gold": float(golds[peak])},
         "gold_drop_after_peak": float(golds[peak] - golds[-1])}
    if real_fits:
        kl, g = np.array(kls[1:], float), np.array(golds[1:], float)
        e["fit"], e["fit_bon_form"] = fit_rl(kl, g).to_dict(), fit_bon(kl, g).to_dict()
    else:
        e["fit"], e["fit_bon_form"] = fit_dict(r2[0]), fit_dict(r2[1])
    e.update(labels)
    return e


D6 = sq(range(6))  # d = 0..5
BON_S = {"proxy": "p-s", "proxy_params": 10_000,  # best-of-n gold 0.2 d
         "points": [{"n": n, "kl": k, "gold": g} for n, k, g in [(1, 0.0, 0.0), (2, 1.0, 0.2), (3, 4.0, 0.4)]]}


def single_s(golds=(0, 0.1, 0.2, 0.3, 0.1, 0.05), se=0.05, **kw):
    """The smallest proxy: gold 0.1 d up to d = 3, then falls."""
    return rl_run("p-s", 10_000, D6, list(golds), se=se, size="s", **kw)


def single_m(**kw):
    return rl_run("p-m", 50_000, D6, [0, 0.1, 0.2, 0.3, 0.4, 0.35], size="m", **kw)


def size_ensemble(golds=(0, 0.1, 0.2, 0.2), objective="wco", **kw):
    return rl_run(f"ensemble-{objective}", 60_000, sq([0, 1, 2, 3.5]), list(golds), members=["p-s", "p-m"],
                  objective=objective, size="ensemble", **kw)


def seed_ensemble(golds=(0, 0.1, 0.2, 0.2), seed=0, name="ensemble-seeds-wco"):
    return rl_run(name, 30_000, sq([0, 1, 2, 3.5]), list(golds), members=["p-s", "p-s-m1", "p-s-m2"],
                  objective="wco", size="ensemble", ensemble="seeds", member_size="s", seed=seed)


def test_rl_checks_pass_on_a_faithful_run():
    c = rl_checks([BON_S], [single_m(), single_s(), size_ensemble()])
    assert c["proxy_spearman_with_kl"] == {"p-s-kl0": pytest.approx(1.0), "p-m-kl0": pytest.approx(1.0),
                                           "ensemble-wco-kl0": pytest.approx(1.0)}
    assert c["smallest"] == "p-s"
    assert c["smallest_gold_peak"] == {"gold": 0.3, "kl": 9.0, "step": 30}
    assert c["smallest_gold_drop_after_peak"] == pytest.approx(0.25)
    assert c["smallest_gold_drop_tail_mean"] == pytest.approx(0.225)  # 0.3 - mean(0.1, 0.05)
    assert c["rl_form_fits_better_runs"] == "3/3"
    assert c["r2_pooled_rl_form"] == pytest.approx(0.95) and c["r2_pooled_bon_form"] == pytest.approx(0.8)
    assert set(c["kl_for_same_gold"]) == {"p-s"}  # p-m has no best-of-n curve
    assert c["kl_for_same_gold"]["p-s"]["ratio"] == pytest.approx(4.0)  # (0.2 / 0.1)^2
    # every run at the KL all reached: the ensemble's 12.25 (d 3.5)
    assert c["gold_drop_at_kl"] == pytest.approx(12.25)
    assert c["gold_drop_single"] == {"p-s": pytest.approx(0.1), "p-m": pytest.approx(0.0)}
    assert c["gold_drop_ensemble"] == {"ensemble-wco": pytest.approx(0.0)}
    assert c["gold_drop_single_end"] == {"p-s": pytest.approx(0.25), "p-m": pytest.approx(0.05)}
    assert c["gold_drop_ensemble_end"] == {"ensemble-wco": pytest.approx(0.0)}
    for k in RL_KEYS[:-1]:
        assert c[k] is True, k
    assert "seed_ensemble_loses_less" not in c  # no seed ensemble: not a check of this run
    assert c["not_evaluated"] == {}
    assert c["all_pass"] is True


def test_rl_smallest_rises_then_falls_beyond_noise_only():
    # after the peak 0.3: 0.29, 0.29, 0.14. The last point alone drops 0.16 > 2 se, the mean of the
    # last three only 0.06 < 2 se = 0.1: one noisy point decides nothing
    noisy = rl_run("p-s", 10_000, sq(range(7)), [0, 0.1, 0.2, 0.3, 0.29, 0.29, 0.14], se=0.05)
    c = rl_checks([], [noisy])
    assert c["smallest_gold_drop_after_peak"] == pytest.approx(0.16)
    assert c["smallest_gold_drop_tail_mean"] == pytest.approx(0.06)
    assert c["smallest_rises_then_falls"] is False and c["all_pass"] is False
    c = rl_checks([], [single_s(se=0.05)])  # drop 0.225 > 0.1
    assert c["smallest_rises_then_falls"] is True
    c = rl_checks([], [single_s(se=0.12)])  # drop 0.225 < 0.24
    assert c["smallest_rises_then_falls"] is False
    c = rl_checks([], [single_s(golds=(0, 0.1, 0.2, 0.3, 0.0, 0.0), se=0.16)])  # peak 0.3 < 2 se = 0.32
    assert c["smallest_gold_drop_tail_mean"] == pytest.approx(0.3) and c["smallest_rises_then_falls"] is False
    c = rl_checks([], [single_s(golds=(0, 0.1, 0.2, 0.3, 0.4, 0.5))])  # peak at the end: no tail
    assert c["smallest_gold_drop_tail_mean"] == 0.0 and c["smallest_rises_then_falls"] is False


def test_rl_smallest_is_the_smallest_no_penalty_single_run():
    penalty = rl_run("p-xs", 1_000, D6, [0, 0.1, 0.2, 0.3, 0.4, 0.5], kl_coef=0.1)
    c = rl_checks([], [single_m(), penalty, single_s()])
    assert c["smallest"] == "p-s"  # p-xs is smaller but has a KL penalty


def test_rl_proxy_must_rise_in_every_no_penalty_run():
    falling = rl_run("p-m", 50_000, D6, [0, 0.1, 0.2, 0.3, 0.4, 0.35], proxies=[0, 0.3, 0.2, 0.1, 0.05, -0.1])
    c = rl_checks([BON_S], [single_s(), falling])
    # proxy ranks 2, 6, 5, 4, 3, 1 against 1..6: 1 - 6 * 50 / (6 * 35)
    assert c["proxy_spearman_with_kl"]["p-m-kl0"] == pytest.approx(-3 / 7)
    assert c["proxy_rises_every_run"] is False and c["all_pass"] is False
    # a penalty run's proxy is not checked
    penalty = rl_run("p-m", 50_000, D6, [0] * 6, kl_coef=0.1, proxies=[0, 0.3, 0.2, 0.1, 0.0, -0.1])
    c = rl_checks([BON_S], [single_s(), penalty])
    assert set(c["proxy_spearman_with_kl"]) == {"p-s-kl0"} and c["proxy_rises_every_run"] is True
    # two evaluations say nothing: NaN, which fails
    short = rl_run("p-m", 50_000, [0.0, 1.0], [0.0, 0.1])
    c = rl_checks([], [single_s(), short])
    assert math.isnan(c["proxy_spearman_with_kl"]["p-m-kl0"]) and c["proxy_rises_every_run"] is False


def test_rl_kl_for_same_gold_ratio_and_the_exact_bon_kl():
    c = rl_checks([BON_S], [single_s()])
    r = c["kl_for_same_gold"]["p-s"]
    # levels at 50 / 75 / 90% of min(0.3, 0.4); RL gold = 0.1 d, BoN gold = 0.2 d
    assert [x["gold"] for x in r["levels"]] == pytest.approx([0.15, 0.225, 0.27])
    assert [x["kl_rl"] for x in r["levels"]] == pytest.approx([2.25, 5.0625, 7.29])
    assert [x["kl_bon"] for x in r["levels"]] == pytest.approx([0.5625, 1.265625, 1.8225])
    assert r["ratio"] == pytest.approx(4.0) and r["ratio_vs_bound"] == pytest.approx(4.0)
    assert r["gold"] == pytest.approx(0.27)
    assert c["rl_spends_more_kl_than_bon"] is True
    # the exact best-of-n KL (a quarter of the bound here: d halves) is used for the ratio
    exact = {**BON_S, "points": [{**p, "kl_exact": p["kl"] / 4} for p in BON_S["points"]]}
    r = rl_checks([exact], [single_s()])["kl_for_same_gold"]["p-s"]
    assert r["ratio"] == pytest.approx(16.0) and r["ratio_vs_bound"] == pytest.approx(4.0)
    assert r["levels"][0]["kl_bon"] == pytest.approx(0.140625)
    assert r["levels"][0]["kl_bon_bound"] == pytest.approx(0.5625)


def test_rl_spending_less_kl_than_bon_fails():
    slow_bon = {**BON_S, "points": [{**p, "gold": p["gold"] / 4} for p in BON_S["points"]]}  # gold 0.05 d
    c = rl_checks([slow_bon], [single_s(), single_m(), size_ensemble()])
    r = c["kl_for_same_gold"]["p-s"]
    assert [x["gold"] for x in r["levels"]] == pytest.approx([0.05, 0.075, 0.09])  # of min(0.3, 0.1)
    assert r["ratio"] == pytest.approx(0.25)
    assert c["rl_spends_more_kl_than_bon"] is False and c["all_pass"] is False
    # no best-of-n curve for any no-penalty single run: not evaluated
    c = rl_checks([], [single_s(), single_m(), size_ensemble()])
    assert c["kl_for_same_gold"] == {} and c["rl_spends_more_kl_than_bon"] is None
    assert "rl_spends_more_kl_than_bon" in c["not_evaluated"] and c["all_pass"] is True


def test_rl_ensemble_loses_less_than_the_singles_or_more():
    # the ensemble: 0.3 at d 2, 0.1 at d 3.5 -> drop 0.2 at KL 12.25, more than the singles' mean 0.05
    c = rl_checks([BON_S], [single_s(), single_m(), size_ensemble(golds=(0, 0.1, 0.3, 0.1))])
    assert c["gold_drop_ensemble"] == {"ensemble-wco": pytest.approx(0.2)}
    assert c["ensemble_loses_less"] is False and c["all_pass"] is False
    # the best of several ensembles counts: uwo loses nothing
    c = rl_checks([BON_S], [single_s(), single_m(), size_ensemble(golds=(0, 0.1, 0.3, 0.1)),
                            size_ensemble(objective="uwo")])
    assert c["ensemble_loses_less"] is True


def test_rl_without_ensemble_run_the_check_is_not_evaluated():
    c = rl_checks([BON_S], [single_s(), single_m()])
    assert c["ensemble_loses_less"] is None
    assert "no size-ensemble run" in c["not_evaluated"]["ensemble_loses_less"]
    assert set(c["not_evaluated"]) == {"ensemble_loses_less"}
    assert "gold_drop_at_kl" not in c
    assert c["all_pass"] is True  # over the evaluated checks
    c = rl_checks([BON_S], [single_s(se=0.2), single_m()])
    assert c["all_pass"] is False  # ... which still count
    # a "mean" ensemble or a seed ensemble is no size ensemble of WCO/UWO
    c = rl_checks([BON_S], [single_s(), single_m(), size_ensemble(objective="mean"), seed_ensemble()])
    assert c["ensemble_loses_less"] is None and "ensemble_loses_less" in c["not_evaluated"]


def test_rl_ensemble_without_single_run():
    penalty = rl_run("p-s", 10_000, D6, [0, 0.1, 0.2, 0.3, 0.1, 0.05], kl_coef=0.1)
    c = rl_checks([BON_S], [penalty, size_ensemble()])
    assert c["not_evaluated"]["ensemble_loses_less"] == "no single-proxy run without a KL penalty to compare with"
    assert set(c["not_evaluated"]) == {"ensemble_loses_less", "smallest_rises_then_falls",
                                       "rl_spends_more_kl_than_bon"}
    for k in c["not_evaluated"]:
        assert c[k] is None
    assert c["proxy_rises_every_run"] is True and c["rl_form_fits_better"] is True
    assert c["all_pass"] is True


def test_rl_seed_ensemble_against_one_member_alone():
    c = rl_checks([BON_S], [single_s(), single_m(), size_ensemble(), seed_ensemble()])
    assert c["seed_ensemble"] == {"size": "s", "members": 3, "at_kl": pytest.approx(12.25),
                                  "single": pytest.approx(0.1), "ensembles": {"ensemble-seeds-wco": pytest.approx(0.0)},
                                  "single_end": pytest.approx(0.25), "ensembles_end": {"ensemble-seeds-wco": 0.0}}
    assert c["seed_ensemble_loses_less"] is True and c["all_pass"] is True
    c = rl_checks([BON_S], [single_s(), single_m(), size_ensemble(), seed_ensemble(golds=(0, 0.1, 0.3, 0.1))])
    assert c["seed_ensemble"]["ensembles"] == {"ensemble-seeds-wco": pytest.approx(0.2)}
    assert c["seed_ensemble_loses_less"] is False and c["all_pass"] is False
    # the first seed's ensembles only: another seed's (worse) ensemble is left out
    other = seed_ensemble(golds=(0, 0.1, 0.3, 0.1), seed=1, name="ensemble-seeds-wco-s1")
    c = rl_checks([BON_S], [single_s(), seed_ensemble(), other])
    assert set(c["seed_ensemble"]["ensembles"]) == {"ensemble-seeds-wco"} and c["seed_ensemble_loses_less"] is True


def test_rl_seed_ensemble_without_a_matching_single_run():
    for singles in ([single_m()], [single_s(seed=1), single_m()]):  # no size-s run; one of another seed
        c = rl_checks([BON_S], [*singles, size_ensemble(), seed_ensemble()])
        assert c["seed_ensemble_loses_less"] is None and "seed_ensemble" not in c
        assert c["not_evaluated"]["seed_ensemble_loses_less"] == "no single-proxy run of size s without a penalty"


def test_rl_form_fits_better_is_pooled_over_runs():
    # run A: gold 1, 3 past KL 0 (SST 2); run B: 1, 2 (SST 0.5). A favours the RL form, B the BoN form
    a = rl_run("a", 1, [0, 1, 4], [0, 1, 3], kl_coef=0.1, r2=(0.9, 0.5))
    b = rl_run("b", 2, [0, 1, 4], [0, 1, 2], kl_coef=0.1, r2=(0.5, 0.9))
    c = rl_checks([], [a, b])
    assert c["rl_form_fits_better_runs"] == "1/2"
    assert c["r2_pooled_rl_form"] == pytest.approx(1 - (0.1 * 2 + 0.5 * 0.5) / 2.5)  # 0.82
    assert c["r2_pooled_bon_form"] == pytest.approx(1 - (0.5 * 2 + 0.1 * 0.5) / 2.5)  # 0.58
    assert c["rl_form_fits_better"] is True
    a["fit"]["r2"], a["fit_bon_form"]["r2"], b["fit"]["r2"], b["fit_bon_form"]["r2"] = 0.5, 0.9, 0.9, 0.5
    c = rl_checks([], [a, b])
    assert c["r2_pooled_rl_form"] == pytest.approx(0.58) and c["rl_form_fits_better"] is False
    # no run without a penalty: only this check is evaluated, and it decides all_pass
    assert set(c["not_evaluated"]) == {"proxy_rises_every_run", "smallest_rises_then_falls",
                                       "rl_spends_more_kl_than_bon", "ensemble_loses_less"}
    assert c["all_pass"] is False


def test_rl_form_fits_better_with_real_fits():
    d = np.linspace(0.25, 4.0, 16)
    kls = [0.0, *(d**2)]
    rl_form = [0.0, *(d * (0.3 - 0.2 * np.log(d)))]
    bon_form = [0.0, *(d * (0.3 - 0.1 * d))]
    c = rl_checks([], [rl_run("p-s", 1, kls, rl_form, real_fits=True)])
    assert c["r2_rl_form"]["p-s"] == pytest.approx(1.0) and c["r2_bon_form"]["p-s"] < 0.99
    assert c["rl_form_fits_better"] is True
    c = rl_checks([], [rl_run("p-s", 1, kls, bon_form, real_fits=True)])
    assert c["r2_bon_form"]["p-s"] == pytest.approx(1.0) and c["r2_rl_form"]["p-s"] < 0.99
    assert c["rl_form_fits_better"] is False


def test_rl_checks_on_no_run_evaluate_nothing():
    c = rl_checks([BON_S], [])
    assert set(c["not_evaluated"]) == set(RL_KEYS) - {"seed_ensemble_loses_less"}
    assert all(c[k] is None for k in c["not_evaluated"])
    assert c["all_pass"] is False  # nothing evaluated is no pass


def test_rl_every_seed_of_a_proxy_counts():
    fast = rl_run("p-s", 10_000, D6, [0, 0.4, 0.8, 1.2, 0.4, 0.2], seed=0)  # gold 0.4 d: less KL than BoN
    slow = single_s(seed=1)  # gold 0.1 d: 4x the KL of BoN
    c = rl_checks([BON_S], [fast, slow, size_ensemble()])
    assert c["rl_spends_more_kl_than_bon"] is False  # seed 0's RL run spends less KL than best-of-n
    # at KL 12.25 seed 0 has lost 0.4 (1.2 -> 0.8), seed 1 0.1: both count (keys aside)
    assert sorted(c["gold_drop_single"].values()) == pytest.approx([0.1, 0.4])


# --------------------------------------------------------------------------------------------
# the sweep

BASE = (sq(range(5)), [0, 0.2, 0.4, 0.5, 0.4])  # no penalty: gold 0.2 d up to d 2, then 0.5, 0.4
ON_CURVE = (sq([0, 1, 1.5, 2]), [0, 0.2, 0.3, 0.4])  # a penalty run on that curve, stopping at KL 4


def sw_run(p, params, kl_coef, pts=BASE, kl_peak=1.0, gold_peak=0.1, seed=0, se=0.01, alpha=0.1, beta=0.05):
    e = rl_run(p, params, pts[0], pts[1], kl_coef=kl_coef, se=se, seed=seed, trial=f"{p}-kl{kl_coef:g}-s{seed}")
    e["fit"] = fit_dict(kl_peak=kl_peak, gold_peak=gold_peak, alpha=alpha, beta=beta)
    return e


SIZES = [("b", 50_000), ("a", 10_000), ("c", 200_000)]


def sweep(peaks=((1.0, 0.1), (2.0, 0.2), (4.0, 0.3)), penalty=ON_CURVE, sizes=SIZES, coefs=(0.0, 0.1)):
    by_size = dict(zip(sorted(p for _, p in sizes), peaks))
    rl = []
    for name, params in sizes:
        kp, gp = by_size[params]
        for k in coefs:
            rl.append(sw_run(name, params, k, BASE if k == 0 else penalty, kp, gp))
    return rl


def test_sweep_checks_pass_when_peaks_grow_and_penalty_runs_stay_on_the_frontier():
    c = sweep_checks([], sweep())
    assert c["proxies"] == ["a", "b", "c"] and c["kl_coefs"] == [0.0, 0.1]
    reached = max(BASE[0])
    assert c["no_penalty_peaks"]["a"] == {"params": 10_000, "kl_peak_fit": 1.0, "gold_peak_fit": 0.1,
                                          "gold_peak_empirical": 0.5, "kl_reached": reached}
    assert c["spearman_size_kl_peak"] == pytest.approx(1.0) and c["spearman_size_gold_peak"] == pytest.approx(1.0)
    assert c["peak_kl_grows_with_size"] is True and c["peak_gold_grows_with_size"] is True
    assert set(c["penalty"]) == {"a@0.1", "b@0.1", "c@0.1"}
    assert c["penalty"]["a@0.1"] == {"final_kl": 4.0, "final_kl_no_penalty": 16.0, "lower_final_kl": True,
                                     "gap_mean_abs": pytest.approx(0.0), "gap_mean": pytest.approx(0.0),
                                     "gold_se": 0.01}
    assert c["penalty_lower_final_kl"] is True and c["penalty_near_frontier"] is True
    assert c["penalty_gap_mean_abs"] == pytest.approx(0.0) and c["gold_se_mean"] == pytest.approx(0.01)
    assert c["not_evaluated"] == {}
    assert c["all_pass"] is True


def test_sweep_peaks_shrinking_with_size_fail():
    c = sweep_checks([], sweep(peaks=((4.0, 0.1), (2.0, 0.2), (1.0, 0.3))))
    assert c["spearman_size_kl_peak"] == pytest.approx(-1.0)
    assert c["peak_kl_grows_with_size"] is False and c["peak_gold_grows_with_size"] is True
    assert c["all_pass"] is False
    c = sweep_checks([], sweep(peaks=((1.0, 0.3), (2.0, 0.2), (4.0, 0.1))))
    assert c["peak_kl_grows_with_size"] is True and c["peak_gold_grows_with_size"] is False
    assert c["all_pass"] is False


def test_sweep_penalty_runs_far_below_the_frontier():
    c = sweep_checks([], sweep(penalty=(ON_CURVE[0], [0, 0, 0, 0])))
    assert c["penalty"]["a@0.1"]["gap_mean_abs"] == pytest.approx(0.3)  # mean of 0.2, 0.3, 0.4
    assert c["penalty_lower_final_kl"] is True
    assert c["penalty_near_frontier"] is False and c["all_pass"] is False
    # above at one point, below at another: the signed mean cancels, the absolute one does not
    c = sweep_checks([], sweep(penalty=(ON_CURVE[0], [0, 0.3, 0.2, 0.4])))
    assert c["penalty"]["a@0.1"]["gap_mean"] == pytest.approx(0.0)
    assert c["penalty"]["a@0.1"]["gap_mean_abs"] == pytest.approx(0.2 / 3)


def test_sweep_near_means_within_two_standard_errors_of_a_difference():
    far = (ON_CURVE[0], [0, 0, 0, 0])  # mean |gap| 0.3
    for se, near in ((0.1, False), (0.11, True)):  # 2 sqrt(2) se = 0.283, 0.311
        rl = [sw_run(n, p, k, BASE if k == 0 else far, kl_peak=p / 1e4, gold_peak=p / 1e6, se=se)
              for n, p in SIZES for k in (0.0, 0.1)]
        assert sweep_checks([], rl)["penalty_near_frontier"] is near, se


def test_sweep_penalty_run_past_the_no_penalty_kl():
    # its last point (KL 25) lies beyond the no-penalty curve (KL 16): no gap there, but it did not stop earlier
    c = sweep_checks([], sweep(penalty=(sq([0, 1, 2, 5]), [0, 0.2, 0.4, 0.3])))
    assert c["penalty"]["a@0.1"]["gap_mean_abs"] == pytest.approx(0.0)
    assert c["penalty"]["a@0.1"]["lower_final_kl"] is False
    assert c["penalty_lower_final_kl"] is False and c["penalty_near_frontier"] is True
    assert c["all_pass"] is False


def test_sweep_penalty_run_is_compared_with_its_own_seed():
    half = (BASE[0], [0, 0.1, 0.2, 0.25, 0.2])  # seed 1's no-penalty curve: half of seed 0's
    bases = [sw_run("a", 1, 0.0, BASE, seed=0), sw_run("a", 1, 0.0, half, seed=1)]
    on_half = (ON_CURVE[0], [0, 0.1, 0.15, 0.2])
    c = sweep_checks([], [*bases, sw_run("a", 1, 0.1, on_half, seed=1)])
    assert c["penalty"]["a@0.1"]["gap_mean_abs"] == pytest.approx(0.0)
    # no seed-7 run without a penalty: compared with the first one (seed 0), 0.1 d above this run
    c = sweep_checks([], [*bases, sw_run("a", 1, 0.1, on_half, seed=7)])
    assert c["penalty"]["a@0.1"]["gap_mean_abs"] == pytest.approx((0.1 + 0.15 + 0.2) / 3)


def test_sweep_every_seed_of_a_penalty_cell_counts():
    rl = [sw_run("a", 1, 0.0, BASE, seed=0), sw_run("a", 1, 0.0, BASE, seed=1),
          sw_run("a", 1, 0.1, (ON_CURVE[0], [0, 0, 0, 0]), seed=0),  # 0.3 below the frontier
          sw_run("a", 1, 0.1, ON_CURVE, seed=1)]  # on it
    c = sweep_checks([], rl)
    assert c["penalty_gap_mean_abs"] == pytest.approx(0.15)
    assert c["penalty_near_frontier"] is False  # 0.15 > 2 sqrt(2) 0.01


def test_sweep_two_sizes_leave_the_size_trend_unevaluated():
    c = sweep_checks([], sweep(sizes=SIZES[:2]))
    assert set(c["not_evaluated"]) == {"peak_kl_grows_with_size", "peak_gold_grows_with_size"}
    assert c["not_evaluated"]["peak_kl_grows_with_size"].startswith("2 proxy sizes")
    assert "peak_kl_grows_with_size" not in c and "spearman_size_kl_peak" not in c
    assert c["penalty_near_frontier"] is True and c["all_pass"] is True  # over the penalty checks
    c = sweep_checks([], sweep(sizes=SIZES[:2], penalty=(ON_CURVE[0], [0, 0, 0, 0])))
    assert c["all_pass"] is False


def test_sweep_without_a_no_penalty_run_evaluates_nothing():
    c = sweep_checks([], sweep(coefs=(0.1, 0.3)))
    assert c["kl_coefs"] == [0.1, 0.3]
    assert set(c["not_evaluated"]) == {"peak_kl_grows_with_size", "peak_gold_grows_with_size",
                                       "penalty_lower_final_kl", "penalty_near_frontier"}
    assert "lacks 0" in c["not_evaluated"]["peak_kl_grows_with_size"]
    assert "no_penalty_peaks" not in c and "penalty" not in c
    assert c["all_pass"] is False


def test_sweep_without_penalty_runs_checks_the_size_trend_only():
    c = sweep_checks([], sweep(coefs=(0.0,)))
    assert c["penalty"] == {}
    assert set(c["not_evaluated"]) == {"penalty_lower_final_kl", "penalty_near_frontier"}
    assert c["all_pass"] is True
    c = sweep_checks([], sweep(coefs=(0.0,), peaks=((4.0, 0.1), (2.0, 0.2), (1.0, 0.3))))
    assert c["all_pass"] is False


def test_sweep_peaks_and_coefficients_average_the_seeds():
    rl = [sw_run("a", 1, 0.0, kl_peak=1.0, gold_peak=0.1, alpha=0.1, beta=0.1, seed=0),
          sw_run("a", 1, 0.0, kl_peak=3.0, gold_peak=0.3, alpha=0.3, beta=0.2, seed=1),
          sw_run("b", 2, 0.0, kl_peak=None, gold_peak=None, seed=0), sw_run("b", 2, 0.0, seed=1),
          rl_run("ens", 3, *BASE, members=["a", "b"], objective="wco")]  # no cell
    bon = [{"proxy": "a", "fit": {"alpha": 0.5, "beta": 0.25}}]
    c = sweep_checks(bon, rl)
    assert c["proxies"] == ["a", "b"]
    assert c["no_penalty_peaks"]["a"]["kl_peak_fit"] == pytest.approx(2.0)
    assert c["no_penalty_peaks"]["a"]["gold_peak_fit"] == pytest.approx(0.2)
    assert c["no_penalty_peaks"]["b"]["kl_peak_fit"] is None  # one seed without a fitted peak
    assert c["coefficients"]["a"] == {"params": 1, "bon": {"alpha": 0.5, "beta": 0.25},
                                      "rl": {"alpha": pytest.approx(0.2), "beta": pytest.approx(0.15)}}
    assert c["coefficients"]["b"]["bon"] is None


def test_sweep_no_fitted_peak_anywhere_is_no_size_trend():
    c = sweep_checks([], sweep(peaks=((None, None),) * 3))
    assert c.get("peak_kl_grows_with_size") is not True
    assert c.get("peak_gold_grows_with_size") is not True


def test_sweep_proxy_with_penalty_runs_only():
    rl = sweep(sizes=SIZES[:2]) + [sw_run("c", 200_000, 0.1, ON_CURVE)]
    c = sweep_checks([], rl)
    assert "peak_kl_grows_with_size" in c["not_evaluated"]  # 2 proxy sizes with a no-penalty run


def _goodhart_pools(P: int, N: int, exploit: dict[str, float], seed: int) -> dict:
    """Best-of-n pools where a proxy rewards an exploit the gold penalizes: gold = q - x², proxy_k =
    q + lam_k x + noise; a smaller lam_k (a better proxy) peaks later and higher (Gao et al.'s law
    by construction)."""
    rng = np.random.default_rng(seed)
    q, x = rng.normal(size=(P, N)), np.abs(rng.normal(size=(P, N)))
    out = {"prompt_id": np.repeat(np.arange(P), N).tolist(), "sample_id": np.tile(np.arange(N), P).tolist(),
           "score.gold": (q - x**2).ravel().tolist()}
    for name, lam in exploit.items():
        out[f"score.{name}"] = (q + lam * x + 0.3 * rng.normal(size=(P, N))).ravel().tolist()
    return out


@pytest.mark.parametrize("order", ["law", "reversed"])
def test_bon_size_trend_has_the_sign_of_the_law_with_an_interval(order):
    """bon_summary's bootstrap over prompts (shared by the sizes) gives the size trend an interval:
    on pools built so the better proxies peak later and higher the slopes of ln d* and ln(peak
    gold) on ln params are positive with 90% intervals above 0; with the sizes swapped, negative."""
    from orchestrator.math.bon import bon_summary

    lams = {"p1": 2.0, "p2": 1.4, "p3": 1.0, "p4": 0.7}
    params = {"p1": 10_000, "p2": 30_000, "p3": 100_000, "p4": 300_000}
    if order == "reversed":
        params = dict(zip(params, reversed(params.values())))
    pools = _goodhart_pools(300, 64, lams, seed=1)
    s = bon_summary(pools, list(lams), 64, 64, bootstrap=100, seed=2)
    entries = [{"proxy": p, "proxy_params": params[p], **s[p]} for p in lams]
    trend = bon_checks(entries)["size_trend"]
    sign = 1 if order == "law" else -1
    for k in ("d_peak", "gold_peak"):
        t = trend[k]
        assert sign * t["slope"] > 0 and sign * t["ci90"][0 if sign > 0 else 1] > 0, (k, t)
        assert t["ci90"][0] <= t["slope"] <= t["ci90"][1] and t["se"] > 0
        assert t["p_le0"] == (0.0 if sign > 0 else 1.0)
    assert len(s["p1"]["bootstrap"]["kl_peak"]) == 100


def test_size_trend_censors_peaks_past_the_data_and_weights_by_precision():
    from orchestrator.math.scaling import size_slope, size_trend

    params = [1e4, 1e5, 1e6]
    assert size_slope(params, [1.0, 10.0, 100.0]) == pytest.approx(1.0)
    # the smallest has no fitted peak: censored at the cap (the largest KL measured), which turns the trend
    t = size_trend(params, [None, 2.0, 3.0], None, cap=4.0, sqrt=True)
    assert t["censored"] == 1 and t["peaks"][0] == pytest.approx(2.0) and t["slope"] < 0 and t["ci90"] is None
    # a noisy size counts less: the precise two set the slope
    rng = np.random.default_rng(0)
    boot = [list(1.0 * np.exp(rng.normal(0, 0.02, 200))), list(10.0 * np.exp(rng.normal(0, 0.02, 200))),
            list(10.0 * np.exp(rng.normal(0, 2.0, 200)))]
    t = size_trend(params, [1.0, 10.0, 10.0], boot, cap=1e9)
    assert t["weights"][2] < 0.01 and t["slope"] > 0.9


def test_seeds_pool_the_size_law_slopes():
    """jobs.seeds' pooled view of finding 3: each seed's slopes (best-of-n and RL) become effects
    with mean, s.e. and t over seeds; best-of-n's are also pooled by their bootstrap variance."""
    from orchestrator.report.seeds import TRENDS, aggregate

    def run(seed, b, se, r):
        trend = {"slope": b, "se": se, "ci90": [b - 2 * se, b + 2 * se]}
        return {"seed": seed, "dir": f"r{seed}", "config": {}, "frontier": {"checks": {
            "size_trend": {"d_peak": trend, "gold_peak": trend},
            "sweep": {"size_trend": {"d_peak": {"slope": r}, "gold_peak": {"slope": -r}}}}}}

    agg = aggregate([run(0, 0.1, 0.1, 0.2), run(1, 0.2, 0.05, 0.4), run(2, 0.3, 0.1, 0.6)])
    e = agg["effects"]
    labels = list(TRENDS)
    bon, rl = e[labels[0]], e[labels[2]]
    assert bon["mean"] == pytest.approx(0.2) and bon["se"] == pytest.approx(0.1 / math.sqrt(3))
    assert bon["t"] == pytest.approx(0.2 / (0.1 / math.sqrt(3))) and bon["positive_in"] == 3
    assert rl["mean"] == pytest.approx(0.4) and e[labels[3]]["positive_in"] == 0
    w = np.array([100, 400, 100])
    from orchestrator.report.seeds import _ivw

    iv = _ivw({"0": {"slope": 0.1, "se": 0.1}, "1": {"slope": 0.2, "se": 0.05}, "2": {"slope": 0.3, "se": 0.1}})
    assert iv["mean"] == pytest.approx(float(w @ [0.1, 0.2, 0.3] / w.sum())) and iv["se"] == pytest.approx(w.sum() ** -0.5)


def test_seeds_for_t2_is_the_power_of_a_pooled_mean():
    """The power statement beside every pooled finding: with the measured effect and spread over
    seeds, m seeds give an expected t of mean * sqrt(m) / sd; the number printed is the smallest m
    where that reaches 2 + z_0.8, and a simulation at that m shows t > 2 in about 80% of draws."""
    from orchestrator.report.seeds import TRENDS, aggregate, seeds_for_t

    # per-seed effects 1, 2, 3: mean 2, sd 1 -> ((2 + 0.8416) * 1 / 2)^2 = 2.02 -> 3 seeds
    assert seeds_for_t(2.0, 1 / math.sqrt(3), 3) == 3
    assert seeds_for_t(-0.1, 0.05, 3) is None and seeds_for_t(0.0, 0.05, 3) is None
    assert seeds_for_t(0.1, None, 1) is None
    m = seeds_for_t(0.02, 0.045 / math.sqrt(3), 3)
    assert 0.02 * math.sqrt(m) / 0.045 >= 2.8416 > 0.02 * math.sqrt(m - 1) / 0.045
    rng = np.random.default_rng(0)
    draws = rng.normal(0.02, 0.045, (20000, m))
    t = draws.mean(1) / (draws.std(1, ddof=1) / math.sqrt(m))
    assert 0.75 < float(np.mean(t > 2)) < 0.9  # the t distribution's tails at m ~ 40: close to normal

    def run(seed, b):
        trend = {"slope": b, "se": 0.01}
        return {"seed": seed, "dir": f"r{seed}", "config": {}, "frontier": {"checks": {
            "size_trend": {"d_peak": trend, "gold_peak": trend}}}}

    agg = aggregate([run(0, 1.0), run(1, 2.0), run(2, 3.0)])
    assert agg["effects"][list(TRENDS)[0]]["seeds_for_t2"] == 3
    from orchestrator.report.seeds import markdown

    md = markdown(agg)
    assert "seeds for t > 2 (80% power) |" in md
    assert f"| {list(TRENDS)[0]} | +1.000 | +2.000 | +3.000 | +2.000 ± 0.577 | +3.5 | 3 of 3 | 3 |" in md
    agg = aggregate([run(0, -1.0), run(1, 0.5), run(2, 0.2)])
    assert agg["effects"][list(TRENDS)[0]]["seeds_for_t2"] is None
