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

    cfg, tmp_path, fr = extended_smoke_run  # per-principle proxies; fixed, learned, per-family, constrained runs
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
    runs = [e for e in fr["rl"] if e.get("aggregation") in ("fixed", "learned")]
    learned = fr["pareto"]["learned"]
    assert learned["pairs"] == 200 and len(learned["weights"]) == 2 and len(learned["weights_ci90"]) == 2
    assert sum(abs(w) for w in learned["weights"]) == pytest.approx(1.0)
    by_trial = {e["trial"]: e for e in runs}
    assert by_trial["principles-1x8-learned-kl0"]["weights"] == pytest.approx(learned["weights"])
    assert sorted(tuple(e["weights"]) for t, e in by_trial.items() if "learned" not in t) == [
        (0.0, 1.0), (0.5, 0.5), (1.0, 0.0)]
    assert all(e["members"] == ["proxy-1x8-harmless", "proxy-1x8-format"] for e in runs)
    pa = fr["pareto"]
    assert pa["principles"] == ["harmless", "format"] and len(pa["points"]) == 7
    assert [p["aggregation"] for p in pa["points"]] == ["fixed"] * 3 + ["learned", "family", "constrained", "constrained"]
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


def test_family_and_constrained_aggregates_by_hand():
    import torch

    from orchestrator.math import rl as R

    v = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    obj = R.family_objective({"unsafe": [1, 0], "*": [0.5, 0.5]})
    assert obj == "family:*=0.5,0.5;unsafe=1,0" and R.family_weights(obj) == {"*": [0.5, 0.5], "unsafe": [1.0, 0.0]}
    assert R.aggregate(v, obj, families=["unsafe", "chat", "list"]).tolist() == [1.0, 3.5, 5.5]
    with pytest.raises(ValueError, match="family"):
        R.aggregate(v, obj)  # no families: refused, not silently averaged
    with pytest.raises(ValueError, match="no weights for families"):
        R.aggregate(v, R.family_objective({"unsafe": [1, 0]}), families=["unsafe", "chat", "list"])
    assert R.aggregate(v, R.constrained_objective(1)).tolist() == [2.0, 4.0, 6.0]
    assert R.aggregate(v, R.constrained_objective(None)).tolist() == [1.5, 3.5, 5.5]


def test_compare_at_equal_kl_by_hand():
    # two aggregation runs and one constrained run over principles (x, y); KL per evaluation
    run = lambda a, kl, G: (a, np.array(kl, float), np.array(G, float), np.array(G, float).sum(1))  # noqa: E731
    agg = [run("fixed", [0.0, 1.0, 2.0], [[0, 0], [0.4, 0.2], [0.2, 0.1]]),  # overall gold peaks at KL 1
           run("family", [0.0, 2.0], [[0, 0], [0.2, 0.6]])]  # at KL 2
    con = [run("constrained", [0.0, 0.5, 1.0], [[0, 0], [0.1, 0.1], [0.3, 0.3]])]  # at KL 1
    out = PA.compare_at_kl(agg + con, ["x", "y"], levels=2)
    # levels: from half the median peak KL (1) to the common reach (1), log-spaced
    assert out["reach"] == {"aggregation": 2.0, "constrained": 1.0} and out["kl"] == [0.5, 1.0]
    assert out["median_peak_kl"] == 1.0
    # above the nadir of all three points at KL 1 -- (0.4, 0.2), (0.1, 0.3), (0.3, 0.3): (0.1, 0.2) --
    # each aggregation point is on the nadir in one principle (no area); the constrained one 0.2 x 0.1
    assert out["nadir"][1] == pytest.approx({"x": 0.1, "y": 0.2})
    assert out["hypervolume_nadir"]["aggregation"][1] == pytest.approx(0.0)
    assert out["hypervolume_nadir"]["constrained"][1] == pytest.approx(0.02)
    assert PA.kl_levels([0.1, 0.2, 0.3], 10.0, 3) == pytest.approx([0.1, 1.0, 10.0])
    assert PA.kl_levels([4.0, 4.0], 1.0, 4) == pytest.approx([0.25, 0.5, 0.75, 1.0])  # peaks past the reach: even
    # at KL 0.5: fixed (0.2, 0.1), family halfway (0.05, 0.15): front area 0.2*0.1 + 0.05*0.05;
    # constrained (0.1, 0.1) -> 0.01. At KL 1: fixed (0.4, 0.2), family (0.1, 0.3): 0.4*0.2 + 0.1*0.1
    assert out["hypervolume"]["aggregation"] == pytest.approx([0.02 + 0.0025, 0.08 + 0.01])
    assert out["hypervolume"]["constrained"] == pytest.approx([0.01, 0.09])
    assert out["runs"] == {"aggregation": [2, 2], "constrained": [1, 1]}
    assert out["gold_mean"]["aggregation"][0] == pytest.approx({"x": 0.125, "y": 0.125})
    assert out["gold_sum"]["aggregation"] == pytest.approx([0.25, 0.5]) and out["gold_sum"]["constrained"] == [0.2, 0.6]
    assert out["below_reference"]["constrained"] == [0.0, 0.0]
    # fixed: x and y both peak at KL 1 and fall -> x first (ties by name); family and constrained never fall
    assert out["first_overoptimized"]["aggregation"] == {"x": 1, "y": 0, "none": 1}
    assert out["first_overoptimized"]["constrained"] == {"x": 0, "y": 0, "none": 1}
    first, peaks = PA.first_overoptimized(np.array([0.0, 1, 2, 3]), np.array([[0, 0], [1, 0], [0.5, 2], [0.4, 1]]),
                                          ["x", "y"])
    assert first == "x" and peaks == {"x": 1.0, "y": 2.0}


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


