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
