"""The gold-free detectors and their scoring (issue 19), on hand-made curves with known answers."""

import math

import numpy as np
import pytest

from orchestrator.math import monitor as M


def test_first_alarm_needs_patience_and_ignores_nan():
    s = [0.1, 0.9, 0.2, 0.8, float("nan"), 0.9, 0.95, 0.99]
    assert M.first_alarm(s, M.Rule(0.5, "above", 1)) == 1
    assert M.first_alarm(s, M.Rule(0.5, "above", 2)) == 6  # 0.8 then NaN breaks the run; 0.9, 0.95
    assert M.first_alarm(s, M.Rule(0.05, "below", 1)) is None
    with pytest.raises(ValueError):
        M.Rule(1.0, "sideways")


def test_independent_gap_finds_a_planted_divergence_at_its_step():
    """The proxy rises 0.2 per evaluation throughout; the independent RMs track it until evaluation 6
    and stay flat after: the gap grows 0.2 per evaluation from 6 on and first exceeds 0.5 at
    evaluation 9 (0.6; 0.4 at 8), so the rule alarms at 9 with patience 1 and at 10 with patience 2."""
    t = np.arange(15)
    proxy = 0.2 * t
    ind = np.where(t <= 6, 0.2 * t, 1.2)
    ind2 = np.stack([ind + 0.3, ind - 0.3], 1)  # offsets cancel: only rises count
    sig = M.independent_gap(proxy, ind2)
    assert np.allclose(sig[:7], 0) and np.allclose(sig[7:], 0.2 * (t[7:] - 6))
    # patience 2: 0.6 (evaluation 9) and 0.8 (10) are the first two in a row above 0.5 -> known at 10
    assert M.first_alarm(sig, M.Rule(0.5, "above", 2)) == 10
    assert M.first_alarm(sig, M.Rule(0.5, "above", 1)) == 9


def test_kl_acceleration_marks_the_step_the_rate_quadruples():
    steps = np.arange(0, 20, 2)  # an evaluation every 2 steps
    kl = np.concatenate([0.5 * steps[:6], 0.5 * steps[5] + 2.0 * (steps[6:] - steps[5])])
    sig = M.kl_acceleration(steps, kl, early=2)
    assert np.isnan(sig[:3]).all()  # evaluation 0 and the two baseline intervals
    assert np.allclose(sig[3:6], 1.0) and np.allclose(sig[6:], 4.0)
    assert M.first_alarm(sig, M.Rule(2.0, "above", 1)) == 6


def test_proxy_slope_recovers_the_rl_form_and_its_bend():
    """A proxy exactly on R(d) = d (alpha - beta log d): the fit recovers (alpha, beta), and the
    signal equals the analytic marginal gain relative to the first fitted point's."""
    alpha, beta = 1.0, 0.4
    kl = np.array([0.0, 0.05, 0.2, 0.5, 1.0, 2.0, 4.0, 8.0, 12.0])
    d = np.sqrt(kl)
    r = np.where(d > 0, d * (alpha - beta * np.log(np.maximum(d, 1e-12))), 0.0) + 3.0  # any offset
    a, b = M.fit_rl_form(d, r - 3.0)
    assert a == pytest.approx(alpha, abs=1e-9) and b == pytest.approx(beta, abs=1e-9)
    sig = M.proxy_slope(kl, r)
    gain = alpha - beta * (np.log(d[1:]) + 1.0)
    first = 3  # evaluations 1..3 are the first three with KL > 0
    assert np.isnan(sig[:first]).all()
    assert np.allclose(sig[first:], gain[first - 1:] / gain[first - 1])
    want = next(i for i in range(first, len(kl)) if sig[i] < 0.25)
    assert M.first_alarm(sig, M.Rule(0.25, "below", 1)) == want


def test_entropy_and_length_signals():
    assert np.allclose(M.relative([2.0, 1.8, 1.2]), [1.0, 0.9, 0.6])
    assert M.first_alarm(M.relative([2.0, 1.8, 1.2, 1.0]), M.Rule(0.7, "below", 1)) == 2
    assert np.allclose(M.length_drift([10, 11, 14, 7]), [0.0, 0.1, 0.4, 0.3])