@pytest.mark.slow
def test_family_and_constrained_runs_on_the_pareto_smoke_sweep(extended_smoke_run):
    """``pareto.family_weights`` and ``pareto.constraint_levels`` on jobs/configs/pareto-smoke.yaml: the
    per-family trial names its weights in its objective; each constrained trial sets its thresholds from the
    SFT policy's samples (level 0: the reference level itself), moves its multipliers by the
    projected step on every step's slack, and logs the Lagrangian it optimized; the front compares
    the two kinds of aggregation at equal KL."""
    cfg, run_dir, fr = extended_smoke_run
    by = {e["trial"]: e for e in fr["rl"]}
    fam = by["principles-1x8-family-kl0"]
    assert fam["objective"] == "family:*=0.5,0.5;list=0,1;unsafe=1,0" and fam["aggregation"] == "family"
    pt = next(p for p in fr["pareto"]["points"] if p["trial"] == "principles-1x8-family-kl0")
    q = next(x for x in fam["points"] if x["step"] == pt["peak"]["step"])  # each principle's proxy, by principle
    assert pt["peak"]["proxy"] == {pr: q["proxy_members"][f"proxy-1x8-{pr}"] for pr in ("harmless", "format")}
    for level in (0.0, 0.5):
        e = by[f"principles-1x8-max-mean-c{level:g}-kl0"]
        lg = e["lagrange"]
        assert e["constraints"] == {"maximize": "mean", "level": level, "base": "reference"}
        assert lg["names"] == ["harmless", "format"] and lg["unit"] == "sd"
        assert lg["threshold"] == pytest.approx([r + level * s for r, s in zip(lg["reference"], lg["sd"])])
        hist = _history(run_dir, e["trial"])
        assert len(hist) == cfg.rl.steps
        lam = np.zeros(2)
        for m in hist:  # the logged multipliers follow the projected step on the logged slack
            assert [m["lagrange/harmless"], m["lagrange/format"]] == pytest.approx(lam.tolist())
            slack = np.array([m["constraint/harmless"], m["constraint/format"]])
            v = slack + np.array(lg["threshold"])
            lam = PA.multiplier_step(lam, v / np.array(lg["sd"]), np.array(lg["threshold"]) / np.array(lg["sd"]),
                                     cfg.pareto.multiplier_lr)
            # the objective the optimizer saw: the normalized Lagrangian (linear, so its batch mean is
            # that of the target and the constrained members' means)
            want = (m["proxy/target"] + v @ np.array([m["lagrange/harmless"], m["lagrange/format"]])) / (
                1 + m["lagrange/harmless"] + m["lagrange/format"])
            assert m["proxy/objective"] == pytest.approx(want, rel=1e-4, abs=1e-6)
        assert lg["final"] == pytest.approx(lam.tolist())
        if level > 0:  # above the reference, the constraints bind from the first step
            assert all(x > 0 for x in lg["final"]) and lg["violated_fraction"][0] > 0
    comp = fr["pareto"]["compare"]
    assert set(comp["hypervolume"]) == {"aggregation", "constrained"} and 2 <= len(comp["kl"]) <= 4
    runs = [e for e in fr["rl"] if e.get("size") == "principles"]
    peaks = [e["points"][int(np.argmax([q["gold"] for q in e["points"]]))]["kl"] for e in runs]
    assert comp["kl"] == pytest.approx(PA.kl_levels(peaks, min(comp["reach"].values()), 4))
    for g, kinds in (("aggregation", ("fixed", "learned", "family")), ("constrained", ("constrained",))):
        reach = [max(p["kl"] for p in e["points"]) for e in fr["rl"] if e.get("aggregation") in kinds]
        assert len(reach) == (5 if g == "aggregation" else 2)
        assert comp["runs"][g] == [sum(r >= k for r in reach) for k in comp["kl"]]  # a run counts where it reaches
    report = (run_dir / "report.md").read_text()
    assert "Aggregation vs constrained runs at equal KL" in report and "max mean s.t. c=0.5" in report
    from orchestrator.report.pooled import pareto_effects  # jobs.seeds' numbers

    eff = pareto_effects(fr)
    assert eff["Pareto: hypervolume at the runs' gold peaks"] == fr["pareto"]["hypervolume"]
    assert eff["RL principles-1x8-max-mean-c0.5-kl0: share of steps violating a constraint (mean)"] == pytest.approx(
        np.mean(by["principles-1x8-max-mean-c0.5-kl0"]["lagrange"]["violated_fraction"]))
    at = [k for k in eff if k.startswith("Pareto at equal KL") and k.endswith("hypervolume, constrained - aggregation")]
    assert eff[at[-1]] == pytest.approx(comp["hypervolume"]["constrained"][-1] - comp["hypervolume"]["aggregation"][-1])
    assert len(at) == len(comp["kl"])


