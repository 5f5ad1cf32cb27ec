"""Active learning (issue 19): the acquisition functions on hand-computed ensembles, the job's
bookkeeping, and the smoke-size job end to end."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from orchestrator.math.active import (
    acquire,
    bootstrap_by_prompt,
    choose,
    disagreement,
    margin,
    versus_random,
)

ROOT = Path(__file__).resolve().parents[1]


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_disagreement_is_the_members_variance_of_the_bt_probability():
    # pair 0: members agree exactly (variance 0); pair 1: deltas +2, 0, -2; pair 2: deltas 1, 1, 3
    ra = np.array([[1.0, 2.0, 3.0], [2.0, 0.0, -1.0], [1.0, 1.0, 3.0]])
    rb = np.array([[0.0, 1.0, 2.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]])
    got = disagreement(ra, rb)
    for i, deltas in enumerate([(1, 1, 1), (2, 0, -2), (1, 1, 3)]):
        p = [_sig(d) for d in deltas]
        m = sum(p) / 3
        assert got[i] == pytest.approx(sum((x - m) ** 2 for x in p) / 3, abs=1e-12)
    assert got[0] == 0.0 and got[1] > got[2] > 0
    # a shift of every member's scores of one response by one constant changes the deltas: not invariant,
    # but a shift of both responses by one constant per member is (BT depends on differences only)
    shift = np.array([[5.0, -3.0, 0.5]])
    assert np.allclose(disagreement(ra + shift, rb + shift), got)


def test_margin_prefers_the_pairs_the_ensemble_is_least_sure_of():
    ra = np.array([[0.1, -0.1], [3.0, 2.0], [-1.0, -1.2]])
    rb = np.zeros((3, 2))
    m = margin(ra, rb)
    assert m.tolist() == pytest.approx([-0.0, -2.5, -1.1])
    assert acquire(m, 2, np.random.default_rng(0)).tolist() == [0, 2]


def test_acquire_takes_the_top_k_and_breaks_ties_at_random_reproducibly():
    s = np.array([0.1, 0.5, 0.5, 0.5, 0.9, 0.0])
    picks = [tuple(acquire(s, 3, np.random.default_rng(seed)).tolist()) for seed in range(30)]
    assert all(p[0] == 4 and set(p[1:]) <= {1, 2, 3} for p in picks)  # the largest first, then two of the tie
    assert len({p[1:] for p in picks}) > 1  # the tie is not broken by position
    assert picks[0] == tuple(acquire(s, 3, np.random.default_rng(0)).tolist())
    assert acquire(s, 10, np.random.default_rng(0)).tolist()[:1] == [4] and len(acquire(s, 10, np.random.default_rng(0))) == 6
    with pytest.raises(ValueError, match="NaN at 1"):
        acquire(np.array([0.0, np.nan]), 1, np.random.default_rng(0))


def test_choose_dispatches_and_random_ignores_the_scores():
    rng = np.random.default_rng
    ra = np.array([[0.0, 4.0], [0.0, 0.0], [1.0, -1.0]])
    rb = np.zeros((3, 2))
    assert choose("disagreement", ra, rb, 1, rng(0)).tolist() == [0]  # deltas 0 vs 4: the widest spread
    assert choose("margin", ra, rb, 1, rng(0)).tolist() in ([1], [2])  # mean delta 0 for both
    r = choose("random", ra, rb, 3, rng(1))
    assert sorted(r.tolist()) == [0, 1, 2]
    with pytest.raises(ValueError, match="unknown acquisition"):
        choose("entropy", ra, rb, 1, rng(0))
    with pytest.raises(ValueError, match="members >= 2"):
        disagreement(ra[:, :1], rb[:, :1])


def test_bootstrap_by_prompt_draws_whole_prompts_with_replacement():
    pairs = np.array([10, 11, 12, 20, 30, 31])
    group = np.zeros(40, dtype=int)
    group[[10, 11, 12]], group[20], group[[30, 31]] = 1, 2, 3
    seen = set()
    for seed in range(20):
        got = bootstrap_by_prompt(pairs, group, np.random.default_rng(seed))
        prompts = [group[i] for i in got]
        counts = {p: prompts.count(p) for p in set(prompts)}
        size = {1: 3, 2: 1, 3: 2}
        assert all(c % size[p] == 0 for p, c in counts.items())  # a prompt comes with all its pairs
        assert sum(c // size[p] for p, c in counts.items()) == 3  # as many draws as prompts
        seen.add(tuple(sorted(got.tolist())))
    assert len(seen) > 3  # resamples differ from seed to seed


def test_versus_random_is_arm_minus_random_at_equal_rounds():
    rows = []
    for arm, acc in (("random", [0.6, 0.62, 0.65]), ("disagreement", [0.6, 0.66, 0.64])):
        for r, a in enumerate(acc):
            rows.append({"arm": arm, "round": r, "val_acc": a, "val_ece": 0.1, "bon_peak_gold": 0.2 + r,
                         "bon_peak_kl": 1.0})
    v = versus_random(rows)["disagreement"]
    assert v["rounds"] == [1, 2]  # round 0 is shared
    assert v["diff"]["val_acc"] == pytest.approx([0.04, -0.01])
    assert v["mean"]["val_acc"] == pytest.approx(0.015)
    assert v["mean"]["bon_peak_gold"] == pytest.approx(0.0)


@pytest.mark.slow
def test_active_job_on_the_smoke_profile(smoke_run, tmp_path):
    """``python -m jobs.active --config jobs/configs/smoke.yaml`` as a user types it, in the smoke
    run's directory (copied: the main job's stages are shared, as a user's ``runs/frontier-<hash>``
    would be): every arm's rows, equal labels per round across arms, a shared round 0, the plot and
    the report; a rerun is served from the cached rounds with the same numbers."""
    import shutil

    shutil.copytree(smoke_run[1], tmp_path / "run", ignore=shutil.ignore_patterns("*.tmp", "rl", "tune", "wandb"))
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "jobs.active", "--config", str(ROOT / "jobs/configs/smoke.yaml"),
           "--run-dir", str(tmp_path / "run"), "--quiet"]
    p = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    out = json.loads(p.stdout.strip().splitlines()[-1])
    res = json.loads((tmp_path / "run" / "active.json").read_text())
    a = res["arms"]
    assert a == ["disagreement", "random"]
    for arm in a:
        rows = sorted((r for r in res["rows"] if r["arm"] == arm), key=lambda r: r["round"])
        assert [r["labels"] for r in rows] == [res["initial"] + k * res["per_round"] for k in range(res["rounds"] + 1)]
        for r in rows:
            assert 0 <= r["val_acc"] <= 1 and 0 <= r["val_ece"] <= 1 and math.isfinite(r["bon_peak_gold"])
            assert r["bon_peak_kl"] >= 0
    r0 = {r["arm"]: r for r in res["rows"] if r["round"] == 0}
    assert r0["disagreement"]["val_acc"] == r0["random"]["val_acc"]  # one shared initial set
    assert not any(r["cached"] for r in res["rows"] if r["round"] > 0)  # the rounds ran here, the stages did not
    assert "stage sft          cached" in (tmp_path / "run" / "job.log").read_text()
    assert set(out["versus_random"]) == {"disagreement"}
    for f in ("active.png", "active.md", "active.html"):
        assert (tmp_path / "run" / f).stat().st_size > 500
    assert "| disagreement | 1 |" in (tmp_path / "run" / "active.md").read_text()
    p2 = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert p2.returncode == 0, p2.stderr[-3000:]
    res2 = json.loads((tmp_path / "run" / "active.json").read_text())
    assert all(r["cached"] for r in res2["rows"])
    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("cached",)} for r in rows]  # noqa: E731
    assert strip(res2["rows"]) == strip(res["rows"])


def test_seeds_pool_active_over_runs(tmp_path):
    """``jobs.seeds`` reads each run's active.json: arm minus random per seed, mean ± s.e. over seeds."""
    from orchestrator.report.seeds import markdown, pool_active

    runs = []
    for seed, gain in ((1, 0.02), (2, 0.04)):
        rows = [{"arm": arm, "round": r, "labels": 10 * (r + 1), "val_acc": 0.6 + r * 0.01 + (gain if arm != "random"
                                                                                              and r else 0),
                 "val_ece": 0.1, "bon_peak_gold": 0.2, "bon_peak_kl": 1.0}
                for arm in ("disagreement", "random") for r in range(3)]
        d = tmp_path / f"seed-{seed}"
        d.mkdir()
        (d / "active.json").write_text(json.dumps({"rows": rows, "versus_random": versus_random(rows)}))
        runs.append({"dir": str(d), "seed": seed})
    out = pool_active(runs)
    e = out["versus_random"]["disagreement"]["val_acc"]
    assert e["per_seed"] == pytest.approx({"1": 0.02, "2": 0.04}) and e["mean"] == pytest.approx(0.03)
    assert e["se"] == pytest.approx(0.01) and e["t"] == pytest.approx(3.0)
    curve = out["curves"]["random"]
    assert [c["labels"] for c in curve] == [10, 20, 30] and curve[1]["val_acc"]["mean"] == pytest.approx(0.61)
    assert pool_active(runs[:1]) is None
    md = markdown({"seeds": [1, 2], "runs": [], "config_hash": "x", "checks": {}, "numbers": {}, "effects": {},
                   "pooled": {}, "monitor": {}, "active": out})
    assert "| disagreement | +0.0300 ± 0.0100 (t +3.0)" in md
