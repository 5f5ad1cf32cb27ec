"""Issue 22's pure parts: the non-dominated set and the hypervolume against brute force (2-D and
4-D), the simplex grid, and the Lagrange multiplier update on a hand-computed sequence."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from orchestrator.math import pareto as PA


def test_front_and_hypervolume_by_hand_2d():
    pts = np.array([[1, 3], [2, 2], [3, 1], [1, 1], [2, 2]], float)
    assert PA.non_dominated(pts) == [0, 1, 2, 4]  # (1, 1) is dominated; the duplicate (2, 2) stays
    # the staircase above (0, 0): 1 x 3 + 1 x 2 + 1 x 1
    assert PA.hypervolume(pts, [0, 0]) == pytest.approx(6.0)
    # a reference above some coordinates clips them: above (1.5, 0.5) only 0.5 x 2.5 + 1 x 0.5 ... by hand:
    # x in [1.5, 2]: height 2 - 0.5 = 1.5; x in [2, 3]: height 1 - 0.5 = 0.5 -> 0.75 + 0.5
    assert PA.hypervolume(pts, [1.5, 0.5]) == pytest.approx(1.25)
    assert PA.hypervolume(np.zeros((0, 2)), [0, 0]) == 0.0
    assert PA.hypervolume([[-1, 5]], [0, 0]) == 0.0  # not above the reference in every principle


@pytest.mark.parametrize("d,n", [(2, 7), (3, 6), (4, 6), (4, 9)])
def test_hypervolume_equals_brute_force(d, n):
    rng = np.random.default_rng(100 * d + n)
    for _ in range(5):
        pts = rng.normal(size=(n, d))
        pts[rng.integers(0, n)] = pts[rng.integers(0, n)]  # a duplicate now and then
        ref = rng.normal(size=d) - 1.0
        assert PA.hypervolume(pts, ref) == pytest.approx(PA.hypervolume_brute_force(pts, ref), rel=1e-9, abs=1e-12)
        front = PA.non_dominated(pts)
        # the front holds exactly the points nothing dominates, and they carry all the volume
        for i in range(n):
            dominated = any(np.all(pts[j] >= pts[i]) and np.any(pts[j] > pts[i]) for j in range(n))
            assert (i in front) == (not dominated)
        assert PA.hypervolume(pts[front], ref) == pytest.approx(PA.hypervolume(pts, ref))


def test_simplex_grid():
    g = PA.simplex_grid(3, 2)
    assert g == [(1.0, 0.0, 0.0), (0.5, 0.5, 0.0), (0.5, 0.0, 0.5), (0.0, 1.0, 0.0), (0.0, 0.5, 0.5), (0.0, 0.0, 1.0)]
    g4 = PA.simplex_grid(4, 4)
    assert len(g4) == math.comb(4 + 3, 3) == len(set(g4))
    assert all(sum(w) == pytest.approx(1.0) for w in g4)
    want = {w for w in itertools.product([i / 4 for i in range(5)], repeat=4) if abs(sum(w) - 1) < 1e-9}
    assert set(g4) == want
    with pytest.raises(ValueError):
        PA.simplex_grid(0, 2)


def test_multiplier_steps_by_hand():
    lam = np.zeros(1)
    seq = []
    for v in (0.2, 0.6, 1.5, 1.5, 1.5):  # threshold 1, lr 0.5: violated, violated, then slack
        lam = PA.multiplier_step(lam, [v], [1.0], 0.5)
        seq.append(float(lam[0]))
    # 0 + 0.5 * 0.8 = 0.4; + 0.5 * 0.4 = 0.6; + 0.5 * -0.5 = 0.35; 0.1; max(0, -0.15) = 0
    assert seq == pytest.approx([0.4, 0.6, 0.35, 0.1, 0.0])
    two = PA.multiplier_step([0.2, 1.0], [0.0, 3.0], [1.0, 1.0], 0.1)
    assert two.tolist() == pytest.approx([0.3, 0.8])


def test_lagrangian_reward_by_hand():
    o = np.array([1.0, 0.0])
    R = np.array([[0.5, -1.0], [2.0, 0.0]])
    lam = np.array([1.0, 2.0])
    # (o + R @ lam) / (1 + 3): (1 + 0.5 - 2) / 4, (0 + 2 + 0) / 4
    assert PA.lagrangian_reward(o, R, lam).tolist() == pytest.approx([-0.125, 0.5])


@pytest.mark.slow
def test_per_principle_labels_proxies_and_frontiers_on_the_smoke_run(extended_smoke_run):
    """``proxy.principles``: the same pairs labelled by each principle's gold alone (ties dropped), a
    proxy per principle trained on them, and its best-of-n curve measured against that principle's
    gold (recomputed here from the pool)."""
    import json

    import pyarrow.parquet as pq

    from orchestrator.data.tasks.synthetic import oracle
    from orchestrator.math.bon import bon_curves, pool_matrix

    cfg, tmp_path, fr = extended_smoke_run  # per-principle proxies and three fixed-weight runs (and issue 21's options)
    label_dir = next(d for d in (tmp_path / "stages").glob("label-*")
                     if "principles" in json.loads((d / "DONE.json").read_text())["inputs"])
    prompts = pq.read_table(next((tmp_path / "stages").glob("task-*")) / "prompts.parquet").to_pydict()
    meta = {p: (f, m) for p, f, m in zip(prompts["prompt_id"], prompts["family"], prompts["meta"])}
    for pr in ("harmless", "format"):
        t = pq.read_table(label_dir / f"preferences_{pr}.parquet").to_pydict()
        assert set(t["principle"]) == {pr} and len(t["pair_id"]) == fr["label"]["principles"][pr]["pairs"] > 0
        for p, a, b, y in zip(t["prompt_id"], t["response_a"], t["response_b"], t["p_a"]):
            sa, sb = (oracle(*meta[p], r)[pr] for r in (a, b))
            assert sa != sb and y == (1.0 if sa > sb else 0.0)  # noise 0: the principle's own order
    by = {e["proxy"]: e for e in fr["bon"]}
    e = by["proxy-1x8-format"]
    assert e["kind"] == "principle" and e["principle"] == "format"
    s = pq.read_table(next(d for d in (tmp_path / "stages").glob("bon-*")
                           if "principled" in json.loads((d / "DONE.json").read_text())["inputs"])
                      / "bon_scores.parquet").to_pydict()
    N = cfg.sample.bon_responses_per_prompt
    _, gb = bon_curves(pool_matrix(s, "score.proxy-1x8-format", N), pool_matrix(s, "score.gold.format", N))
    assert [p["gold"] for p in e["points"]] == pytest.approx((gb.mean(0) - gb[:, 0].mean()).tolist())
    report = (tmp_path / "report.md").read_text()
    assert "## Per-principle proxies" in report and "## The Pareto front of the principles" in report
    assert all(x["kind"] != "principle" for x in fr["bon"] if x["proxy"] in fr["generalization"]["length"]["bon_lc"])
    # the weighted runs: each optimized sum_i w_i r_i of the two proxies; the front is their non-dominated set
    runs = [e for e in fr["rl"] if e.get("weights")]
    learned = fr["pareto"]["learned"]
    assert learned["pairs"] == 200 and len(learned["weights"]) == 2 and len(learned["weights_ci90"]) == 2
    assert sum(abs(w) for w in learned["weights"]) == pytest.approx(1.0)
    by_trial = {e["trial"]: e for e in runs}
    assert by_trial["principles-1x8-learned-kl0"]["weights"] == pytest.approx(learned["weights"])
    assert sorted(tuple(e["weights"]) for t, e in by_trial.items() if "learned" not in t) == [
        (0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    assert all(e["members"] == ["proxy-1x8-harmless", "proxy-1x8-format"] for e in runs)
    pa = fr["pareto"]
    assert pa["principles"] == ["harmless", "format"] and len(pa["points"]) == 4
    G = np.array([[q["peak"]["gold"][p] for p in pa["principles"]] for q in pa["points"]])
    assert pa["front"] == PA.non_dominated(G)
    assert pa["hypervolume"] == pytest.approx(PA.hypervolume_brute_force(G[pa["front"]], [0, 0]) if pa["front"] else 0.0)


def test_pareto_section_by_hand():
    def run(trial, w, golds):  # golds: per evaluation (overall, {principle: gain})
        return {"trial": trial, "weights": w,
                "points": [{"step": i, "kl": float(i), "gold": g, "gold_principles": gp, "proxy_members": {}}
                           for i, (g, gp) in enumerate(golds)]}

    runs = [run("a", [1, 0], [(0, {"x": 0, "y": 0}), (0.5, {"x": 0.6, "y": -0.1}), (0.2, {"x": 0.5, "y": -0.3})]),
            run("b", [0, 1], [(0, {"x": 0, "y": 0}), (0.4, {"x": 0.1, "y": 0.3}), (0.45, {"x": 0.2, "y": 0.25})]),
            run("c", [.5, .5], [(0, {"x": 0, "y": 0}), (0.3, {"x": 0.05, "y": 0.2})])]
    out = PA.pareto_section(runs, ["x", "y"])
    # peaks: a at step 1 (0.6, -0.1), b at step 2 (0.2, 0.25), c at step 1 (0.05, 0.2) -- dominated by b
    assert [p["peak"]["step"] for p in out["points"]] == [1, 2, 1]
    assert out["front"] == [0, 1]
    # only b is above the reference (0, 0) in both: 0.2 x 0.25
    assert out["hypervolume"] == pytest.approx(0.05)
    assert out["front_end"] == [0, 1] and out["hypervolume_end"] == pytest.approx(0.2 * 0.25)


def test_logistic_weights_by_hand_and_recovered():
    # one feature, two pairs: sigma(w) = 0.75 and sigma(-w) = 0.25 -> w = ln 3
    assert PA.fit_logistic(np.array([[1.0], [-1.0]]), np.array([0.75, 0.25]), ridge=0.0)[0] == pytest.approx(math.log(3))
    rng = np.random.default_rng(0)
    D = rng.normal(size=(4000, 3))
    true = np.array([2.0, 1.0, 0.0])
    y = (rng.random(4000) < 1 / (1 + np.exp(-(D @ true)))).astype(float)
    out = PA.learn_principle_weights(D, y, np.arange(4000) // 4, bootstrap=30, seed=1)
    assert out["weights"] == pytest.approx([2 / 3, 1 / 3, 0.0], abs=0.03)
    for (lo, hi), w in zip(out["weights_ci90"], out["weights"]):
        assert lo <= w <= hi and hi - lo < 0.1