def _history(run_dir, trial: str) -> list[dict]:
    """A trial's per-step metrics (``rl/<trial>-<key>/metrics.jsonl``)."""
    import json

    (path,) = run_dir.glob(f"rl/{trial}-*/metrics.jsonl")
    return [json.loads(x) for x in path.read_text().splitlines()]


@pytest.mark.slow
def test_constrained_run_checkpoints_its_multipliers_and_resumes_exactly(extended_smoke_run, tmp_path):
    """A constrained run cut after its step-2 checkpoint and resumed restores its thresholds and
    multipliers from the checkpoint (not from a new step-0 evaluation, not from zero) and continues
    exactly as the uninterrupted run: the same multipliers, slacks and metrics, step by step."""
    import dataclasses
    import json

    from orchestrator.run import rl_stage as P
    from orchestrator.run.rl_loop import RLRun, run_rl
    from orchestrator.run.slots import Slot
    from orchestrator.run.stages import StageResult
    from orchestrator.run.sweep import trial_specs

    cfg, run_dir, _ = extended_smoke_run
    done = [(d, json.loads((d / "DONE.json").read_text())) for d in sorted(run_dir.glob("stages/*-*"))
            if (d / "DONE.json").is_file()]
    res = lambda kind, d, m: StageResult(kind, d.name.rsplit("-", 1)[1], d, m, True)  # noqa: E731
    task = next(res("task", d, m) for d, m in done if d.name.startswith("task-"))
    sft = next(res("sft", d, m) for d, m in done if d.name.startswith("sft-") and m.get("size") == cfg.sft.policy.size
               and "name" not in m and "member" not in m)
    proxies = [res("proxy", d, m) for d, m in done if d.name.startswith("proxy-")]
    spec = {s.name: s for s in trial_specs(cfg, proxies, learned=[0.5, 0.5])}["principles-1x8-max-mean-c0.5-kl0"]
    assert spec.constraints["constrained"] == [0, 1] and spec.constraints["maximize"] is None
    # constraint_base frontier, read from this very run: each unit is the proxy's best-of-n gain at its
    # principle's gold peak, in the RL run's units (divided by the member's s.d. on the SFT pool)
    from orchestrator.config.schema import FrontierConfig, load
    from tests.conftest import EXTENDED

    cfg_f = load(FrontierConfig, "jobs/configs/pareto-smoke.yaml",
                 [*EXTENDED, "pareto.constraint_base=frontier", f"pareto.constraint_frontier={run_dir}"])
    spec_f = {s.name: s for s in trial_specs(cfg_f, proxies, learned=[0.5, 0.5])}["principles-1x8-max-mean-c0.5-kl0"]
    bon = {e["proxy"]: e for e in json.loads((run_dir / "frontier.json").read_text())["bon"]}
    want = []
    for pr, m in zip(("harmless", "format"), spec_f.members):
        c = bon[f"proxy-1x8-{pr}"]
        k = (c.get("fit") or {}).get("kl_peak")
        pts = c["points"]
        raw = (np.interp(k, [q["kl"] for q in pts], [q["proxy"] for q in pts]) if k and np.isfinite(k) and k > 0
               else pts[int(np.argmax([q["gold"] for q in pts]))]["proxy"])
        want.append(raw / m["norm"][1])
    assert spec_f.constraints["unit"] == pytest.approx(want) and spec_f.members == spec.members
    rl = dataclasses.replace(cfg.rl, steps=4, checkpoint_every=2)
    train_rows, eval_rows = P.rl_rows(cfg, task)
    slot = Slot(cfg.cluster.rl, str(sft.dir / "policy"), str(task.dir / "tokenizer"), list(spec.members), cfg.seed,
                True, name="pareto-resume")
    make = lambda out: RLRun(rl, spec, cfg.cluster.rl, str(sft.dir / "policy"), str(task.dir / "tokenizer"),  # noqa: E731
                             train_rows, eval_rows, out, cfg.seed, slot=slot)
    stable = lambda h: [{k: v for k, v in m.items() if not k.startswith(("timing/", "throughput/"))} for m in h]  # noqa: E731
    try:
        full = make(tmp_path / "full")
        run_rl(full, tensorboard=False)
        lam = [[m["lagrange/harmless"], m["lagrange/format"]] for m in full.history]
        assert lam[0] == [0.0, 0.0] and lam[2] != lam[1] != lam[0]  # moving from zero
        cut = make(tmp_path / "cut")
        run_rl(cut, tensorboard=False, stop_after=2)
        state = json.loads((tmp_path / "cut" / "checkpoints" / "step_000002" / "state.json").read_text())
        assert state["constraint"]["lam"] == pytest.approx(lam[2])  # what step 2 will use
        again = make(tmp_path / "cut")
        assert again.restore() == 2 and again.constraint["lam"] == pytest.approx(lam[2])
        run_rl(again, tensorboard=False)
        assert stable(again.history) == stable(full.history)
        assert again.constraint == full.constraint
    finally:
        slot.shutdown()


