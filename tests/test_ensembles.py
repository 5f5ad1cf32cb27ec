"""Reward-model ensembles outside RL (issue 20): member scaling, the aggregates, best-of-n of an
ensemble against brute force, WARM's weight averaging, and the names a config's ensembles get --
on hand-computed numbers."""

from itertools import combinations

import numpy as np
import pytest
import torch

from orchestrator.config.loading import load
from orchestrator.config.members import (
    ensemble_sets,
    extra_members,
    warm_members,
    warm_name,
)
from orchestrator.config.schema import ConfigError, FrontierConfig
from orchestrator.math.bon import bon_curves
from orchestrator.math.ensembles import (
    aggregate_np,
    ensemble_scores,
    member_scales,
    weight_average,
)
from orchestrator.math.rl import aggregate


def test_aggregates_by_hand_and_equal_to_the_rl_loops():
    z = np.array([[1.0, 3.0, 2.0], [0.0, -1.0, 4.0]])
    assert aggregate_np(z, "mean").tolist() == [2.0, 1.0]
    assert aggregate_np(z, "wco").tolist() == [1.0, -1.0]
    # uwo: mean - 0.5 * population variance: row 0 var = 2/3, row 1 var = (1 + 4 + 9) / 3
    assert aggregate_np(z, "uwo", 0.5) == pytest.approx([2.0 - 1 / 3, 1.0 - 7 / 3])
    for obj in ("mean", "wco", "uwo"):
        assert aggregate_np(z, obj, 0.1) == pytest.approx(aggregate(torch.from_numpy(z), obj, 0.1).numpy())
    with pytest.raises(ValueError, match="objective"):
        aggregate_np(z, "max")


def test_member_scales_standardize_and_temperature():
    pool = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 20.0]])
    (m0, s0), (m1, s1) = member_scales(pool, "standardize")
    assert (m0, m1) == (3.0, 20.0) and s0 == pytest.approx(np.sqrt(8 / 3)) and s1 == pytest.approx(np.sqrt(200 / 3))
    assert member_scales(pool, "temperature", [0.5, 4.0]) == [(3.0, 0.5), (20.0, 4.0)]
    # temperature-scaled: (r - mean) / tau, so a difference of scaled scores is delta / tau
    e = ensemble_scores(pool, [(3.0, 0.5), (20.0, 4.0)], "mean")
    assert e.tolist() == pytest.approx([((1 - 3) / 0.5 + (10 - 20) / 4) / 2, ((3 - 3) / 0.5 + 10 / 4) / 2,
                                        ((5 - 3) / 0.5 + 0) / 2])
    with pytest.raises(ValueError, match="tau"):
        member_scales(pool, "temperature")
    with pytest.raises(ValueError, match="> 0"):
        member_scales(pool, "temperature", [1.0, -1.0])


@pytest.mark.parametrize("objective", ["mean", "wco", "uwo"])
def test_bon_of_an_ensemble_equals_brute_force(objective):
    """The unbiased estimator on the ensemble's aggregate equals enumerating every n-subset of the
    pool and taking the response whose aggregate of the standardized members is largest."""
    rng = np.random.default_rng(3)
    N, k = 7, 3
    members = rng.normal(size=(N, k)) * [1.0, 5.0, 0.2] + [0.0, 3.0, -1.0]
    gold = rng.normal(size=N)
    scales = member_scales(members, "standardize")
    agg = ensemble_scores(members, scales, objective, 0.3)
    _, g_est = bon_curves(agg[None, :], gold[None, :])
    z = (members - members.mean(0)) / members.std(0)
    for n in range(1, N + 1):
        picks = []
        for sub in combinations(range(N), n):
            vals = [aggregate_np(z[j][None, :], objective, 0.3)[0] for j in sub]
            picks.append(gold[sub[int(np.argmax(vals))]])
        assert g_est[0, n - 1] == pytest.approx(np.mean(picks), abs=1e-12)


def test_weight_average_by_hand():
    a = {"w": np.array([[1.0, 2.0]]), "b": np.array([0.0]), "pos": np.array([0, 1])}
    b = {"w": np.array([[3.0, 6.0]]), "b": np.array([4.0]), "pos": np.array([0, 1])}
    avg = weight_average([a, b])
    assert avg["w"].tolist() == [[2.0, 4.0]] and avg["b"].tolist() == [2.0]
    assert avg["pos"].dtype.kind == "i" and avg["pos"].tolist() == [0, 1]  # integer buffers copied, not averaged
    assert weight_average([a, b], [0.25, 0.75])["w"].tolist() == [[2.5, 5.0]]
    t = weight_average([{"w": torch.tensor([1.0, 3.0])}, {"w": torch.tensor([3.0, 5.0])}])
    assert torch.equal(t["w"], torch.tensor([2.0, 4.0]))
    with pytest.raises(ValueError, match="sum to 1"):
        weight_average([a, b], [0.5, 0.6])
    with pytest.raises(ValueError, match="other parameters"):
        weight_average([a, {"w": a["w"]}])
    with pytest.raises(ValueError, match="member 1"):
        weight_average([a, {**b, "w": np.zeros((2, 2))}])
    with pytest.raises(ValueError, match="differs"):
        weight_average([a, {**b, "pos": np.array([1, 0])}])


