"""The whole frontier pipeline on the smoke profile, in-process on the shared Ray."""

import json

import numpy as np
import pytest

from orchestrator.math.bon import kl_bon
from orchestrator.run.pipeline import run_frontier

pytestmark = pytest.mark.slow


def test_frontier_json_contract(smoke_run):
    cfg, run_dir, frontier = smoke_run
    on_disk = json.loads((run_dir / "frontier.json").read_text())
    assert on_disk["config_hash"] == frontier["config_hash"]
    assert set(on_disk) >= {"config_hash", "versions", "bon", "rl"}
    # one proxy per size, then the size ensemble under mean, WCO and UWO (issue 20: on in every profile)
    assert [(e["proxy"], e["kind"]) for e in on_disk["bon"]] == (
        [(f"proxy-{s}", "proxy") for s in cfg.proxy.sizes] + [(f"ensemble-{o}", "ensemble") for o in ("mean", "wco", "uwo")])
    for e in on_disk["bon"]:
        assert set(e) >= {"proxy", "kind", "proxy_params", "seed", "points", "fit", "calibration"}
        if e["kind"] == "ensemble":
            assert e["members"] == [f"proxy-{s}" for s in cfg.proxy.sizes] and e["scaling"] == "standardize"
            assert e["source"] == "size" and e["proxy_params"] == sum(x["proxy_params"] for x in on_disk["bon"][:4])
        assert set(e["fit"]) >= {"alpha", "beta", "r2", "kl_peak", "gold_peak"}
        ns = [p["n"] for p in e["points"]]
        assert ns == list(range(1, cfg.n_max + 1))  # every n up to N
        assert e["points"][0]["gold"] == pytest.approx(0.0, abs=1e-12)  # relative to n = 1
        assert np.allclose([p["kl"] for p in e["points"]], kl_bon(np.array(ns)))
        proxy = [p["proxy"] for p in e["points"]]
        assert all(b >= a - 1e-9 for a, b in zip(proxy, proxy[1:]))
    params = [e["proxy_params"] for e in on_disk["bon"] if e["kind"] == "proxy"]
    assert max(params) >= 5 * min(params)
    for f in ("bon.png", "report.md", "report.html", "config.yaml"):
        assert (run_dir / f).is_file() and (run_dir / f).stat().st_size > 100
    assert "data:image/png;base64," in (run_dir / "report.html").read_text()


def test_outputs_load_with_hf_tools(smoke_run):
    import datasets
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    _, run_dir, _ = smoke_run
    stages = run_dir / "stages"
    prefs = next(stages.glob("label-*/preferences.parquet"))
    ds = datasets.load_dataset("parquet", data_files=str(prefs), split="train")
    assert {"pair_id", "prompt_id", "prompt", "response_a", "response_b", "p_a", "labeler", "principle",
            "rationale"} <= set(ds.column_names)
    assert set(ds["p_a"]) <= {0.0, 1.0}
    samples = datasets.load_dataset("parquet", data_files=str(next(stages.glob("bon-*/bon_scores.parquet"))),
                                    split="train")
    assert {"prompt_id", "sample_id", "response", "n_tokens", "score.gold"} <= set(samples.column_names)
    AutoModelForCausalLM.from_pretrained(next(stages.glob("sft-*/policy")))
    rm = AutoModelForSequenceClassification.from_pretrained(next(stages.glob("proxy-*/model")))
    assert rm.config.num_labels == 1
    assert not list(run_dir.rglob("*.bin")) and not list(run_dir.rglob("*.pt"))  # safetensors only


def test_rerun_reuses_every_stage_and_is_identical(smoke_run):
    cfg, run_dir, first = smoke_run
    again = run_frontier(cfg, run_dir, progress=False)
    assert all(t["cached"] for t in again["timings"].values())
    assert again["bon"] == first["bon"]


def test_same_config_same_numbers_in_a_fresh_dir(smoke_run, tmp_path):
    """Every stage before RL again in a fresh directory -- the smallest proxy of the four (a proxy's
    stages and best-of-n curve do not depend on the other sizes): the same numbers and the same
    weights, file for file. (RL from the same stage files gives the same numbers: the fault
    drill and the kill/resume drill rerun the smoke sweep's trials in fresh processes and compare
    them bit for bit; a trial here would cost a Tune trial's ~15 s of process startup.)"""
    import dataclasses
    import hashlib

    cfg, first_dir, first = smoke_run
    sizes = cfg.proxy.sizes[:1]
    one = dataclasses.replace(cfg, rl=dataclasses.replace(cfg.rl, enabled=False),
                              proxy=dataclasses.replace(cfg.proxy, sizes=sizes))
    second = run_frontier(one, tmp_path / "again", progress=False)
    assert not any(t["cached"] for t in second["timings"].values())
    assert [e["proxy"] for e in second["bon"]] == [f"proxy-{s}" for s in sizes]  # one proxy: no ensemble
    assert second["bon"] == first["bon"][:1]  # CPU: same config, same numbers
    assert second["label"] == first["label"]
    assert second["rl"] == []

    def weights(run_dir):
        return {f"{d.name}/{f.relative_to(d)}": hashlib.sha256(f.read_bytes()).hexdigest()
                for d in (run_dir / "stages").iterdir() if d.is_dir() and not d.name.endswith(".tmp")
                for f in d.rglob("*.safetensors")}

    again = weights(tmp_path / "again")
    ref = weights(first_dir)
    # the SFT policy, the proxies' LMs and the proxies themselves: every weight file of the fresh run
    assert any("/policy/" in k for k in again) and sum(k.startswith("proxy-") for k in again) == len(sizes)
    assert again == {k: ref[k] for k in again}


def test_changing_a_late_stage_reuses_the_early_ones(smoke_run):
    cfg, run_dir, frontier = smoke_run
    import dataclasses

    cfg2 = dataclasses.replace(cfg, bon=dataclasses.replace(cfg.bon, bootstrap=cfg.bon.bootstrap + 1))
    try:
        out = run_frontier(cfg2, run_dir, progress=False)
        cached = {k: v["cached"] for k, v in out["timings"].items()}
        assert cached["sft"] and cached["sample"] and cached["label"] and not cached["bon"]
    finally:  # the run dir is shared by the module's tests: put its frontier back as the fixture made it
        back = run_frontier(cfg, run_dir, progress=False)
    assert back["timings"]["bon"]["cached"]
    assert json.dumps(back["checks"], sort_keys=True) == json.dumps(frontier["checks"], sort_keys=True)  # NaN-safe