def test_outlier_share_matches_the_chi2_answer_with_and_without_a_shift():
    rng = np.random.default_rng(0)
    ref, held, same = (rng.normal(size=(400, 16)) for _ in range(3))
    share = M.outlier_share(ref, held, same)
    assert 0.02 < share < 0.10  # ~0.05 by construction
    # 3 s.d. along one direction: the squared distance is noncentral chi2(16, 9), beyond the central
    # chi2(16) 95th percentile with probability 0.41 (scipy.stats.ncx2); 6 s.d.: 0.99
    from scipy.stats import chi2, ncx2

    for shift, tol in ((3.0, 0.08), (6.0, 0.03)):
        want = ncx2.sf(chi2.ppf(0.95, 16), 16, shift ** 2)
        got = M.outlier_share(ref, held, rng.normal(size=(400, 16)) + shift * np.eye(16)[0])
        assert abs(got - want) < tol, (shift, got, want)


def _run(alarm_signal):
    """Gold rises to its peak at evaluation 5 (step 50) and falls; KL grows 0.5 per evaluation."""
    gold = np.array([0.0, 0.2, 0.5, 0.8, 1.0, 1.1, 0.9, 0.6, 0.3])
    return {"trial": "t", "steps": 10 * np.arange(9), "kl": 0.5 * np.arange(9), "gold": gold, "gold_se": 0.05,
            "signal": alarm_signal}


def test_scoring_bookkeeping_on_a_hand_made_record():
    early = np.array([0, 0, 0, 1, 1, 1, 1, 1, 1.0])  # alarm at evaluation 3 (patience 1)
    rec = M.score_run("t", **{k: v for k, v in _run(None).items() if k not in ("trial", "signal")},
                      alarm=M.first_alarm(early, M.Rule(0.5)))
    assert rec["alarm_step"] == 30 and rec["gold_peak_step"] == 50 and rec["lead_evals"] == 2
    assert rec["lead_kl"] == pytest.approx(1.0) and rec["gold_at_alarm"] == 0.8 and rec["gold_at_peak"] == 1.1
    assert not rec["false_alarm"] and rec["gold_kept_frac"] == pytest.approx(0.8 / 1.1)
    too_soon = M.score_run("t", 10 * np.arange(9), 0.5 * np.arange(9), _run(None)["gold"], 0.05, alarm=0)
    assert too_soon["false_alarm"]  # gold had not risen 2 s.e.
    late = M.score_run("t", 10 * np.arange(9), 0.5 * np.arange(9), _run(None)["gold"], 0.05, alarm=7)
    assert late["lead_evals"] == -2 and not late["false_alarm"]
    flat = np.array([0.0, 0.5, 0.9, 1.0, 1.0, 1.02, 1.01, 1.0, 1.0])  # never falls 2 s.e. below its peak
    rising = M.score_run("t", 10 * np.arange(9), 0.5 * np.arange(9), flat, 0.05, alarm=4)
    assert rising["false_alarm"] and not rising["gold_falls"]
    none = M.score_run("t", 10 * np.arange(9), 0.5 * np.arange(9), _run(None)["gold"], 0.05, alarm=None)
    assert none["alarm_step"] is None and none["gold_kept_frac"] == pytest.approx(0.3 / 1.1)


def test_score_detector_aggregates_over_runs():
    runs = [_run(np.array([0, 0, 0, 1, 1, 1, 1, 1, 1.0])),  # lead 2
            _run(np.array([0, 0, 0, 0, 0, 0, 0, 1, 1.0])),  # lead -2 (late, not false)
            _run(np.array([1, 1, 1, 1, 1, 1, 1, 1, 1.0])),  # at evaluation 0: false
            _run(np.zeros(9))]  # no alarm
    out = M.score_detector("x", M.Rule(0.5), runs)
    assert out["alarms"] == 3 and out["lead_median"] == 0.0 and out["warned_before_peak"] == 1
    assert out["false_alarm_rate"] == pytest.approx(1 / 3)
    kept = [0.8 / 1.1, 0.6 / 1.1, 0.0, 0.3 / 1.1]
    assert out["gold_kept_frac"] == pytest.approx(float(np.mean(kept)))
    assert [r["trial"] for r in out["runs"]] == ["t"] * 4 and not math.isnan(out["threshold"])


