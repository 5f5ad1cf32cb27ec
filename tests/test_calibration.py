"""Calibration of reward models (issue 20): tau fitting, NLL, Brier, ECE, reliability bins, on
hand-computed numbers."""

import math

import numpy as np
import pytest

from orchestrator.math.calibration import (
    brier,
    calibration_summary,
    ece,
    fit_tau,
    nll,
    reliability,
)


def test_nll_and_brier_by_hand():
    d, y = np.array([0.0, 2.0]), np.array([1.0, 0.0])
    s2 = 1 / (1 + math.exp(-2.0))
    assert nll(d, y) == pytest.approx((math.log(2) - math.log(1 - s2)) / 2)
    assert brier(d, y) == pytest.approx(((0.5 - 1) ** 2 + s2 ** 2) / 2)
    assert nll(d, y, tau=2.0) == pytest.approx(nll(d / 2, y))  # tau divides delta
    assert nll(np.array([800.0]), np.array([0.0])) == pytest.approx(800.0)  # no overflow


def test_ece_of_a_planted_miscalibration():
    """Every pair predicted at 0.8 while 60% are preferred: ECE 0.2; scaled back to 0.6, 0."""
    y = np.array([1.0] * 60 + [0.0] * 40)
    d = np.full(100, math.log(0.8 / 0.2))
    assert ece(1 / (1 + np.exp(-d)), y) == pytest.approx(0.2)
    tau = fit_tau(d, y)  # sigma(d / tau) = 0.6 -> tau = log 4 / log 1.5
    assert tau == pytest.approx(math.log(4) / math.log(1.5), rel=1e-6)
    assert ece(1 / (1 + np.exp(-d / tau)), y) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("tau0", [0.5, 2.0])
def test_tau_recovered_from_pairs_drawn_at_a_known_tau(tau0):
    rng = np.random.default_rng(0)
    d = rng.normal(0, 2.0, 40000)
    y = (rng.random(len(d)) < 1 / (1 + np.exp(-d / tau0))).astype(float)
    assert fit_tau(d, y) == pytest.approx(tau0, rel=0.05)
    s = calibration_summary(d, y, seed=1)
    assert s["tau"] == pytest.approx(tau0, rel=0.07) and s["pairs"] == 40000
    assert s["nll_tau"] < s["nll"] and s["ece_tau"] < s["ece"]  # the fitted tau calibrates the other half
    assert 0.5 < s["acc"] < 1 and s["acc"] == pytest.approx(np.mean((d > 0) == (y > 0.5)))


def test_reliability_bins_and_summary_edge_cases():
    d = np.log(np.array([0.05, 0.15, 0.95]) / (1 - np.array([0.05, 0.15, 0.95])))
    bins = reliability(d, np.array([0.0, 1.0, 1.0]))
    assert [b["n"] for b in bins] == [1, 1, 0, 0, 0, 0, 0, 0, 0, 1]
    assert bins[1]["p_mean"] == pytest.approx(0.15) and bins[1]["y_mean"] == 1.0 and bins[5]["p_mean"] is None
    assert fit_tau(np.zeros(4), np.array([1.0, 0, 1, 0])) == 1.0  # undetermined: no spread
    s = calibration_summary(np.array([1.0, -1.0, 2.0, 0.5]), np.array([1.0, 0.0, 0.5, 0.0]), seed=0)
    assert s["acc"] == pytest.approx(2 / 3)  # the 0.5 label is left out of acc
    with pytest.raises(ValueError, match="at least 2"):
        calibration_summary(np.array([1.0]), np.array([1.0]), seed=0)