def test_ensemble_names_and_members_of_a_config():
    cfg = load(FrontierConfig, None, ["proxy.sizes=[2x16,2x32]", "proxy.seed_members=2",
                                 "proxy.ensemble_diversity=[size,seed,bootstrap,pretrain]", "proxy.warm=bootstrap"])
    sets = {e["source"]: e for e in ensemble_sets(cfg)}
    assert sets["size"]["members"] == ["proxy-2x16", "proxy-2x32"] and sets["size"]["prefix"] == "ensemble"
    assert sets["seed"]["members"] == ["proxy-2x16", "proxy-2x16-m1", "proxy-2x16-m2"]
    assert sets["bootstrap"]["prefix"] == "ensemble-bootstrap"
    assert sets["pretrain"]["members"][1:] == ["proxy-2x16-p1", "proxy-2x16-p2"]
    assert [m for m in extra_members(cfg) if m[2] == "bootstrap"] == [("2x16", 1, "bootstrap"), ("2x16", 2, "bootstrap")]
    assert warm_name(cfg, "-ai") == "proxy-2x16-ai-warm"
    assert warm_members(cfg) == ["proxy-2x16", "proxy-2x16-b1", "proxy-2x16-b2"]
    old = load(FrontierConfig, None, ["proxy.seed_members=3"])  # seed_members alone: the seed ensemble, as before
    assert old.proxy.ensemble_sources == ("size", "seed")


@pytest.mark.parametrize("overrides, key", [
    (["proxy.ensemble_diversity=[size,colour]"], "proxy.ensemble_diversity[1]"),
    (["proxy.ensemble_diversity=[bootstrap]"], "proxy.seed_members"),
    (["proxy.member_scaling=zscore"], "proxy.member_scaling"),
    (["proxy.seed_members=2", "proxy.warm=pretrain"], "proxy.warm"),
    (["proxy.seed_members=2", "proxy.warm=bootstrap"], "proxy.warm"),  # bootstrap is not a source here
    (["proxy.seed_members=1", "proxy.ensemble_diversity=[pretrain]", "proxy.init=scratch"],
     "proxy.ensemble_diversity"),
])
def test_bad_ensemble_config_names_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        load(FrontierConfig, None, overrides)