def test_constraint_thresholds_from_a_finished_frontier(tmp_path):
    """``pareto.constraint_base: frontier``: each constrained principle's unit is its proxy's best-of-n
    gain where that principle's gold peaks, read from the finished run's frontier.json; a file
    without those curves, or none at all, is a user error naming the key."""
    import json

    from orchestrator.config.schema import ConfigError, FrontierConfig, load
    from orchestrator.run.pareto import constraint_spec, proxy_points

    def curve(pr, gold, proxy):
        return {"proxy": f"proxy-1x8-{pr}", "kind": "principle", "principle": pr,
                "points": [{"n": 2 ** i, "kl": float(i), "gold": g, "proxy": p} for i, (g, p) in enumerate(zip(gold, proxy))]}

    fr = tmp_path / "done"
    fr.mkdir()
    (fr / "frontier.json").write_text(json.dumps({"bon": [
        {"proxy": "proxy-1x8", "kind": "proxy", "points": []},
        curve("harmless", [0, 0.3, 0.2], [0, 0.5, 0.9]), curve("format", [0, 0.1, 0.4], [0, 0.2, 0.7])]}))
    over = ["proxy.principles=[harmless,format]", "pareto.constraint_levels=[1]", "pareto.constraint_maximize=harmless",
            "pareto.constraint_base=frontier", f"pareto.constraint_frontier={fr}"]
    cfg = load(FrontierConfig, "jobs/configs/smoke.yaml", over)
    pts = proxy_points(cfg)  # no fits: the n of the highest measured gold
    assert pts == {"harmless": {"proxy_point": 0.5, "kl": 1.0, "source": "empirical", "peaked": True},
                   "format": {"proxy_point": 0.7, "kl": 2.0, "source": "empirical", "peaked": False}}  # a bound
    fitted = [{**curve("harmless", [0, 0.3, 0.2], [0, 0.5, 0.9]), "fit": {"kl_peak": 1.5}},
              {**curve("format", [0, 0.1, 0.4], [0, 0.2, 0.7]), "fit": {"kl_peak": 3.0}}]
    (fr / "frontier.json").write_text(json.dumps({"bon": fitted}))
    # the Gao fit's peak: the proxy interpolated there (harmless: halfway from 0.5 to 0.9); past the
    # largest n (format): the last measured point, a bound
    assert proxy_points(cfg) == {"harmless": {"proxy_point": pytest.approx(0.7), "kl": 1.5, "source": "fit", "peaked": True},
                                 "format": {"proxy_point": 0.7, "kl": 2.0, "source": "fit", "peaked": False}}
    (fr / "frontier.json").write_text(json.dumps({"bon": [
        curve("harmless", [0, 0.3, 0.2], [0, 0.5, 0.9]), curve("format", [0, 0.1, 0.4], [0, 0.2, 0.7])]}))
    pts = proxy_points(cfg)
    spec = constraint_spec(cfg, {"maximize": "harmless", "level": 1.0}, pts)
    assert spec["maximize"] == 0 and spec["constrained"] == [1] and spec["unit"] == [0.7] and spec["names"] == ["format"]
    # in an RL run's units: members are scored divided by their s.d. on the SFT pool (rl.normalize_proxies)
    assert constraint_spec(cfg, {"maximize": "harmless", "level": 1.0}, pts, [5.0, 2.0])["unit"] == [0.35]
    (fr / "frontier.json").write_text(json.dumps({"bon": [curve("harmless", [0, 1], [0, 1])]}))
    with pytest.raises(ConfigError, match="pareto.constraint_frontier: .* no best-of-n curve of proxy-1x8-format"):
        proxy_points(cfg)
    (fr / "frontier.json").write_text("{not json")
    with pytest.raises(ConfigError, match="pareto.constraint_frontier: .* is not a finished run"):
        proxy_points(cfg)
    with pytest.raises(ConfigError, match="pareto.constraint_frontier: .* is not a file"):
        load(FrontierConfig, "jobs/configs/smoke.yaml", over[:-1] + [f"pareto.constraint_frontier={tmp_path}/none.json"])