@pytest.mark.slow
def test_every_proxy_calibrated_on_its_held_out_pairs_and_recomputable(smoke_run):
    """frontier.json's bon[i].calibration is recomputed from calibration.parquet alone; its acc is the
    proxy's own validation accuracy (computed in the training actor: one scoring path)."""
    import pyarrow.parquet as pq

    cfg, run_dir, frontier = smoke_run
    t = pq.read_table(run_dir / "calibration.parquet").to_pydict()
    assert set(t) == {"rm", "pair_id", "delta", "label"}
    rms = np.array(t["rm"])
    kinds = {e["kind"] for e in frontier["bon"]}
    assert {"proxy", "ensemble"} <= kinds  # the size ensemble's curves are on in every profile
    from orchestrator.data.checkpoint import stream

    for e in frontier["bon"]:
        m = rms == e["proxy"]
        assert m.sum() >= 2
        d, y = np.array(t["delta"])[m], np.array(t["label"])[m]
        again = calibration_summary(d, y, stream(cfg.seed, f"calibration/{e['proxy']}"))
        assert e["calibration"] == {k: pytest.approx(again[k]) for k in e["calibration"]}
        if e["kind"] == "proxy":
            assert e["calibration"]["acc"] == pytest.approx(e["val_accuracy"])
        assert set(np.array(t["pair_id"])[m].tolist()) == set(np.array(t["pair_id"])[rms == frontier["bon"][0]["proxy"]])
    # the ensembles: the members' deltas, each in units of its std over the best-of-n pool, aggregated
    ens = {e["proxy"]: e for e in frontier["bon"] if e["kind"] == "ensemble"}
    assert set(ens) == {"ensemble-mean", "ensemble-wco", "ensemble-uwo"}
    import json

    sd = {}
    for d in (run_dir / "stages").glob("proxy-*"):
        meta = json.loads((d / "DONE.json").read_text())
        if "name" not in meta:
            sd[f"proxy-{meta['size']}"] = float(np.std(pq.read_table(d / "bon_scores.parquet")["score"].to_numpy()))
    members = [e["proxy"] for e in frontier["bon"] if e["kind"] == "proxy"]
    assert ens["ensemble-mean"]["members"] == members
    z = np.mean([np.array(t["delta"])[rms == n] / sd[n] for n in members], axis=0)
    assert np.allclose(np.array(t["delta"])[rms == "ensemble-mean"], z)


def test_seeds_pool_calibration_and_its_spearman_against_the_frontier():
    from orchestrator.report.seeds import markdown, pool_calibration

    def entry(name, params, acc, ece, kl, gold):
        return {"proxy": name, "proxy_params": params, "labels": "gold", "fit": {"kl_peak": kl, "gold_peak": gold},
                "calibration": {"acc": acc, "nll": 1 - acc, "ece": ece, "ece_tau": ece / 2, "tau": 1.0}}

    runs = [{"seed": 1, "frontier": {"bon": [entry("a", 10, 0.6, 0.10, 1.0, 0.1), entry("b", 20, 0.7, 0.05, 2.0, 0.3)]}},
            {"seed": 2, "frontier": {"bon": [entry("a", 10, 0.65, 0.08, 1.5, 0.2), entry("b", 20, 0.8, 0.02, 3.0, 0.4)]}}]
    out = pool_calibration(runs)
    assert out["n"] == 4 and list(out["sizes"]) == ["a", "b"]
    assert out["sizes"]["a"]["acc"]["mean"] == pytest.approx(0.625) and out["sizes"]["b"]["ece"]["se"] == pytest.approx(0.015)
    assert out["predicts_frontier"]["acc"]["kl_peak"] == pytest.approx(1.0)  # acc ranks exactly as peak KL here
    assert out["predicts_frontier"]["ece"]["gold_peak"] == pytest.approx(-1.0)
    assert pool_calibration([{"seed": 1, "frontier": {"bon": [{"proxy": "a", "labels": "gold"}]}}]) is None
    md = markdown({"seeds": [1, 2], "runs": [], "config_hash": "x", "checks": {}, "numbers": {}, "effects": {},
                   "pooled": {}, "monitor": {}, "active": None, "calibration": out})
    assert "| acc | +1.00 |" in md
