"""Reward-model ensembles outside the RL loop (issue 20): members put on one scale, aggregated
(Coste et al. 2023's mean / WCO / UWO, the formulas of ``orchestrator.math.rl.aggregate``), and
WARM's weight averaging (Ramé et al. 2024). Pure numpy / plain arithmetic: numbers in, numbers out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np


def member_scales(pool: np.ndarray, how: str, taus: Sequence[float] | None = None) -> list[tuple[float, float]]:
    """Per member ``(shift, scale)`` from its scores of the best-of-n pool (``[N, k]``): ``standardize``
    -> (mean, std); ``temperature`` -> (mean, tau), tau the member's fitted temperature (a unit of
    scaled score difference is then one logit of calibrated preference probability)."""
    pool = np.asarray(pool, float)
    if pool.ndim != 2:
        raise ValueError(f"pool scores {pool.shape} must be [responses, members]")
    mu = pool.mean(0)
    if how == "standardize":
        return [(float(m), float(max(s, 1e-6))) for m, s in zip(mu, pool.std(0))]
    if how == "temperature":
        if taus is None or len(taus) != pool.shape[1]:
            raise ValueError(f"temperature scaling needs one tau per member ({pool.shape[1]})")
        if not all(t is not None and np.isfinite(t) and t > 0 for t in taus):
            raise ValueError(f"taus {list(taus)} must be finite and > 0")
        return [(float(m), float(t)) for m, t in zip(mu, taus)]
    raise ValueError(f"member scaling {how!r}: standardize or temperature")


def aggregate_np(z: np.ndarray, objective: str, uwo_lambda: float = 0.1) -> np.ndarray:
    """``[..., k]`` scaled member scores -> ``[...]``: mean; wco = min over members; uwo = mean -
    lambda * (1/k) sum (z_i - mean)^2 (Coste et al. 2023, eqs. 2-4; population variance, as the RL
    loop's ``aggregate``)."""
    z = np.asarray(z, float)
    if objective == "mean":
        return z.mean(-1)
    if objective == "wco":
        return z.min(-1)
    if objective == "uwo":
        m = z.mean(-1)
        return m - uwo_lambda * ((z - m[..., None]) ** 2).mean(-1)
    raise ValueError(f"unknown ensemble objective {objective!r} (mean, wco, uwo)")


def ensemble_scores(scores: np.ndarray, scales: Sequence[tuple[float, float]], objective: str,
                    uwo_lambda: float = 0.1) -> np.ndarray:
    """``[N, k]`` raw member scores -> ``[N]``: each member minus its shift, over its scale, then
    aggregated by ``objective``."""
    scores = np.asarray(scores, float)
    shift = np.array([s for s, _ in scales])
    scale = np.array([c for _, c in scales])
    return aggregate_np((scores - shift) / scale, objective, uwo_lambda)


def weight_average(state_dicts: Sequence[Mapping], weights: Sequence[float] | None = None) -> dict:
    """WARM (Ramé et al. 2024, eq. 1): the weight-averaged model sum_i w_i theta_i of members
    fine-tuned from one initialization (weights default to uniform and must sum to 1). Works on any
    arrays with ``*`` and ``+`` (numpy, torch); every member must have the same keys and shapes."""
    if not state_dicts:
        raise ValueError("no members to average")
    k = len(state_dicts)
    w = [1.0 / k] * k if weights is None else [float(x) for x in weights]
    if len(w) != k:
        raise ValueError(f"{len(w)} weights for {k} members")
    if abs(sum(w) - 1.0) > 1e-9 or min(w) < 0:
        raise ValueError(f"weights {w} must be >= 0 and sum to 1")
    keys = list(state_dicts[0])
    for i, sd in enumerate(state_dicts[1:], 1):
        if list(sd) != keys:
            raise ValueError(f"member {i} has other parameters than member 0: not one architecture")
        for key in keys:
            if tuple(sd[key].shape) != tuple(state_dicts[0][key].shape):
                raise ValueError(f"member {i}: {key} is {tuple(sd[key].shape)}, member 0 has "
                                 f"{tuple(state_dicts[0][key].shape)}")
    out = {}
    for key in keys:
        if not _floating(state_dicts[0][key]):  # integer buffers (position ids, masks) are not weights:
            if any((sd[key] != state_dicts[0][key]).any() for sd in state_dicts[1:]):  # equal, or refused
                raise ValueError(f"{key}: a non-float buffer that differs between members")
            out[key] = state_dicts[0][key]
            continue
        acc = state_dicts[0][key] * w[0]
        for wi, sd in zip(w[1:], state_dicts[1:]):
            acc = acc + sd[key] * wi
        out[key] = acc
    return out


def _floating(x) -> bool:
    f = getattr(x, "is_floating_point", None)  # torch
    return bool(f()) if callable(f) else bool(np.issubdtype(np.asarray(x).dtype, np.floating))
