"""Reward-model generalization (issue 21): the pure parts on hand-computed numbers, length control in
proxy training on a real tiny model, and the config's checks."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from orchestrator.config.schema import ConfigError, FrontierConfig
from orchestrator.config.schema import build as _build
from orchestrator.math import generalization as G
from orchestrator.run.generalization import rl_generalization


def build(d: dict) -> FrontierConfig:
    return _build(FrontierConfig, d)


def test_spearman_by_hand():
    # d = ranks apart by [0, 1, 1, 0]: 1 - 6 * 2 / (4 * 15)
    assert G.spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    # ties share their mean rank: ranks [1.5, 1.5, 3] vs [1, 2, 3] -> 1.5 / sqrt(1.5 * 2)
    assert G.spearman([1, 1, 2], [1, 2, 3]) == pytest.approx(1.5 / math.sqrt(3.0))
    assert G.spearman([1, 1, 1], [1, 2, 3]) is None  # constant side
    assert G.spearman([1, 2], [2, 1]) is None  # too few points


def test_length_model_within_family_slope_by_hand():
    # family a: x [0, 2], y [0, 1]; family b: x [0, 1], y [3, 2]
    # centred within family: a xc [-1, 1], yc [-.5, .5]; b xc [-.5, .5], yc [.5, -.5]
    # slope = sum xc yc / sum xc^2 = (0.5 + 0.5 - 0.25 - 0.25) / 2.5 = 0.2
    m = G.fit_length_model([0, 1, 3, 2], [0, 2, 0, 1], ["a", "a", "b", "b"])
    assert m.slope == pytest.approx(0.2)
    assert m.intercepts == {"a": pytest.approx(0.5 - 0.2 * 1), "b": pytest.approx(2.5 - 0.2 * 0.5)}
    assert m.ref == pytest.approx(0.75)
    # SST about 1.5: 2.25 + 0.25 + 2.25 + 0.25 = 5; family-only SSE 0.5 + 0.5 = 1; full SSE = 1 - 0.2 * 0.5 ... by hand:
    resid = [(-0.5 - 0.2 * -1), (0.5 - 0.2 * 1), (0.5 - 0.2 * -0.5), (-0.5 - 0.2 * 0.5)]
    assert m.r2 == pytest.approx(1 - sum(r * r for r in resid) / 5.0)
    assert m.r2_family_only == pytest.approx(1 - 1.0 / 5.0)
    assert m.n == 4


def test_length_model_recovers_a_planted_slope():
    rng = np.random.default_rng(0)
    fam = np.array(["x"] * 500 + ["y"] * 500)
    length = rng.integers(5, 40, 1000).astype(float)
    gold = np.where(fam == "x", 1.0, -2.0) - 0.03 * length + rng.normal(0, 0.01, 1000)
    m = G.fit_length_model(gold, length, fam)
    assert m.slope == pytest.approx(-0.03, abs=1e-3)
    assert m.intercepts["x"] == pytest.approx(1.0, abs=0.02) and m.intercepts["y"] == pytest.approx(-2.0, abs=0.02)
    lc = G.length_controlled(gold, length, m)
    assert lc.mean() == pytest.approx(gold.mean())  # the fitting samples' mean is unchanged
    assert abs(G.spearman(lc[fam == "x"], length[fam == "x"])) < 0.1  # length zeroed: no length left


def test_length_controlled_by_hand():
    m = G.LengthModel(slope=0.2, intercepts={}, ref=4.0, r2=0, r2_family_only=0, n=2)
    assert G.length_controlled([1.0, 2.0], [3.0, 5.0], m).tolist() == pytest.approx([1.2, 1.8])
    assert G.length_controlled_delta(0.5, 4.0, 0.05) == pytest.approx(0.3)


def test_length_preference_by_hand():
    # pair 1: b longer, P(a) = 1 -> P(longer) 0; pair 2: a longer, P(a) = .25; pair 3: equal, left out
    out = G.length_preference([3, 5, 4], [4, 2, 4], [1.0, 0.25, 0.5])
    assert out == {"share": pytest.approx(0.125), "pairs": 2}
    assert G.length_preference([3], [3], [1.0]) == {"share": None, "pairs": 0}


def test_domain_split_by_hand():
    delta = [1.0, -1.0, 2.0, 1.0, 1.0]
    label = [1.0, 1.0, 0.0, 1.0, 1.0]
    fam = ["p", "p", "q", "x", "x"]
    out = G.domain_split(delta, label, fam, ("x",), 0)
    assert out["in_domain"]["acc"] == pytest.approx(1 / 3)
    assert out["in_domain"]["pairs"] == 3
    assert out["out_of_domain"]["acc"] == pytest.approx(1.0)
    assert out["gap"] == pytest.approx(1 / 3 - 1)
    assert out["per_family"] == {"p": {"acc": 0.5, "pairs": 2, "held_out": False},
                                 "q": {"acc": 0.0, "pairs": 1, "held_out": False},
                                 "x": {"acc": 1.0, "pairs": 2, "held_out": True}}
    # nothing held out: the out-of-domain part is empty, the gap undefined
    none = G.domain_split(delta, label, fam, (), 0)
    assert none["out_of_domain"]["pairs"] == 0 and none["gap"] is None


def test_peaks_and_first_family_to_peak():
    assert G.empirical_peak([0, 1, 2], [0.0, 0.5, 0.4]) == {"kl": 1.0, "gold": 0.5, "index": 1}
    assert G.empirical_peak([], []) == {"kl": None, "gold": None, "index": None}
    assert G.first_to_peak({"a": {"kl": 2.0}, "b": {"kl": 1.0}, "c": {"kl": None}}) == "b"
    assert G.first_to_peak({"c": {"kl": None}}) is None


def _run(trial, pts):
    return {"trial": trial, "points": pts}


def test_rl_generalization_length_controlled_gold_and_families_by_hand():
    pts = [{"step": 0, "kl": 0.0, "gold": 0.0, "length": 10.0, "proxy_length_spearman": 0.1,
            "gold_family": {"a": 0.0, "b": 0.0}, "length_family": {"a": 10.0, "b": 10.0}},
           {"step": 5, "kl": 1.0, "gold": 0.5, "length": 14.0, "proxy_length_spearman": 0.4,
            "gold_family": {"a": 0.2, "b": 0.9}, "length_family": {"a": 12.0, "b": 16.0}},
           {"step": 10, "kl": 2.0, "gold": 0.6, "length": 20.0, "proxy_length_spearman": 0.7,
            "gold_family": {"a": -0.1, "b": 1.3}, "length_family": {"a": 15.0, "b": 25.0}},
           {"step": 15, "kl": 3.0, "gold": 0.55, "length": 22.0, "proxy_length_spearman": 0.8,
            "gold_family": {"a": -0.3, "b": 1.2}, "length_family": {"a": 16.0, "b": 28.0}}]
    out = rl_generalization([_run("t", pts), {"trial": "old", "points": [{"step": 0, "kl": 0, "gold": 0}]}], 0.05)
    assert set(out) == {"t"}  # a run from before issue 21 has no lengths: left out
    r = out["t"]
    # gold - 0.05 * (length - 10): 0, 0.5 - 0.2, 0.6 - 0.5, 0.55 - 0.6
    assert r["gold_lc"] == pytest.approx([0.0, 0.3, 0.1, -0.05])
    assert r["peak"]["kl"] == 2.0 and r["peak_lc"]["kl"] == 1.0  # length control moves the peak earlier
    assert r["length_change"] == pytest.approx(12.0)
    assert r["families"]["a"]["peak"]["kl"] == 1.0 and r["families"]["b"]["peak"]["kl"] == 2.0
    assert r["first_to_peak"] == "a"
    assert r["proxy_length_spearman"] == [0.1, 0.4, 0.7, 0.8]
    assert "fit" in r and "fit_lc" in r  # three points with kl > 0


# --------------------------------------------------------------------------------------------
# config


def test_config_checks_name_the_key():
    with pytest.raises(ConfigError, match="proxy.length_control"):
        build({"proxy": {"length_control": "sideways"}})
    with pytest.raises(ConfigError, match="proxy.holdout_families"):
        build({"proxy": {"holdout_families": ["poetry"]}})
    with pytest.raises(ConfigError, match="proxy.holdout_families"):
        build({"proxy": {"holdout_families": ["arith", "capital", "animal", "list", "unsafe", "chat", "unknown"]}})
    with pytest.raises(ConfigError, match="generalization.finetune_budgets"):
        build({"generalization": {"finetune_budgets": [0, 100]}})
    with pytest.raises(ConfigError, match="generalization.finetune_sizes"):
        build({"proxy": {"holdout_families": ["capital"]},
               "generalization": {"finetune_budgets": [0, 100], "finetune_sizes": ["9x9"]}})
    with pytest.raises(ConfigError, match="generalization.finetune_budgets"):
        build({"proxy": {"holdout_families": ["capital"]}, "generalization": {"finetune_budgets": [-1]}})


def test_new_proxy_keys_off_leave_the_proxy_stage_key_unchanged():
    """Cached proxies of earlier runs stay valid: the added keys at their off values are not in a
    proxy's stage key; on, they are."""
    base = build({}).proxy.per_proxy()
    assert not {"length_control", "length_head_lambda", "holdout_families"} & set(base)
    on = build({"proxy": {"length_control": "head", "holdout_families": ["capital"]}}).proxy.per_proxy()
    assert on["length_control"] == "head" and on["holdout_families"] == ["capital"] and "length_head_lambda" in on
    reg = build({"proxy": {"length_control": "regress"}}).proxy.per_proxy()
    assert "length_head_lambda" not in reg


