"""Acquisition functions for active learning of a reward model from an ensemble's scores (pure numpy).

A candidate pair (a, b) of one prompt is scored by every member i of an ensemble: r_i(a), r_i(b).
Under the Bradley-Terry model member i says P(a > b) = sigma(r_i(a) - r_i(b)).

- ``disagreement``: the variance over members of sigma(r_i(a) - r_i(b)) -- where the members'
  preference probabilities disagree, a label teaches the most (query-by-committee; Christiano et
  al. 2017 select pairs by the variance of an ensemble's predictions; Gleave & Irving 2022,
  "Uncertainty Estimation for Language Reward Models", study exactly this for language RMs and find
  little gain over random -- one reason the random arm is always run beside it);
- ``margin``: the smallest |mean_i (r_i(a) - r_i(b))| -- the pairs the ensemble is least sure of
  (uncertainty sampling by margin);
- ``random``: uniform without replacement (the control).

``acquire`` takes the top-k pairs by a score with ties broken by a seeded random order, so the
choice is reproducible and unbiased among equals.
"""

from __future__ import annotations

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, float)))  # = 1 / (1 + e^-x), without overflow


def disagreement(ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """``[pairs]``: the population variance over members (axis 1) of sigma(r_i(a) - r_i(b)).
    ``ra``, ``rb``: ``[pairs, members]`` scores of each pair's two responses."""
    ra, rb = np.asarray(ra, float), np.asarray(rb, float)
    if ra.shape != rb.shape or ra.ndim != 2 or ra.shape[1] < 2:
        raise ValueError(f"scores must be [pairs, members >= 2] of one shape, got {ra.shape} and {rb.shape}")
    return sigmoid(ra - rb).var(axis=1)


def margin(ra: np.ndarray, rb: np.ndarray) -> np.ndarray:
    """``[pairs]``: minus |mean over members of r_i(a) - r_i(b)| (larger = less sure: acquired first)."""
    ra, rb = np.asarray(ra, float), np.asarray(rb, float)
    if ra.shape != rb.shape or ra.ndim != 2:
        raise ValueError(f"scores must be [pairs, members] of one shape, got {ra.shape} and {rb.shape}")
    return -np.abs((ra - rb).mean(axis=1))


def acquire(score: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of the ``k`` largest ``score`` values (all of them if fewer), largest first; equal
    scores in a random order drawn from ``rng``."""
    score = np.asarray(score, float)
    if np.isnan(score).any():
        raise ValueError(f"acquisition score is NaN at {int(np.flatnonzero(np.isnan(score))[0])}")
    tie = rng.permutation(len(score))
    order = np.lexsort((tie, -score))  # by -score, then the random tie-break
    return order[: min(k, len(score))]


def choose(arm: str, ra: np.ndarray | None, rb: np.ndarray | None, k: int, rng: np.random.Generator) -> np.ndarray:
    """The arm's ``k`` pairs among the candidates (rows of ``ra`` / ``rb``; for ``random`` only
    their count, ``len(ra)``, is used)."""
    if arm == "random":
        n = len(ra)
        return rng.permutation(n)[: min(k, n)]
    if arm == "disagreement":
        return acquire(disagreement(ra, rb), k, rng)
    if arm == "margin":
        return acquire(margin(ra, rb), k, rng)
    raise ValueError(f"unknown acquisition {arm!r}")


def bootstrap_by_prompt(pairs: np.ndarray, group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A bootstrap resample of labelled ``pairs`` by prompt: as many prompts as they span, drawn with
    replacement, each with all its labelled pairs (a prompt drawn twice counts twice)."""
    pairs = np.asarray(pairs)
    g = np.asarray(group)[pairs]
    prompts = np.unique(g)
    drawn = rng.choice(prompts, size=len(prompts), replace=True)
    by = {p: pairs[g == p] for p in prompts}
    return np.concatenate([by[p] for p in drawn]) if len(drawn) else pairs[:0]


MEASURES = ("val_acc", "val_ece", "bon_peak_gold", "bon_peak_kl")


def versus_random(rows: list[dict]) -> dict:
    """Each acquisition arm minus the random arm at equal labels, per measure: the per-round
    differences and their mean over the acquisition rounds (round 0 is shared, its difference 0)."""
    rand = {r["round"]: r for r in rows if r["arm"] == "random"}
    out = {}
    for arm in sorted({r["arm"] for r in rows} - {"random"}):
        mine = {r["round"]: r for r in rows if r["arm"] == arm}
        rounds = sorted(k for k in mine if k in rand and k > 0)
        if not rounds:
            continue
        diff = {m: [mine[k][m] - rand[k][m] for k in rounds] for m in MEASURES}
        out[arm] = {"rounds": rounds, "diff": diff, "mean": {m: float(np.mean(v)) for m, v in diff.items()}}
    return out
