"""``jobs.seeds``: findings across seeds, on copies of the smoke run (seed 0) relabelled as other
seeds, one with a check flipped -- the aggregation must report exactly that."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow  # copies of the smoke run


def _as_seed(src, dst, seed: int, flip: str | None = None, scale_rl_peaks: float = 1.0):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("stages", "rl", "tune"))
    cfg = yaml.safe_load((dst / "config.yaml").read_text())
    cfg["seed"] = seed
    (dst / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    fr = json.loads((dst / "frontier.json").read_text())
    fr["seed"] = seed
    if flip:
        node = fr["checks"]
        *path, last = flip.split(".")
        for k in path:
            node = node[k]
        node[last] = not node[last]
    for v in fr["checks"].get("sweep", {}).get("no_penalty_peaks", {}).values():
        if v["kl_peak_fit"] is not None:
            v["kl_peak_fit"] *= scale_rl_peaks
    (dst / "frontier.json").write_text(json.dumps(fr))
    return dst


@pytest.fixture()
def three_seeds(smoke_run, tmp_path):
    _, run_dir, frontier = smoke_run
    assert isinstance(frontier["checks"]["rl"]["proxy_rises_every_run"], bool)
    return [_as_seed(run_dir, tmp_path / "r0", 0),
            _as_seed(run_dir, tmp_path / "r1", 1, flip="rl.proxy_rises_every_run", scale_rl_peaks=2.0),
            _as_seed(run_dir, tmp_path / "r2", 2, scale_rl_peaks=4.0)]


def _seeds(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "jobs.seeds", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd)


def test_checks_counted_per_seed_and_peaks_pooled(three_seeds, tmp_path):
    out = tmp_path / "agg"
    r = _seeds(*three_seeds, "--out", out)
    assert r.returncode == 0, r.stderr
    agg = json.loads((out / "seeds.json").read_text())
    assert agg["seeds"] == [0, 1, 2]
    first = json.loads((three_seeds[0] / "frontier.json").read_text())["checks"]["rl"]["proxy_rises_every_run"]
    c = agg["checks"]["rl.proxy_rises_every_run"]
    assert (c["holds_in"], c["fails_in"]) == (([0, 2], [1]) if first else ([1], [0, 2]))
    for name, c in agg["checks"].items():  # every boolean check of every run is counted exactly once
        assert sorted(c["holds_in"] + c["fails_in"] + c["missing_in"]) == [0, 1, 2], name
    sizes = agg["pooled"]["rl"]["sizes"]
    for p, v in sizes.items():
        per = [v["kl_peak"][s] for s in ("0", "1", "2")]
        if None not in per:
            assert per[1] == pytest.approx(2 * per[0]) and per[2] == pytest.approx(4 * per[0])
            assert v["kl_peak_over_seeds"]["mean"] == pytest.approx(np.mean(per))
            assert v["kl_peak_over_seeds"]["se"] == pytest.approx(np.std(per, ddof=1) / np.sqrt(3))
            assert v["kl_peak_over_seeds"]["median"] == pytest.approx(np.median(per))
    assert "rl.proxy_rises_every_run" in (out / "seeds.md").read_text()
    page = (out / "seeds.html").read_text()
    assert "data:image/png;base64," in page and "<table" in page and "src=\"http" not in page
    assert "holds in" in r.stdout


def test_bad_comparisons_exit_2_naming_the_problem(three_seeds, tmp_path):
    r0, r1, _ = three_seeds
    other = tmp_path / "other"
    shutil.copytree(r1, other)
    cfg = yaml.safe_load((other / "config.yaml").read_text())
    cfg["seed"] = 7
    cfg["bon"]["bootstrap"] += 1
    (other / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    cases = [((r0, other), "differs at bon.bootstrap"),
             ((r0, r0), "seed 0 is given twice"),
             ((r0, tmp_path / "nothing"), "no config.yaml"),
             ((r0,), "at least two"),
             (("--seeds", "0,1", "seed=3"), "drop the seed= override"),
             (("--seeds", "0,0"), "repeats a seed"),
             (("--seeds", "0,x"), "comma-separated"),
             (("--seeds", "0,1", "bon.nope=1"), "bon.nope")]
    for args, msg in cases:
        r = _seeds(*args, "--out", tmp_path / "never")
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and msg in lines[0], (args, r.stderr)
    assert not (tmp_path / "never").exists()


def test_seeds_mode_skips_finished_runs(three_seeds, tmp_path):
    """``--seeds`` runs jobs.frontier only for seeds without frontier.json under --root; finished
    ones (here all) are compared as they are."""
    root = tmp_path / "root"
    root.mkdir()
    for s, d in enumerate(three_seeds):
        shutil.copytree(d, root / f"seed-{s}")
    cfg = root / "seed-0" / "config.yaml"
    r = _seeds("--seeds", "0,1,2", "--config", cfg, "--root", root)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("finished before") == 3 and "running" not in r.stderr
    assert json.loads((root / "seeds.json").read_text())["seeds"] == [0, 1, 2]
    # the same root with another config: refused before anything runs, not compared as if it matched
    r = _seeds("--seeds", "0,1,2", "--config", cfg, "--root", root, "rl.steps=7")
    assert r.returncode == 2 and "seed-0 holds a run of another config" in r.stderr, r.stderr


EFFECT_OF_CHECK = {"proxy rises: min Spearman(KL, proxy) - 0.8": "proxy_rises_every_run",
                   "smallest proxy: min(gold peak, drop after it) - 2 s.e.": "smallest_rises_then_falls",
                   "pooled R²: RL form - BoN form": "rl_form_fits_better",
                   "ln(KL RL / KL BoN) at the same gold: min over proxies": "rl_spends_more_kl_than_bon",
                   "gold lost at the common KL: singles' mean - best ensemble": "ensemble_loses_less"}


def test_rl_effects_are_positive_exactly_where_the_checks_hold(smoke_run, three_seeds, tmp_path):
    """The signed effect sizes agree with the boolean checks of a real run, follow the numbers of a
    hand-made one, and are averaged over seeds in seeds.json / seeds.md."""
    from orchestrator.report.seeds import _rl_effects

    rl = smoke_run[2]["checks"]["rl"]
    eff = _rl_effects(rl)
    for label, check in EFFECT_OF_CHECK.items():
        if eff[label] is not None:
            assert (eff[label] > 0) == rl[check], (label, eff[label], rl[check])
    made = {"proxy_spearman_with_kl": {"a": 0.9, "b": 0.85}, "smallest_gold_peak": {"gold": 0.30},
            "smallest_gold_drop_tail_mean": 0.05, "smallest_gold_se": 0.03,
            "r2_pooled_rl_form": 0.7, "r2_pooled_bon_form": 0.75,
            "kl_for_same_gold": {"p1": {"ratio": 2.0}, "p2": {"ratio": 0.5}},
            "gold_drop_single": {"p1": 0.1, "p2": 0.3}, "gold_drop_ensemble": {"wco": 0.15, "uwo": 0.25},
            "gold_drop_single_end": {"p1": 0.2, "p2": 0.4}, "gold_drop_ensemble_end": {"wco": 0.35, "uwo": 0.1},
            "seed_ensemble": {"single": 0.2, "ensembles": {"a": 0.25, "b": 0.3}, "single_end": 0.1,
                              "ensembles_end": {"a": 0.05, "b": 0.2}}}
    e = _rl_effects(made)
    assert e["proxy rises: min Spearman(KL, proxy) - 0.8"] == pytest.approx(0.05)
    assert e["smallest proxy: min(gold peak, drop after it) - 2 s.e."] == pytest.approx(0.05 - 0.06)
    assert e["pooled R²: RL form - BoN form"] == pytest.approx(-0.05)
    assert e["ln(KL RL / KL BoN) at the same gold: min over proxies"] == pytest.approx(np.log(0.5))
    assert e["ln(KL RL / KL BoN) at the same gold: p1"] == pytest.approx(np.log(2.0))
    assert e["gold lost at the common KL: singles' mean - best ensemble"] == pytest.approx(0.2 - 0.15)
    assert e["gold lost by the last step: singles' mean - best ensemble (no check)"] == pytest.approx(0.3 - 0.1)
    assert e["seed ensemble: gold lost at their common KL, one member - best ensemble"] == pytest.approx(-0.05)
    assert e["seed ensemble: gold lost by the last step, one member - best ensemble (no check)"] == pytest.approx(0.05)
    # a run whose proxy never moved has no Spearman and fails the check: its effect is negative, not missing
    assert _rl_effects({**made, "proxy_spearman_with_kl": {"a": 0.9, "b": float("nan")}})[
        "proxy rises: min Spearman(KL, proxy) - 0.8"] == pytest.approx(-0.8)
    out = tmp_path / "agg"
    assert _seeds(*three_seeds, "--out", out).returncode == 0
    agg = json.loads((out / "seeds.json").read_text())
    for label, v in eff.items():  # three copies of one run: the mean is that run's value, s.e. 0
        st = agg["effects"][label]
        assert st["per_seed"] == {"0": v, "1": v, "2": v}
        if v is not None:
            assert st["mean"] == pytest.approx(v) and st["se"] == pytest.approx(0.0)
            assert st["positive_in"] == (3 if v > 0 else 0)
    assert "effect sizes" in (out / "seeds.md").read_text()


def test_bon_power_splits_the_spread_of_a_real_run(smoke_run, tmp_path):
    """``jobs.bon_power`` on the smoke run's own pool: per size the pool's prompt and sample noise,
    the fit's variants and the size trend, all from the run's best-of-n scores."""
    _, run_dir, frontier = smoke_run
    out = tmp_path / "power.json"
    r = subprocess.run([sys.executable, "-m", "jobs.bon_power", str(run_dir), "--bootstrap", "20", "--json", str(out)],
                       capture_output=True, text=True, timeout=300, check=False)
    assert r.returncode == 0, r.stderr[-3000:]
    (run,) = json.loads(out.read_text())["runs"]
    assert set(run["sizes"]) == {e["proxy"] for e in frontier["bon"] if e["kind"] == "proxy"}  # not the ensembles
    for name, s in run["sizes"].items():
        e = next(e for e in frontier["bon"] if e["proxy"] == name)
        assert s["kl_peak"] == e["fit"]["kl_peak"]  # the job's own fit, recomputed from the pool
        assert s["ln_d_prompts_sd"] >= 0 and s["ln_d_samples_sd"] >= 0
    assert run["size_trend"] == frontier["checks"]["size_trend"]


@pytest.mark.slow
def test_bon_power_factors_retrain_proxies_with_one_input_redrawn(smoke_run, tmp_path, capsys):
    """``jobs.bon_power --factors order,labels,lm``: each factor's replicate proxies are new cached
    stages beside the run's own (which stay as they were), each differs from the own proxy of its
    size in its best-of-n scores, the ``order`` replicates are the very stages ``proxy.seed_members``
    trains, and a second call trains nothing."""
    import pyarrow.parquet as pq

    from jobs import bon_power
    from orchestrator.config.schema import FrontierConfig, load
    from orchestrator.run.pipeline import (
        _proxy_model,
        stage_extra_members,
        stage_label,
        stage_lms,
        stage_sample,
        stage_task,
    )

    _, smoke_dir, frontier = smoke_run
    run = tmp_path / "run"  # the factors add stages: a copy, not the session's shared run
    shutil.copytree(smoke_dir / "stages", run / "stages")
    for f in ("frontier.json", "config.yaml"):
        shutil.copy(smoke_dir / f, run / f)
    before = {d.name: (d / "DONE.json").stat().st_mtime_ns for d in (run / "stages").iterdir()}
    sizes = ["1x8"]  # one size: four actor processes in all (the slope: test_bon_power_slope_...)
    out = tmp_path / "f.json"
    argv = [str(run), "--bootstrap", "5", "--factors", "order,labels,lm", "--replicates", "1",
            "--sizes", ",".join(sizes), "--json", str(out), "--quiet"]
    assert bon_power.main(argv) == 0
    (fx,) = json.loads(out.read_text())["factors"]
    assert fx["sizes"] == [f"proxy-{s}" for s in sizes] and set(fx["factors"]) == {"order", "labels", "lm"}
    for d in fx["factors"].values():
        assert len(d["replicates"]) == 1 and len(d["ln_d_sd"]) == 1 and d["ln_d_sd"][0] >= 0
        assert d["slope_sd"] is None and d["replicates"][0]["slope"] is None  # one size: no slope
    printed = capsys.readouterr().out
    assert all(f"  {f}" in printed for f in ("order", "labels", "lm"))
    new = {d.name: d for d in (run / "stages").iterdir() if d.name not in before}
    assert all((run / "stages" / n / "DONE.json").stat().st_mtime_ns == t for n, t in before.items())
    kinds = sorted(json.loads((d / "DONE.json").read_text())["inputs"]["stage"] for d in new.values())
    # 3 factors x 1 size of proxies, its LM (the lm factor), 1 label bootstrap
    assert kinds == ["label-bootstrap", "lm", "proxy", "proxy", "proxy"], kinds
    own = {json.loads((d / "DONE.json").read_text())["size"]: d for d in (run / "stages").glob("proxy-*")
           if d.name in before}
    for d in new.values():
        meta = json.loads((d / "DONE.json").read_text())
        if meta["inputs"]["stage"] == "proxy":
            a = pq.read_table(d / "bon_scores.parquet").column("score").to_pylist()
            b = pq.read_table(own[meta["size"]] / "bon_scores.parquet").column("score").to_pylist()
            assert a != b, d.name  # the redrawn input moved the proxy
        if meta["inputs"]["stage"] == "label-bootstrap":
            assert meta["distinct_prompts"] < meta["prompts"]  # drawn with replacement
    # the order replicates are proxy.seed_members' stages: asking for member 1 of 1x8 trains nothing
    cfg = load(FrontierConfig, run / "config.yaml", ["proxy.seed_members=1", "proxy.seed_member_size=1x8"])
    task = stage_task(cfg, run)
    lms = stage_lms(cfg, run, task, {"policy": (cfg.sft.policy, cfg.cluster.learner)}, False)
    sample = stage_sample(cfg, run, task, lms["policy"], False)
    label = stage_label(cfg, run, task, sample, False)
    size_lms = stage_lms(cfg, run, task, {"1x8": (_proxy_model(cfg, "1x8"), cfg.cluster.proxy)}, False)
    (m1,) = stage_extra_members(cfg, run, task, sample, label, size_lms, False)
    assert m1.cached and m1.dir.name in new
    # a second call: every replicate cached, nothing new
    assert bon_power.main(argv) == 0
    assert {d.name for d in (run / "stages").iterdir()} == set(before) | set(new)


def test_bon_power_slope_is_the_least_squares_slope_on_log_params():
    """The per-replicate size trend: ln d* = a + b ln(params) recovered exactly; one size has none."""
    from jobs.bon_power import _slope

    params = [1_000, 10_000, 100_000]
    assert _slope(params, [0.1 + 0.05 * np.log(p) for p in params]) == pytest.approx(0.05)
    assert _slope(params, [0.3, 0.2, 0.1]) < 0 and _slope([5_000], [0.4]) is None
