"""The checks and the report on hand-made curves (no Ray)."""
import json

import numpy as np
import pytest

from orchestrator.math.bon import bon_summary, kl_bon
from orchestrator.math.checks import bon_checks as checks
from orchestrator.math.scaling import d_spacing_weights, fit_bon
from orchestrator.report.render import write_report


def entry(name, params, alpha, beta, N=64, proxy_slope=1.0):
    n = np.arange(1, N + 1)
    kl = kl_bon(n)
    d = np.sqrt(kl)
    gold = d * (alpha - beta * d)
    f = fit_bon(kl, gold, d_spacing_weights(kl))
    return {"proxy": name, "proxy_params": params, "seed": 0, "fit": f.to_dict(),
            "points": [{"n": int(a), "kl": float(k), "gold": float(g), "proxy": float(proxy_slope * x)}
                       for a, k, g, x in zip(n, kl, gold, d)]}


def test_checks_pass_on_gao_like_curves_and_record_a_reversed_trend(tmp_path):
    good = [entry("a", 10_000, 0.3, 0.20), entry("b", 50_000, 0.4, 0.18), entry("c", 200_000, 0.5, 0.16)]
    c = checks(good)
    assert c["all_pass"] and c["smallest_rises_then_falls"] and c["spearman_size_kl_peak"] == 1.0
    assert c["size_trend"]["d_peak"]["slope"] > 0
    bad = [entry("a", 10_000, 0.5, 0.16), entry("b", 50_000, 0.4, 0.18), entry("c", 200_000, 0.3, 0.20)]
    c = checks(bad)
    # one run's size trend is recorded and printed, judged over seeds (jobs.seeds), not failed here
    assert c["all_pass"] and c["spearman_size_kl_peak"] == -1.0 and c["size_trend"]["d_peak"]["slope"] < 0
    frontier = {"config_hash": "x" * 64, "versions": {}, "seed": 0, "bon": bad, "rl": [], "checks": c}
    md = write_report(tmp_path, frontier, {"timings": {}})["md"].read_text()
    slope = c["size_trend"]["d_peak"]["slope"]
    assert f"slope of ln d* (d* = sqrt of the fitted peak KL) on ln(proxy params) = {slope:+.3f}" in md
    assert "jobs.seeds" in md


def test_monotone_check_catches_a_falling_proxy():
    e = entry("a", 10_000, 0.3, 0.2)
    e["points"][10]["proxy"] = -5.0
    assert not checks([e])["proxy_monotone"]["a"]


def test_report_is_self_contained(tmp_path):
    bon = [entry("a", 10_000, 0.3, 0.2), entry("b", 50_000, 0.4, 0.18)]
    frontier = {"config_hash": "x" * 64, "versions": {}, "seed": 0, "bon": bon, "rl": [], "checks": checks(bon)}
    paths = write_report(tmp_path, frontier, {"timings": {"sft": {"seconds": 1.0, "cached": False}}})
    html = paths["html"].read_text()
    assert "data:image/png;base64," in html and "<table" in html and "src=\"bon.png\"" not in html
    assert json.loads(paths["json"].read_text())["bon"][0]["proxy"] == "a"
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bon_summary_on_a_planted_pool():
    rng = np.random.default_rng(0)
    P, N = 30, 32
    gold = rng.normal(size=(P, N))
    samples = {"prompt_id": np.repeat(np.arange(P), N).tolist(), "sample_id": np.tile(np.arange(N), P).tolist(),
               "score.gold": gold.ravel().tolist(), "score.perfect": gold.ravel().tolist(),
               "score.noise": rng.normal(size=P * N).tolist()}
    out = bon_summary(samples, ["perfect", "noise"], N, N, 20, 0)
    perfect = [p["gold"] for p in out["perfect"]["points"]]
    noise = [p["gold"] for p in out["noise"]["points"]]
    assert perfect[0] == 0.0 and all(b > a for a, b in zip(perfect, perfect[1:]))  # gold = proxy: rises
    assert abs(noise[-1]) < 0.5 < perfect[-1]  # an uninformative proxy gains nothing


def test_rl_curve_helpers_interpolate_in_sqrt_kl():
    from orchestrator.math.checks import drop_by_kl, gold_at_kl, kl_to_reach

    pts = [{"kl": 0.0, "gold": 0.0}, {"kl": 1.0, "gold": 0.2}, {"kl": 4.0, "gold": -0.1}, {"kl": 9.0, "gold": -0.3}]
    assert kl_to_reach(pts, 0.1) == pytest.approx(0.25)  # halfway in d = sqrt(KL): d = 0.5
    assert kl_to_reach(pts, 0.5) is None
    assert gold_at_kl(pts, 2.25) == pytest.approx(0.05)  # d = 1.5, halfway from 0.2 to -0.1
    assert drop_by_kl(pts, 4.0) == pytest.approx(0.3) and drop_by_kl(pts, 16.0) is None
