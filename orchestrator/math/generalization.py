"""Reward-model generalization (issue 21; SCIENCE.md "Generalization"): length and domain.

* Length. Singhal et al. (2023, "A long way to go: investigating length correlations in RLHF")
  found most of the reward RLHF gains is length; length-controlled AlpacaEval (Dubois et al. 2024)
  fits a regression of the judge's preference with a length term and zeroes that term at evaluation,
  which raised its agreement with human rankings from 0.94 to 0.98. Here gold is regressed on
  response length with one intercept per prompt family (``fit_length_model``) on the SFT policy's
  samples, and every curve is also read in *length-controlled gold*,
  ``gold - slope * (length - mean SFT length)`` (``length_controlled``): the length term zeroed
  relative to where the SFT policy stands, so the two curves agree at n = 1 / KL = 0.
* Domain. Accuracy and calibration of a proxy on pairs of the families it was trained on against
  those it never saw (``domain_split``); a frontier per family (``stratified_peaks``).

Everything here is numpy on arrays the stages hand over; tests compute the numbers by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def spearman(x: np.ndarray, y: np.ndarray) -> float | None:
    """Spearman's rank correlation (ties share their mean rank); None when either side is constant
    or there are fewer than 3 points."""
    from scipy.stats import rankdata

    x, y = np.asarray(x, float), np.asarray(y, float)
    if len(x) != len(y):
        raise ValueError(f"spearman: {len(x)} and {len(y)} values")
    if len(x) < 3:
        return None
    rx, ry = rankdata(x), rankdata(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


@dataclass(frozen=True)
class LengthModel:
    """gold ~ intercept[family] + slope * length, by ordinary least squares (one slope for all
    families: the price of a token of length; the families' own levels absorbed by the intercepts).
    ``ref``: the mean length of the samples it was fitted on (the SFT policy's)."""

    slope: float
    intercepts: dict
    ref: float
    r2: float
    r2_family_only: float
    n: int

    def to_dict(self) -> dict:
        return {"slope": self.slope, "intercepts": self.intercepts, "ref_length": self.ref, "r2": self.r2,
                "r2_family_only": self.r2_family_only, "n": self.n}


def fit_length_model(gold: np.ndarray, length: np.ndarray, family: list[str] | np.ndarray) -> LengthModel:
    """The regression of ``gold`` on ``length`` with one intercept per family (within-family OLS:
    the slope is sum (x - x_f)(y - y_f) / sum (x - x_f)^2 over every row, x_f, y_f its family's
    means). ``r2``: of the full model; ``r2_family_only``: of the intercepts alone, so the length
    term's share of the variance is their difference."""
    y, x = np.asarray(gold, float), np.asarray(length, float)
    fam = np.asarray(family)
    if not (len(y) == len(x) == len(fam)) or len(y) < 2:
        raise ValueError(f"fit_length_model: {len(y)} gold, {len(x)} lengths, {len(fam)} families (need >= 2 each)")
    xc, yc = x.copy(), y.copy()
    for f in np.unique(fam):
        m = fam == f
        xc[m] -= x[m].mean()
        yc[m] -= y[m].mean()
    sxx = float((xc * xc).sum())
    slope = float((xc * yc).sum() / sxx) if sxx > 0 else 0.0
    intercepts = {str(f): float(y[fam == f].mean() - slope * x[fam == f].mean()) for f in np.unique(fam)}
    sst = float(((y - y.mean()) ** 2).sum())
    sse = float(((yc - slope * xc) ** 2).sum())
    sse_f = float((yc ** 2).sum())
    r2 = 1 - sse / sst if sst > 0 else 0.0
    r2_f = 1 - sse_f / sst if sst > 0 else 0.0
    return LengthModel(slope, intercepts, float(x.mean()), float(r2), float(r2_f), len(y))


def length_controlled(gold: np.ndarray, length: np.ndarray, model: LengthModel) -> np.ndarray:
    """Gold with the length term zeroed relative to the fitting samples' mean length:
    ``gold - slope * (length - ref)``. On the fitting samples its mean equals gold's."""
    return np.asarray(gold, float) - model.slope * (np.asarray(length, float) - model.ref)


def length_controlled_delta(d_gold: float, d_length: float, slope: float) -> float:
    """The same on changes: an RL run's gold gain and length change since its initial policy."""
    return float(d_gold - slope * d_length)


def length_preference(len_a: np.ndarray, len_b: np.ndarray, p_a: np.ndarray) -> dict:
    """How often a labeler prefers the longer response of a pair whose lengths differ: ``share``
    = mean over those pairs of P(longer preferred) (0.5 = no length preference), ``pairs``."""
    la, lb, p = (np.asarray(v, float) for v in (len_a, len_b, p_a))
    diff = la != lb
    if not diff.any():
        return {"share": None, "pairs": 0}
    p_longer = np.where(la > lb, p, 1.0 - p)[diff]
    return {"share": float(p_longer.mean()), "pairs": int(diff.sum())}


def domain_split(delta: np.ndarray, label: np.ndarray, family: np.ndarray, held: tuple[str, ...],
                 seed: int) -> dict:
    """A reward model's held-out pairs split into ``in_domain`` (families it was trained on) and
    ``out_of_domain`` (``held``: families it never saw), each with ``calibration_summary``'s accuracy,
    NLL, ECE at tau = 1 and the fitted tau, and ``per_family`` accuracy with its pair count; ``gap``:
    in-domain minus out-of-domain accuracy."""
    from orchestrator.math.calibration import calibration_summary, pair_accuracy

    d, y, fam = np.asarray(delta, float), np.asarray(label, float), np.asarray(family)
    out: dict = {}
    for part, m in (("in_domain", ~np.isin(fam, held)), ("out_of_domain", np.isin(fam, held))):
        if m.sum() >= 2:
            s = calibration_summary(d[m], y[m], seed)
            out[part] = {k: s[k] for k in ("acc", "nll", "ece", "tau", "ece_tau", "pairs")}
        else:
            out[part] = {"acc": None, "nll": None, "ece": None, "tau": None, "ece_tau": None, "pairs": int(m.sum())}
    out["per_family"] = {str(f): {"acc": pair_accuracy(d[fam == f], np.zeros((fam == f).sum()), y[fam == f]),
                                  "pairs": int((fam == f).sum()), "held_out": bool(f in held)}
                         for f in sorted(set(fam.tolist()))}
    a, b = out["in_domain"]["acc"], out["out_of_domain"]["acc"]
    out["gap"] = None if a is None or b is None else float(a - b)
    return out


def empirical_peak(kl: list[float], gold: list[float]) -> dict:
    """The evaluation where gold is highest along a curve: ``{kl, gold, index}`` (the first of ties)."""
    g = np.asarray(gold, float)
    if not len(g) or not np.isfinite(g).any():
        return {"kl": None, "gold": None, "index": None}
    i = int(np.nanargmax(g))
    return {"kl": float(kl[i]), "gold": float(g[i]), "index": i}


def first_to_peak(peaks: dict[str, dict]) -> str | None:
    """The family whose gold peaks at the smallest KL (where proxy and gold decouple first); None
    when no family has a peak. ``peaks``: {family: {"kl": ...}}."""
    have = {f: p["kl"] for f, p in peaks.items() if p.get("kl") is not None}
    return min(have, key=lambda f: (have[f], f)) if have else None