# --------------------------------------------------------------------------------------------
# length control in training: a real tiny GPT-2 reward model on labels that prefer length alone


def _length_labels(n_prompts: int = 48):
    from orchestrator.data.tasks import synthetic as T

    rng = random.Random(0)
    rows = T.make_prompts(n_prompts, 3, families=("arith", "capital"))
    texts, a, b, p, group = [], [], [], [], []
    for i, r in enumerate(rows):
        resp = [T.make_demonstration(r["family"], r["meta"], rng, padding_k=k) for k in (0, 2, 5)]
        base = len(texts)
        texts += [(r["prompt"], x) for x in resp]
        for x, y in ((0, 1), (0, 2), (1, 2)):
            la, lb = len(resp[x].split()), len(resp[y].split())
            if la == lb:
                continue
            a.append(base + x)
            b.append(base + y)
            p.append(1.0 if la > lb else 0.0)  # the labeler prefers the longer response, whatever it says
            group.append(i)
    return {"texts": texts, "a": a, "b": b, "p_a": p, "group": group, "val": [False] * len(a)}


@pytest.fixture(scope="module")
def tok_dir(tmp_path_factory):
    from orchestrator.data.tasks import synthetic as T
    from orchestrator.nn.models import train_tokenizer

    d = tmp_path_factory.mktemp("tok")
    train_tokenizer(T.corpus(0, 300), d / "tok")
    return d / "tok"


