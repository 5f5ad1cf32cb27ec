"""Gao et al. (2022) functional forms, fitted by least squares; d = sqrt(KL) in sqrt-nats.

best-of-n: R_bon(d) = d (alpha - beta d),      peak d* = alpha / (2 beta),   R* = alpha^2 / (4 beta)
RL:        R_rl(d)  = d (alpha - beta ln d),   peak d* = exp(alpha/beta - 1), R* = beta d*
Both pass through R(0) = 0 (scores are relative to the initial policy), so the fits have no intercept.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Fit:
    alpha: float
    beta: float
    r2: float
    kl_peak: float | None
    """KL (nats) at the fitted peak; None when the fitted curve never turns down (beta <= 0)."""
    gold_peak: float | None

    def to_dict(self) -> dict:
        return asdict(self)


def _r2(y: np.ndarray, yhat: np.ndarray, w: np.ndarray | None = None) -> float:
    """(Weighted) coefficient of determination."""
    w = np.ones_like(y) if w is None else w
    mean = np.sum(w * y) / np.sum(w)
    ss_res = float(np.sum(w * (y - yhat) ** 2))
    ss_tot = float(np.sum(w * (y - mean) ** 2))
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def d_spacing_weights(kl: np.ndarray) -> np.ndarray:
    """Weight of each point = the stretch of the d = sqrt(KL) axis it stands for (trapezoid rule).

    Best-of-n for every n = 1..N crowds the points at large d (n = 64..256 all lie within
    sqrt-KL 1.75..2.13), so an unweighted fit would fit the tail and ignore the rise. Weighting by
    d-spacing fits the curve as it is plotted against sqrt(KL).
    """
    d = np.sqrt(np.asarray(kl, float))
    if len(d) < 2:
        return np.ones_like(d)
    edges = np.concatenate([[d[0]], (d[1:] + d[:-1]) / 2, [d[-1]]])
    w = np.diff(edges)
    return np.maximum(w, 1e-12)


def _lstsq(cols: list[np.ndarray], y: np.ndarray, w: np.ndarray | None) -> np.ndarray:
    X = np.stack(cols, axis=1)
    if w is not None:
        sw = np.sqrt(w)
        X, y = X * sw[:, None], y * sw
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    return coef


def fit_bon(kl: np.ndarray, r: np.ndarray, weights: np.ndarray | None = None) -> Fit:
    """Fit R_bon(d) = d (alpha - beta d) to points (kl [m], r [m]); Gao et al. 2022 eq. (2)."""
    d = np.sqrt(np.asarray(kl, float))
    r = np.asarray(r, float)
    alpha, nbeta = _lstsq([d, d * d], r, weights)
    beta = -nbeta
    r2 = _r2(r, d * (alpha - beta * d), weights)
    if beta > 0 and alpha > 0:
        dstar = alpha / (2 * beta)
        return Fit(float(alpha), float(beta), r2, float(dstar**2), float(alpha**2 / (4 * beta)))
    return Fit(float(alpha), float(beta), r2, None, None)


def fit_rl(kl: np.ndarray, r: np.ndarray, weights: np.ndarray | None = None) -> Fit:
    """Fit R_rl(d) = d (alpha - beta ln d) to points with d > 0; Gao et al. 2022 eq. (3)."""
    kl, r = np.asarray(kl, float), np.asarray(r, float)
    keep = kl > 0
    d, r = np.sqrt(kl[keep]), r[keep]
    w = None if weights is None else np.asarray(weights, float)[keep]
    alpha, nbeta = _lstsq([d, d * np.log(d)], r, w)
    beta = -nbeta
    r2 = _r2(r, d * (alpha - beta * np.log(d)), w)
    if beta > 0:
        dstar = math.exp(alpha / beta - 1.0)
        if math.isfinite(dstar) and dstar < 1e6:
            return Fit(float(alpha), float(beta), r2, float(dstar**2), float(beta * dstar))
    return Fit(float(alpha), float(beta), r2, None, None)


def spearman(x: list[float], y: list[float | None]) -> float:
    """Spearman rank correlation (Pearson correlation of the ranks, ties averaged); ``None`` in y (no
    peak in sight) ranks above every number, and several ``None`` tie with each other (they used to
    be ranked by their order in the list, which -- sorted by size -- made a size trend out of
    nothing). NaN when x or y has no variation: there is no trend to measure."""
    from scipy.stats import rankdata

    yy = [math.inf if v is None else float(v) for v in y]
    rx, ry = rankdata(x), rankdata(yy)
    if len(set(rx)) < 2 or len(set(ry)) < 2:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def size_slope(params: list[float], peaks: list[float], weights: list[float] | None = None) -> float:
    """(Weighted) least-squares slope of ``ln peaks`` on ``ln params``: how fast a fitted peak grows
    with reward-model size (Gao et al. 2022, fig. 3: peak gold and d* grow smoothly, roughly
    log-linearly, in RM parameters). ``peaks`` must be > 0."""
    x, y = np.log(np.asarray(params, float)), np.log(np.asarray(peaks, float))
    w = np.ones_like(x) if weights is None else np.asarray(weights, float)
    xm, ym = np.sum(w * x) / np.sum(w), np.sum(w * y) / np.sum(w)
    return float(np.sum(w * (x - xm) * (y - ym)) / np.sum(w * (x - xm) ** 2))


def size_trend(params: list[float], peaks: list[float | None], boot: list[list[float | None]] | None,
               cap: float, floor: float = 1e-6, sqrt: bool = False) -> dict:
    """The size trend of one kind of fitted peak in one run, with a bootstrap interval.

    params: per size; peaks: the fitted peak per size (None: the fit never turns down); boot:
    per size, the same quantity refitted on each bootstrap resample of the prompts (one resample
    list shared by every size, so the sizes' errors stay paired). A peak beyond what the data
    reach is censored at ``cap`` (the largest KL measured; for gold, the caller passes the best
    measured gold for None): the data cannot place it further, and for a test of a positive trend
    the cap is conservative (it can only pull a small model's runaway peak down toward the others).
    ``sqrt``: the slope of ln sqrt(peak) (d* = sqrt(KL*), Gao et al.'s axis).

    The slope is weighted by each size's inverse bootstrap variance of ln peak (floored at 0.05²,
    so a size censored in every resample does not take all the weight); its 90% interval and
    standard error are the percentiles and spread of the same weighted slope over the resamples.
    Returns slope, ci90, se, p_le0 (the fraction of resamples with slope <= 0), the weights and
    how many peaks were censored."""
    def tr(v):
        v = cap if v is None or not math.isfinite(v) or v > cap else v
        v = max(v, floor)
        return math.sqrt(v) if sqrt else v

    ys = [tr(v) for v in peaks]
    out = {"params": list(params), "peaks": ys, "censored": sum(v is None or not math.isfinite(v) or v > cap for v in peaks),
           "cap": cap, "slope": None, "ci90": None, "se": None, "p_le0": None, "weights": None}
    if len(params) < 2 or len(set(params)) < 2:
        return out
    w = None
    if boot and all(len(b) == len(boot[0]) and len(b) > 1 for b in boot):
        lb = np.log(np.array([[tr(v) for v in b] for b in boot]))  # [sizes, resamples]
        w = 1.0 / np.maximum(lb.var(axis=1, ddof=1), 0.05**2)
        slopes = np.array([size_slope(params, np.exp(lb[:, j]), w) for j in range(lb.shape[1])])
        out.update(ci90=[float(np.percentile(slopes, 5)), float(np.percentile(slopes, 95))],
                   se=float(slopes.std(ddof=1)), p_le0=float(np.mean(slopes <= 0)),
                   weights=[float(x) for x in w / w.sum()])
    out["slope"] = size_slope(params, ys, w)
    return out
