"""The RL loop's pure functions against closed forms and hand computations."""

import math

import numpy as np
import pytest
import torch

from orchestrator.data.batch import BarrierError, Sealed, metrics_scope
from orchestrator.math import rl as R


def _categoricals():
    p = torch.tensor([0.5, 0.2, 0.2, 0.1], dtype=torch.float64)
    q = torch.tensor([0.25, 0.25, 0.25, 0.25], dtype=torch.float64)
    return p, q


def test_k1_k3_unbiased_on_categoricals_k2_matches_its_own_expectation():
    p, q = _categoricals()
    exact = float((p * (p / q).log()).sum())
    # exact expectations under x ~ p (enumerate the support)
    lp, lq = p.log(), q.log()
    for name in ("k1", "k3"):
        e = float((p * R.KL_ESTIMATORS[name](lp, lq)).sum())
        assert e == pytest.approx(exact, abs=1e-12), name
    e2 = float((p * R.kl_k2(lp, lq)).sum())
    assert e2 == pytest.approx(float((p * 0.5 * (lp - lq) ** 2).sum()), abs=1e-12)
    assert e2 != pytest.approx(exact, abs=1e-3)  # biased, as Schulman notes
    # Monte Carlo: sample means within 4 standard errors; k3 has lower variance than k1
    g = torch.Generator().manual_seed(0)
    x = torch.multinomial(p, 200_000, replacement=True, generator=g)
    k1, k3 = R.kl_k1(lp[x], lq[x]), R.kl_k3(lp[x], lq[x])
    for k in (k1, k3):
        assert abs(float(k.mean()) - exact) < 4 * float(k.std()) / math.sqrt(len(x))
    assert float(k3.var()) < float(k1.var())
    assert bool((k3 >= 0).all()) and bool((R.kl_k2(lp[x], lq[x]) >= 0).all())


def test_estimators_on_gaussians_closed_form():
    mu1, s1, mu2, s2 = 0.0, 1.0, 0.3, 1.2
    exact = R.gaussian_kl(mu1, s1, mu2, s2)
    g = torch.Generator().manual_seed(1)
    x = mu1 + s1 * torch.randn(400_000, generator=g, dtype=torch.float64)

    def logpdf(x, m, s):
        return -0.5 * ((x - m) / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)

    lp, lq = logpdf(x, mu1, s1), logpdf(x, mu2, s2)
    for name in ("k1", "k3"):
        k = R.KL_ESTIMATORS[name](lp, lq)
        assert abs(float(k.mean()) - exact) < 4 * float(k.std()) / math.sqrt(len(x)), name
    # k2 ~ KL to second order: close for nearby distributions, not for these
    near = logpdf(x, 0.1, 1.05)
    assert float(R.kl_k2(lp, near).mean()) == pytest.approx(R.gaussian_kl(0, 1, 0.1, 1.05), rel=0.1)


def test_sequence_kl_sums_masked_tokens():
    lp = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, 0.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-2.0, -1.0, -9.0]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0]]).float()
    assert R.sequence_kl(lp, ref, mask).tolist() == [0.5, 1.0]


def test_adaptive_controller_follows_ziegler():
    c = R.KLController(beta=0.1, target=6.0, horizon=10000)
    assert c.update(12.0, 100) == pytest.approx(0.1 * (1 + 0.2 * 100 / 10000))  # error clipped to +0.2
    c = R.KLController(beta=0.1, target=6.0, horizon=10000)
    assert c.update(5.4, 100) == pytest.approx(0.1 * (1 - 0.1 * 100 / 10000))
    fixed = R.KLController(beta=0.05)
    assert fixed.update(100.0, 1000) == 0.05
    # closed loop on a toy "policy" whose KL falls as beta rises: beta settles where KL = target
    c = R.KLController(beta=0.01, target=2.0, horizon=1000)
    for _ in range(3000):
        c.update(0.1 / c.beta, 64)
    assert 0.1 / c.beta == pytest.approx(2.0, rel=0.05)
    s = c.state_dict()
    d = R.KLController(0.0)
    d.load_state_dict(s)
    assert d == c


def test_ensemble_objectives():
    v = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    assert R.aggregate(v, "mean").tolist() == [2.0, 2.0]
    assert R.aggregate(v, "wco").tolist() == [1.0, 2.0]
    assert R.aggregate(v, "uwo", 0.5).tolist() == [2.0 - 0.5 * 1.0, 2.0]
    with pytest.raises(ValueError):
        R.aggregate(v, "max")


def test_rloo_and_grpo_advantages():
    r = torch.tensor([1.0, 2.0, 6.0, 0.0, 4.0, 4.0])
    g = torch.tensor([0, 0, 0, 1, 1, 1])
    adv = R.rloo_advantages(r, g)
    assert adv.tolist() == pytest.approx([1 - 4, 2 - 3.5, 6 - 1.5, 0 - 4, 4 - 2, 4 - 2])
    gr = R.grpo_advantages(r, g)
    assert float(gr[:3].mean()) == pytest.approx(0, abs=1e-6) and float(gr[:3].std(unbiased=False)) == pytest.approx(1, abs=1e-3)


def test_token_rewards_and_gae_by_hand():
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    kl = torch.tensor([[0.1, 0.2, 0.3], [0.5, 9.0, 9.0]])
    r = R.token_rewards(torch.tensor([1.0, 2.0]), kl, mask, beta=0.5)
    assert r.flatten().tolist() == pytest.approx([-0.05, -0.1, 1 - 0.15, 2 - 0.25, 0, 0])
    values = torch.tensor([[0.2, 0.4, 0.6], [1.0, 5.0, 5.0]])
    adv, ret = R.gae(r, values, mask, gamma=1.0, lam=0.5)
    d2 = float(r[0, 2]) - 0.6
    d1 = float(r[0, 1]) + 0.6 - 0.4
    d0 = float(r[0, 0]) + 0.4 - 0.2
    assert adv[0].tolist() == pytest.approx([d0 + 0.5 * (d1 + 0.5 * d2), d1 + 0.5 * d2, d2])
    assert adv[1].tolist() == pytest.approx([float(r[1, 0]) - 1.0, 0, 0])
    assert ret[0].tolist() == pytest.approx((adv[0] + values[0]).tolist())


def test_clipped_policy_loss():
    old = torch.zeros(1, 2)
    logp = torch.log(torch.tensor([[1.5, 0.5]]))
    adv = torch.tensor([[1.0, -1.0]])
    loss, st = R.clipped_policy_loss(logp, old, adv, torch.ones(1, 2), clip=0.2)
    # token 1: ratio 1.5, adv +1 -> clipped at 1.2; token 2: ratio .5, adv -1 -> clipped at .8
    assert float(loss) == pytest.approx((-1.2 + 0.8) / 2)
    assert st["clipfrac"] == 1.0


def test_sealed_gold_refuses_every_read_outside_metrics():
    s = Sealed(np.array([0.5, -0.25]))
    for read in (lambda: np.asarray(s), lambda: s + 1, lambda: np.mean(s), lambda: float(s[0]), lambda: list(s),
                 lambda: s * torch.ones(2)):
        with pytest.raises(BarrierError):
            read()
    with pytest.raises((BarrierError, ValueError, TypeError)):
        torch.as_tensor(s)
    with metrics_scope():
        assert np.asarray(s).tolist() == [0.5, -0.25] and float(np.mean(s)) == 0.125
    with pytest.raises(BarrierError):
        np.asarray(s)  # the scope closed again