@pytest.mark.slow
def test_every_diversity_source_warm_and_temperature_scaling_on_the_smoke_run(smoke_run, tmp_path):
    """The smoke run's stages reused, then every ensemble source with 2 extra members and WARM over
    the bootstrap members: each ensemble's best-of-n curve is the estimator on the aggregate of its
    members' pool scores; WARM's weights are its members' mean; bootstrap members keep the held-out
    pairs and the LM of the size's proxy, pretrain members start from other LMs; each source gets its
    RL runs and its comparison with the member's run. Then ``member_scaling: temperature`` on the same
    stages divides members by their own fitted tau."""
    import json
    import shutil

    import pyarrow.parquet as pq
    from safetensors.torch import load_file

    from orchestrator.math.bon import pool_matrix
    from orchestrator.run.pipeline import run_frontier

    cfg0, run0, _ = smoke_run
    shutil.copytree(run0 / "stages", tmp_path / "stages")
    over = ["proxy.ensemble_diversity=[size,seed,bootstrap,pretrain]", "proxy.seed_members=2", "proxy.warm=bootstrap"]
    cfg = load(FrontierConfig, "jobs/configs/smoke.yaml", over)
    fr = run_frontier(cfg, tmp_path, progress=False)
    by = {e["proxy"]: e for e in fr["bon"]}
    z = cfg.proxy.seed_size
    for src, pre in (("seed", "ensemble-seeds"), ("bootstrap", "ensemble-bootstrap"), ("pretrain", "ensemble-pretrain")):
        for obj in ("mean", "wco", "uwo"):
            e = by[f"{pre}-{obj}"]
            assert e["kind"] == "ensemble" and e["source"] == src and e["objective"] == obj and len(e["members"]) == 3
            assert e["calibration"]["pairs"] == by[f"proxy-{z}"]["calibration"]["pairs"]
    assert by[f"proxy-{z}-warm"]["members"] == [f"proxy-{z}", f"proxy-{z}-b1", f"proxy-{z}-b2"]
    assert {by[f"proxy-{z}-{c}{k}"]["kind"] for c in "mbp" for k in (1, 2)} == {"member"}
    # the curves: recomputed from the best-of-n stage's pool scores
    def bon_stage(root, scaling: str):
        got = [d for d in (root / "stages").glob("bon-*")
               if json.loads((d / "DONE.json").read_text())["inputs"].get("scaling") == scaling
               and json.loads((d / "DONE.json").read_text())["inputs"]["extras"]]  # not the smoke run's own
        assert len(got) == 1
        return got[0]

    pool = pq.read_table(bon_stage(tmp_path, "standardize") / "bon_scores.parquet").to_pydict()
    N = cfg.sample.bon_responses_per_prompt
    m = np.stack([np.array(pool[f"score.{n}"]) for n in by["ensemble-bootstrap-uwo"]["members"]], 1)
    agg = ensemble_scores(m, member_scales(m, "standardize"), "uwo", cfg.rl.uwo_lambda)
    assert np.allclose(agg, pool["score.ensemble-bootstrap-uwo"])
    pool["score.again"] = agg.tolist()
    _, g = bon_curves(pool_matrix(pool, "score.again", N), pool_matrix(pool, "score.gold", N))
    assert np.allclose(g.mean(0) - g[:, 0].mean(), [p["gold"] for p in by["ensemble-bootstrap-uwo"]["points"]])
    # the proxies' stages: WARM = the mean of its members' weights; who shares which LM
    metas = {}
    for d in (tmp_path / "stages").glob("proxy-*"):
        meta = json.loads((d / "DONE.json").read_text())
        metas[meta.get("name", f"proxy-{meta.get('size')}")] = (d, meta)
    w = load_file(str(metas[f"proxy-{z}-warm"][0] / "model" / "model.safetensors"))
    sds = [load_file(str(metas[n][0] / "model" / "model.safetensors")) for n in by[f"proxy-{z}-warm"]["members"]]
    for k, v in w.items():
        if v.is_floating_point():
            assert torch.allclose(v, sum(sd[k] for sd in sds) / 3, atol=1e-6), k
    assert not torch.equal(sds[0][next(iter(w))], sds[1][next(iter(w))])  # the members did differ
    init = {n: metas[n][1]["inputs"]["init"] for n in metas if "inputs" in metas[n][1] and "init" in metas[n][1]["inputs"]}
    assert init[f"proxy-{z}-b1"] == init[f"proxy-{z}-m1"] == init[f"proxy-{z}"]
    assert len({init[f"proxy-{z}"], init[f"proxy-{z}-p1"], init[f"proxy-{z}-p2"]}) == 3
    # RL: one run per source and objective, WARM's, each compared with the member's own run
    names = {e["trial"] for e in fr["rl"]}
    assert {"ensemble-seeds-wco", "ensemble-bootstrap-wco", "ensemble-pretrain-wco", f"proxy-{z}-warm-kl0"} <= names
    src = fr["checks"]["rl"]["ensembles_by_source"]
    assert set(src) == {"seeds", "bootstrap", "pretrain", "warm"} and all(r["base"] == f"proxy-{z}" for r in src.values())
    # members, WARM and ensembles are no sizes of the size law, and WARM's run is not the smallest proxy's
    assert set(fr["checks"]["r2"]) == {f"proxy-{s}" for s in cfg.proxy.names}
    assert fr["checks"]["rl"]["smallest"] == f"proxy-{z}"
    # temperature scaling, same stages: members centred on the pool, divided by their own fitted tau
    cfg_t = load(FrontierConfig, "jobs/configs/smoke.yaml", [*over, "proxy.member_scaling=temperature"])
    # in the same run directory: the finished Tune experiment holds the standardized runs, whose keys
    # these runs do not share -- it is set aside, not restored (a restore would count them finished)
    fr_t = run_frontier(cfg_t, tmp_path, progress=False)
    bt = {e["proxy"]: e for e in fr_t["bon"]}
    taus = [bt[n]["calibration"]["tau"] for n in bt["ensemble-seeds-mean"]["members"]]
    assert bt["ensemble-seeds-mean"]["scaling"] == "temperature"
    pool_t = pq.read_table(bon_stage(tmp_path, "temperature") / "bon_scores.parquet").to_pydict()
    m = np.stack([np.array(pool_t[f"score.{n}"]) for n in bt["ensemble-seeds-mean"]["members"]], 1)
    assert np.allclose(np.mean((m - m.mean(0)) / np.array(taus), 1), pool_t["score.ensemble-seeds-mean"])
    # the RL runs scale their members the same way: other trial keys, other runs
    assert len(list((tmp_path / "rl").glob("ensemble-seeds-wco-*"))) == 2
    assert all((d / "DONE.json").is_file() for d in (tmp_path / "rl").iterdir())
    assert len(list((tmp_path / "tune").glob("sweep.stale-*"))) == 1
