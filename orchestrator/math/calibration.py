"""Reward-model losses and calibration (Gao et al. 2022; SCIENCE.md "Calibration").

Bradley-Terry: p(a > b) = sigma(r_a - r_b). Hard label loss -log sigma(r_w - r_l); a soft label p
gives the cross-entropy -[p log sigma(d) + (1 - p) log sigma(-d)] with d = r_a - r_b.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def bradley_terry_loss(r_a: torch.Tensor, r_b: torch.Tensor, p_a: torch.Tensor) -> torch.Tensor:
    """Mean soft Bradley-Terry loss over pairs. r_a, r_b, p_a: ``[pairs]``; p_a in [0, 1]."""
    d = r_a - r_b
    return -(p_a * F.logsigmoid(d) + (1.0 - p_a) * F.logsigmoid(-d)).mean()


def pair_accuracy(r_a: np.ndarray, r_b: np.ndarray, p_a: np.ndarray) -> float:
    """Share of pairs with p_a != 0.5 where the RM prefers the labelled winner."""
    r_a, r_b, p_a = (np.asarray(x, float) for x in (r_a, r_b, p_a))
    keep = p_a != 0.5
    return float(np.mean((r_a[keep] > r_b[keep]) == (p_a[keep] > 0.5))) if keep.any() else float("nan")


def ece(p_hat: np.ndarray, y: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error over equal-width bins: sum_b n_b/n |mean p_hat_b - mean y_b|."""
    p_hat, y = np.asarray(p_hat, float), np.asarray(y, float)
    idx = np.minimum((p_hat * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            total += m.sum() / len(p_hat) * abs(p_hat[m].mean() - y[m].mean())
    return float(total)


# --------------------------------------------------------------------------------------------
# calibration of a reward model on held-out pairs (issue 20): P(a preferred) = sigma(delta / tau)


def _sig(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, float)))


def nll(delta: np.ndarray, label: np.ndarray, tau: float = 1.0) -> float:
    """Mean negative log-likelihood of soft labels ``label`` = P(a preferred) under
    sigma(delta / tau), delta = r(a) - r(b): -[y log s + (1 - y) log(1 - s)]."""
    z = np.asarray(delta, float) / tau
    y = np.asarray(label, float)
    # log sigma(z) = -log(1 + e^-z), stably
    return float(np.mean(y * np.logaddexp(0.0, -z) + (1.0 - y) * np.logaddexp(0.0, z)))


def brier(delta: np.ndarray, label: np.ndarray, tau: float = 1.0) -> float:
    """Mean squared error of sigma(delta / tau) against the label."""
    return float(np.mean((_sig(np.asarray(delta, float) / tau) - np.asarray(label, float)) ** 2))


def fit_tau(delta: np.ndarray, label: np.ndarray, lo: float = 1e-3, hi: float = 1e3, iters: int = 200) -> float:
    """The temperature minimizing ``nll(delta, label, tau)`` (Guo et al. 2017's temperature scaling,
    for a Bradley-Terry reward model): golden-section search on log tau over [lo, hi] (NLL is convex
    in 1 / tau, so unimodal in log tau). All deltas 0: tau is undetermined and 1.0 is returned."""
    d = np.asarray(delta, float)
    if not np.any(d != 0):
        return 1.0
    a, b = np.log(lo), np.log(hi)
    g = (np.sqrt(5.0) - 1.0) / 2.0
    c, e = b - g * (b - a), a + g * (b - a)
    fc, fe = nll(d, label, np.exp(c)), nll(d, label, np.exp(e))
    for _ in range(iters):
        if fc <= fe:
            b, e, fe = e, c, fc
            c = b - g * (b - a)
            fc = nll(d, label, np.exp(c))
        else:
            a, c, fc = c, e, fe
            e = a + g * (b - a)
            fe = nll(d, label, np.exp(e))
        if b - a < 1e-9:
            break
    return float(np.exp((a + b) / 2.0))


def reliability(delta: np.ndarray, label: np.ndarray, tau: float = 1.0, bins: int = 10) -> list[dict]:
    """The reliability diagram's bins (equal width in the predicted probability sigma(delta / tau)):
    ``[{lo, hi, n, p_mean, y_mean}]``, empty bins with n 0 and means None."""
    p = _sig(np.asarray(delta, float) / tau)
    y = np.asarray(label, float)
    idx = np.minimum((p * bins).astype(int), bins - 1)
    out = []
    for k in range(bins):
        m = idx == k
        out.append({"lo": k / bins, "hi": (k + 1) / bins, "n": int(m.sum()),
                    "p_mean": float(p[m].mean()) if m.any() else None,
                    "y_mean": float(y[m].mean()) if m.any() else None})
    return out


def calibration_summary(delta: np.ndarray, label: np.ndarray, seed: int, bins: int = 10) -> dict:
    """frontier.json's ``calibration`` of one reward model on its held-out pairs: acc, nll, brier and
    ece at tau = 1 over all pairs; tau fitted on a random half (``seed``) and nll_tau, ece_tau on the
    other half. acc counts a pair right when sigma(delta) and the label fall on the same side of 0.5
    (labels of exactly 0.5 are left out of acc)."""
    d, y = np.asarray(delta, float), np.asarray(label, float)
    if len(d) < 2:
        raise ValueError(f"calibration needs at least 2 held-out pairs, got {len(d)}")
    hard = y != 0.5
    acc = float(np.mean((d[hard] > 0) == (y[hard] > 0.5))) if hard.any() else float("nan")
    perm = np.random.default_rng(seed).permutation(len(d))
    fit, held = perm[: len(d) // 2], perm[len(d) // 2:]
    tau = fit_tau(d[fit], y[fit])
    return {"tau": tau, "acc": acc, "nll": nll(d, y), "brier": brier(d, y), "ece": ece(_sig(d), y, bins),
            "nll_tau": nll(d[held], y[held], tau), "ece_tau": ece(_sig(d[held] / tau), y[held], bins),
            "pairs": int(len(d))}