def test_calibrate_picks_the_threshold_within_the_false_alarm_rate_that_keeps_most_gold():
    """Two falling runs and one flat run. The signal rises to 0.4 in every run from evaluation 2 and
    to 0.9 at evaluation 3 in the falling runs only: 0.3 alarms in all three (the flat run's alarm is
    false: rate 1/3), 0.6 only in the falling ones at evaluation 3 (lead 2, rate 0)."""
    sig_fall = np.array([0, 0, 0.4, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9])
    sig_flat = np.array([0, 0, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4])
    flat = {**_run(sig_flat), "gold": np.array([0.0, 0.5, 0.9, 1.0, 1.0, 1.02, 1.01, 1.0, 1.0])}
    runs = [_run(sig_fall), _run(sig_fall), flat]
    c = M.calibrate("x", "above", 1, runs, [0.3, 0.6, 0.95])
    assert c["threshold"] == 0.6 and c["patience"] == 1
    assert c["best"]["false_alarm_rate"] == 0.0 and c["best"]["warned_before_peak"] == 2
    assert [x["threshold"] for x in c["scan"]] == [0.3, 0.6, 0.95]
    assert c["scan"][0]["false_alarm_rate"] == pytest.approx(1 / 3)
    assert c["scan"][2]["alarms"] == 0  # 0.95 never alarms: not a candidate
    loose = M.calibrate("x", "above", (1, 2), runs, [0.3, 0.6], max_false_alarm=1.0)
    assert loose["threshold"] is not None and {x["patience"] for x in loose["scan"]} == {1, 2}
    assert M.calibrate("x", "above", 1, runs, [0.95])["threshold"] is None


def test_pool_monitor_cross_validates_each_seed_on_the_others():
    from orchestrator.report.seeds import pool_monitor

    def frontier(sig_fall):
        rl = []
        for i, sig in enumerate([sig_fall, sig_fall]):
            r = _run(sig)
            rl.append({"trial": f"t{i}", "points": [{"step": s, "kl": k, "gold": g}
                                                     for s, k, g in zip(r["steps"], r["kl"], r["gold"])],
                       "gold_se_per_eval": [0.05] * 9, "monitor": {"x": list(map(float, sig))}})
        recs = [M.score_run(e["trial"], r["steps"], r["kl"], r["gold"], 0.05, 3) for e in rl]
        return {"rl": rl, "monitor": {"detectors": [{"name": "independent_gap", "rule": "r", "runs": recs}]}}

    fr = frontier(np.array([0, 0, 0.4, 0.9, 0.9, 0.9, 0.9, 0.9, 0.9]))
    for e in fr["rl"]:
        e["monitor"] = {"independent_gap": e["monitor"]["x"]}
    out = pool_monitor([{"seed": 1, "frontier": fr}, {"seed": 2, "frontier": fr}])["independent_gap"]
    assert out["pooled"]["n_runs"] == 4 and out["pooled"]["alarms"] == 4
    assert set(out["per_seed"]) == {"1", "2"}
    cv = out["cross_validated"]
    assert [f["held_out"] for f in cv["folds"]] == [1, 2] and all(f["threshold"] is not None for f in cv["folds"])
    assert cv["held_out"]["n_runs"] == 4 and cv["held_out"]["false_alarm_rate"] == 0.0
    # no leakage: each fold's rule was chosen on the other seed's 2 runs, never on its own
    assert all(f["calibration"]["alarms"] <= 2 for f in cv["folds"])
    one = pool_monitor([{"seed": 1, "frontier": fr}])["independent_gap"]
    assert "cross_validated" not in one  # a single seed has nothing to hold out


def test_signals_from_eval_records_never_read_gold_and_match_post_hoc():
    evals = [{"step": 2 * i, "kl": 0.1 * i * i, "proxy": 0.3 * i, "tokens": 10 + i, "entropy": 3.0 - 0.2 * i,
              "proxy_spread": 0.1 + 0.02 * i, "gold": float("nan"), "gold_se": float("nan")} for i in range(8)]
    full = M.signals(evals)
    assert set(full) == set(M.DETECTORS)
    assert all(math.isnan(v) for v in full["independent_gap"]) and all(math.isnan(v) for v in full["latent_outlier"])
    assert full["entropy"][3] == pytest.approx(2.4 / 3.0) and full["length_drift"][2] == pytest.approx(0.2)
    # the live value at each evaluation (computed on the records so far) is the post-hoc value
    for t in range(1, len(evals) + 1):
        live = M.signals(evals[:t])
        for name in M.DETECTORS:
            a, b = live[name][-1], full[name][t - 1]
            assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b), (name, t)
    assert not any(k.startswith("gold") for k in M.READS)