@pytest.mark.slow
def test_length_control_takes_length_out_of_the_score(tok_dir):
    """Labels that prefer the longer response: plain Bradley-Terry learns a score that ranks by length;
    ``regress`` puts length in beta (> 0) and ``head`` in the length head, and the scores they keep
    correlate less with length. With ``head`` the saved model has one label again."""
    from actors.reward_ensemble import RewardEnsemble

    data = _length_labels()
    lengths = [len(r.split()) for _, r in data["texts"]]
    rows = {"prompt": [t[0] for t in data["texts"]], "response": [t[1] for t in data["texts"]]}
    rho, stats = {}, {}
    for mode in ("none", "regress", "head"):
        ens = RewardEnsemble("proxy", [{"name": "rm", "kind": "hf", "size": "1x16", "seed": 1}], str(tok_dir))
        stats[mode] = ens.train(data, 6, 8, 3e-3, 0, length_control=mode)["rm"]
        rho[mode] = G.spearman(ens.score(rows).values[:, 0], lengths)
        assert ens.members[0].config.num_labels == 1
    assert rho["none"] > 0.5, rho  # the plain proxy learned length
    assert stats["regress"]["length_beta"] > 0
    assert rho["regress"] < rho["none"] - 0.2, rho
    assert rho["head"] < rho["none"] - 0.2, rho
    assert stats["head"]["length_head_rho"] > 0.5


# --------------------------------------------------------------------------------------------
# end to end on the smoke run's stages