@pytest.mark.parametrize("over, key", [
    (["pareto.constraint_levels=[0]"], "pareto.constraint_levels"),  # no principles
    (["proxy.principles=[harmless,format]", "pareto.constraint_levels=[0]", "pareto.constraint_maximize=helpful"],
     "pareto.constraint_maximize"),
    (["proxy.principles=[harmless,format]", "pareto.family_weights={unsafe: [1, 0]}"], "pareto.family_weights"),
    (["proxy.principles=[harmless,format]", "pareto.family_weights={'*': [1, 0], nosuch: [0, 1]}"],
     "pareto.family_weights.nosuch"),
    (["proxy.principles=[harmless,format]", "pareto.family_weights={'*': [1, 0, 0]}"], "pareto.family_weights.*"),
    (["pareto.family_weights={'*': [0.7, 0.7]}"], "pareto.family_weights.*"),
    (["pareto.multiplier_lr=0"], "pareto.multiplier_lr"),
    (["pareto.constraint_base=frontier"], "pareto.constraint_frontier"),
])
def test_pareto_config_errors_name_the_key(over, key, tmp_path):
    import subprocess
    import sys

    from orchestrator.config.schema import ConfigError, FrontierConfig, load

    with pytest.raises(ConfigError, match=f"^{key.replace('*', '[*]')}"):
        load(FrontierConfig, "jobs/configs/smoke.yaml", over)
    if over == ["pareto.multiplier_lr=0"]:  # the CLI: exit 2, the key named, nothing run
        r = subprocess.run([sys.executable, "-m", "jobs.frontier", "--config", "jobs/configs/smoke.yaml",
                            "--run-dir", str(tmp_path / "r"), *over], capture_output=True, text=True)
        assert r.returncode == 2 and key in r.stderr and not (tmp_path / "r" / "stages").exists()