def test_monitor_section_scores_each_detector_and_lists_the_absent():
    base = _run(None)
    runs = [{**{k: base[k] for k in ("trial", "steps", "kl", "gold", "gold_se")},
             "signals": {"entropy": [1.0, 0.9, 0.8, 0.6, 0.5, 0.5, 0.5, 0.5, 0.5]}}]
    out = M.monitor_section(M.DEFAULT_RULES, runs)
    assert [d["name"] for d in out["detectors"]] == ["entropy"]
    d = out["detectors"][0]  # < 0.7 twice in a row: 0.6 (evaluation 3), 0.5 (4) -> alarm at 4
    assert d["runs"][0]["alarm_step"] == 40 and d["lead_median"] == 1.0 and d["false_alarm_rate"] == 0.0
    assert set(out["not_evaluated"]) == set(M.DETECTORS) - {"entropy"}
    # the baseline beside the detectors: the run to its end keeps (0.3 - 0) / (1.1 - 0) of the gain
    assert out["no_stop"] == {"gold_kept_frac": pytest.approx(0.3 / 1.1), "n_runs": 1, "runs_gold_falls": 1}


def test_monitor_stopper_stops_at_the_alarm_and_proxy_keys_stay_refused():
    """``sweep.stopper.metric: monitor/<detector>``: the trial stops at the evaluation where the rule
    fires (each evaluation counted once, however often Tune sees it); gold keys stay allowed, proxy
    keys refused by key."""
    from orchestrator.config.schema import ConfigError, FrontierConfig, build
    from orchestrator.run.sweep import MonitorStopper, _stopper

    cfg = build(FrontierConfig, {"sweep": {"stopper": {"enabled": True, "metric": "monitor/entropy"}}})
    stop = _stopper(cfg).inner
    assert isinstance(stop, MonitorStopper) and stop.rule == M.DEFAULT_RULES["entropy"]
    signal = [1.0, 0.9, 0.65, 0.65, 0.6, 0.5]  # < 0.7 from evaluation 2: patience 2 -> stop at 3
    decisions = []
    for i, v in enumerate(signal):
        for _ in range(2):  # steps between evaluations repeat the last evaluation's keys
            decisions.append((i, stop("t", {"eval/step": i, "eval/monitor/entropy": v})))
    assert next(i for i, d in decisions if d) == M.first_alarm(signal, stop.rule) == 3
    assert not stop("other", {"eval/step": 0, "eval/monitor/entropy": 0.1})  # per trial
    build(FrontierConfig, {"sweep": {"stopper": {"metric": "eval/gold"}}})
    for bad in ("eval/proxy", "monitor/proxy", "proxy/objective"):
        with pytest.raises(ConfigError, match="sweep.stopper.metric"):
            build(FrontierConfig, {"sweep": {"stopper": {"metric": bad}}})


def test_reward_member_features_are_its_last_hidden_layer_at_the_scoring_token(tmp_path, monkeypatch):
    """``RewardEnsemble.features``: a member's last hidden layer at the last non-pad token -- the same
    vector one unpadded forward of that row gives -- for rows of different lengths; the oracle has no
    latent space and says so."""
    import torch

    from actors.reward_ensemble import RewardEnsemble
    from orchestrator.nn import tiny

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    ens = RewardEnsemble("proxy", [{"name": "rm", "kind": "hf", "path": tiny.resolve("tiny:llama-2x32-rm")}])
    rows = {"prompt": ["a b", "c d e f g"], "response": ["x", "y z w v"]}
    f = ens.features(rows)
    assert f.shape == (2, 32)
    c, model = ens.codecs[0], ens.members[0]
    for i in range(2):
        ids = torch.tensor([c.score_input(rows["prompt"][i], rows["response"][i])])
        with torch.no_grad():
            h = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0, -1].numpy()
        assert np.allclose(f[i], h, atol=1e-5)
    with pytest.raises(ValueError, match="no latent space"):
        RewardEnsemble("gold", [{"name": "oracle", "kind": "oracle"}]).features(
            {**rows, "family": ["x", "x"], "meta": [{}, {}]})