@pytest.mark.slow
def test_generalization_section_on_the_smoke_run(smoke_run, extended_smoke_run):
    """The plain smoke run has the length and domain analyses (every curve again in length-controlled
    gold, recomputed here from the pool); then, on the same early stages, ``capital`` held out,
    length-controlled proxies of both modes with their RL runs, and fine-tuning budgets."""
    import json

    import pyarrow.parquet as pq

    from orchestrator.math.bon import bon_curves, pool_matrix

    cfg0, run0, fr0 = smoke_run
    g = fr0["generalization"]
    names = [e["proxy"] for e in fr0["bon"]]
    assert set(g["length"]["bon_lc"]) == set(names)
    assert {*names, "gold"} <= set(g["length"]["spearman"])
    # length-controlled best-of-n of one proxy, by hand from the pool and the fitted slope
    bon_dir = next((run0 / "stages").glob("bon-*"))
    s = pq.read_table(bon_dir / "bon_scores.parquet").to_pydict()
    m = g["length"]["model"]
    s["score.gold"] = (np.asarray(s["score.gold"]) - m["slope"] * (np.asarray(s["n_tokens"], float)
                                                                     - m["ref_length"])).tolist()
    N = cfg0.sample.bon_responses_per_prompt
    name = names[0]
    _, gb = bon_curves(pool_matrix(s, f"score.{name}", N), pool_matrix(s, "score.gold", N))
    want = gb.mean(0) - gb[:, 0].mean()
    assert [p["gold"] for p in g["length"]["bon_lc"][name]["points"]] == pytest.approx(want.tolist())
    assert set(g["rl"]) == {e["trial"] for e in fr0["rl"]}
    for r in g["rl"].values():
        assert len(r["length"]) == len(r["kl"]) and set(r["families"])
    assert g["domain"]["holdout_families"] == [] and set(g["domain"]["rms"]) >= set(names)

    cfg, tmp_path, fr = extended_smoke_run  # capital held out, length controls, fine-tuning budgets
    g = fr["generalization"]
    by = {e["proxy"]: e for e in fr["bon"]}
    assert by["proxy-1x8-lc-regress"]["kind"] == "length_control" and by["proxy-1x8-lc-head"]["length_control"] == "head"
    assert {"proxy-1x8-lc-regress-kl0", "proxy-1x8-lc-head-kl0"} <= {e["trial"] for e in fr["rl"]}
    assert set(fr["checks"]["rl"]["ensembles_by_source"]) >= {"length-regress", "length-head"}
    # held out: every capital pair is scored as out of domain, none of them trained the proxies
    label_dir = next(d for d in (tmp_path / "stages").glob("label-*")  # (the smoke run's, copied, has no principles)
                     if "principles" in json.loads((d / "DONE.json").read_text())["inputs"])
    prefs = pq.read_table(label_dir / "preferences.parquet").to_pydict()
    prompts = pq.read_table(next((tmp_path / "stages").glob("task-*")) / "prompts.parquet").to_pydict()
    fam = dict(zip(prompts["prompt_id"], prompts["family"]))
    n_capital = sum(fam[p] == "capital" for p in prefs["prompt_id"])
    d = g["domain"]["rms"]["proxy-2x32"]
    assert g["domain"]["holdout_families"] == ["capital"]
    assert d["out_of_domain"]["pairs"] == n_capital > 0
    assert d["per_family"]["capital"]["held_out"] is True
    # fine-tuning: the largest proxy, one row per budget; k = 0 trains nothing
    rows = g["finetune"]["proxy-2x32"]["capital"]
    assert [r["k"] for r in rows] == [0, 20]
    assert rows[0]["steps"] == 0 and all(r["steps"] > 0 for r in rows[1:])
    assert [r["pairs_used"] for r in rows] == [0, 20]
    assert rows[0]["original"]["pairs"] == rows[1]["original"]["pairs"] > 0
    # jobs.seeds' per-seed numbers: differences of the section's own entries
    from orchestrator.report.pooled import generalization_effects

    eff = generalization_effects(fr)
    want = rows[1]["target"]["acc"] - rows[0]["target"]["acc"] if rows[1]["target"].get("acc") is not None else None
    assert eff["Fine-tune proxy-2x32 on capital, k=20: capital accuracy - k=0's"] == want
    assert eff["Domain: proxy-2x32 accuracy, in domain - out of domain"] == d["gap"]
    assert "BoN proxy-1x8-lc-head: peak gold - its size's own proxy's" in eff
    report = (tmp_path / "report.md").read_text()
    assert "## Generalization" in report and "### Domain fine-tuning" in report
    assert (tmp_path / "generalization.png").stat().st_size > 0 and (tmp_path / "finetune.png").stat().st_size > 0
    json.dumps(g)  # the section is plain JSON


def test_length_beta_is_the_logistic_regression_on_length_differences():
    from actors.reward_ensemble import fit_length_beta

    # sigma(beta * 1) = 0.75 and sigma(beta * -1) = 0.25: beta = ln 3
    assert fit_length_beta(np.array([1.0, -1.0]), np.array([0.75, 0.25]), ridge=0.0) == pytest.approx(math.log(3))
    assert fit_length_beta(np.array([2.0, -2.0]), np.array([0.25, 0.75]), ridge=0.0) == pytest.approx(-math.log(3) / 2)
    # length separates the labels: the ridge keeps beta finite and positive
    b = fit_length_beta(np.array([1.0, 2.0, -3.0]), np.array([1.0, 1.0, 0.0]))
    assert 0 < b < 100
    assert fit_length_beta(np.zeros(3), np.ones(3)) == 0.0
