"""The math as pure functions, against brute force and hand computations."""

import math

import numpy as np
import pytest
import torch

from orchestrator.math.bon import bon_brute_force, bon_curves, bon_weights, kl_bon
from orchestrator.math.calibration import bradley_terry_loss, ece, pair_accuracy
from orchestrator.math.scaling import fit_bon, fit_rl, spearman


def test_kl_bon_values():
    assert kl_bon(1) == 0.0
    assert round(kl_bon(1000), 2) == 5.91
    assert kl_bon(2) == pytest.approx(math.log(2) - 0.5)


@pytest.mark.parametrize("N", [2, 5, 9, 12])
def test_unbiased_estimator_equals_brute_force(N):
    rng = np.random.default_rng(N)
    for _ in range(3):
        proxy = rng.normal(size=N)
        gold = rng.normal(size=N)
        pb, gb = bon_curves(proxy[None], gold[None])
        for n in range(1, N + 1):
            p_bf, g_bf = bon_brute_force(proxy, gold, n)
            assert abs(pb[0, n - 1] - p_bf) < 1e-9
            assert abs(gb[0, n - 1] - g_bf) < 1e-9


def test_estimator_with_ties_matches_brute_force():
    proxy = np.array([0.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0])
    gold = np.array([5.0, -1.0, 2.0, 0.5, -3.0, 1.0, 0.0])
    pb, gb = bon_curves(proxy[None], gold[None])
    for n in range(1, 8):
        assert abs(gb[0, n - 1] - bon_brute_force(proxy, gold, n)[1]) < 1e-9


def test_weights_are_distributions_and_stable_for_large_N():
    w = bon_weights(4096, 1000)
    assert np.allclose(w.sum(1), 1.0) and np.isfinite(w).all()
    assert w[0].std() < 1e-12  # n = 1: uniform


def test_proxy_of_best_of_n_is_monotone():
    rng = np.random.default_rng(0)
    proxy = rng.normal(size=(20, 64))
    pb, _ = bon_curves(proxy, rng.normal(size=(20, 64)))
    assert np.all(np.diff(pb.mean(0)) >= -1e-12)


def test_fit_bon_recovers_planted_coefficients():
    rng = np.random.default_rng(1)
    alpha, beta = 0.8, 0.35
    kl = kl_bon(np.arange(1, 257))
    d = np.sqrt(kl)
    r = d * (alpha - beta * d) + rng.normal(scale=0.01, size=d.shape)
    f = fit_bon(kl, r)
    assert f.alpha == pytest.approx(alpha, abs=0.02) and f.beta == pytest.approx(beta, abs=0.02)
    assert f.r2 > 0.98
    assert f.kl_peak == pytest.approx((alpha / (2 * beta)) ** 2, rel=0.1)
    assert f.gold_peak == pytest.approx(alpha**2 / (4 * beta), rel=0.05)


def test_fit_rl_recovers_planted_coefficients():
    rng = np.random.default_rng(2)
    alpha, beta = 0.5, 0.4
    kl = np.linspace(0.05, 30, 200)
    d = np.sqrt(kl)
    r = d * (alpha - beta * np.log(d)) + rng.normal(scale=0.01, size=d.shape)
    f = fit_rl(kl, r)
    assert f.alpha == pytest.approx(alpha, abs=0.02) and f.beta == pytest.approx(beta, abs=0.02)
    dstar = math.exp(alpha / beta - 1)
    assert f.kl_peak == pytest.approx(dstar**2, rel=0.1)


def test_fit_bon_without_a_peak_says_so():
    kl = kl_bon(np.arange(1, 100))
    f = fit_bon(kl, np.sqrt(kl) * 0.5 + 0.05 * kl)  # convex: never turns down
    assert f.kl_peak is None and f.gold_peak is None


def test_bradley_terry_loss_by_hand():
    ra, rb = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    hard = bradley_terry_loss(ra, rb, torch.tensor([1.0, 1.0]))
    by_hand = (-math.log(1 / (1 + math.exp(-1.0))) - math.log(1 / (1 + math.exp(1.0)))) / 2
    assert float(hard) == pytest.approx(by_hand, rel=1e-6)
    soft = bradley_terry_loss(torch.tensor([0.5]), torch.tensor([0.0]), torch.tensor([0.7]))
    s = 1 / (1 + math.exp(-0.5))
    assert float(soft) == pytest.approx(-(0.7 * math.log(s) + 0.3 * math.log(1 - s)), rel=1e-6)


def test_pair_accuracy_and_ece():
    assert pair_accuracy([1, 0, 3], [0, 1, 2], [1.0, 1.0, 0.5]) == 0.5
    assert ece(np.array([0.9, 0.9, 0.1, 0.1]), np.array([1, 1, 0, 0])) == pytest.approx(0.1)


def test_spearman_ranks_missing_peaks_highest():
    assert spearman([1, 2, 3], [0.1, 0.5, None]) == pytest.approx(1.0)
    assert spearman([1, 2, 3], [None, 0.5, 0.1]) == pytest.approx(-1.0)


def test_weighted_fit_recovers_planted_coefficients_on_bon_grid():
    from orchestrator.math.scaling import d_spacing_weights

    rng = np.random.default_rng(4)
    kl = kl_bon(np.arange(1, 257))
    d = np.sqrt(kl)
    r = d * (0.6 - 0.25 * d) + rng.normal(scale=0.01, size=d.shape)
    w = d_spacing_weights(kl)
    assert w.sum() == pytest.approx(d[-1] - d[0])
    assert w[1] > 10 * w[-1]  # the sparse low-n points count for more
    f = fit_bon(kl, r, w)
    assert f.alpha == pytest.approx(0.6, abs=0.03) and f.beta == pytest.approx(0.25, abs=0.02) and f.r2 > 0.95


def test_exact_bon_kl_by_enumeration_and_below_the_bound():
    """Exact KL of best-of-n with the pool as base equals enumerating every sequence of n draws
    (duplicates as one outcome), and stays below ln n - (n-1)/n (which it approaches for a large
    duplicate-free pool)."""
    from itertools import product
    from math import log

    from orchestrator.math.bon import bon_kl_exact

    rng = np.random.default_rng(0)
    texts = np.array([0, 1, 1, 2, 2, 2])  # duplicates share a score, as real ones do
    N = len(texts)
    score = rng.normal(size=3)[texts]
    gold = np.zeros(N)
    exact = bon_kl_exact(score[None], gold[None], texts[None])
    q = np.bincount(texts) / N
    for n in range(1, 5):
        p = np.zeros(3)
        for draw in product(range(N), repeat=n):
            p[texts[max(draw, key=lambda j: (score[j], j))]] += N ** -n
        want = sum(pi * log(pi / qi) for pi, qi in zip(p, q) if pi > 0)
        assert abs(exact[n - 1] - want) < 1e-9
    distinct = bon_kl_exact(rng.normal(size=(2, 4096)), np.zeros((2, 4096)), np.tile(np.arange(4096), (2, 1)), 64)
    bound = kl_bon(np.arange(1, 65))
    assert distinct[0] == 0 and np.all(distinct <= bound + 1e-12) and np.allclose(distinct, bound, atol=0.02)
