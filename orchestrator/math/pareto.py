"""Multi-principle rewards: the Pareto front, its hypervolume, weight grids and the Lagrange
multipliers of constrained RL (issue 22; SCIENCE.md "Multi-principle rewards").

* Every objective is maximized. A point p dominates q when p >= q in every principle and p > q in
  at least one; the front is the set no other point dominates (``non_dominated``).
* Hypervolume (Zitzler & Thiele 1998): the volume of the union of the boxes [reference, p] over the
  front's points -- the part of objective space the front dominates above a reference point (here
  the SFT policy's gold per principle). Exact, by slicing along the first objective (``hypervolume``;
  fine for the tens of points a sweep makes).
* Constrained RL (Moskovitz et al. 2024, "Confronting reward model overoptimization with
  constrained RLHF"): maximize the objective subject to each constrained principle's proxy
  r_i >= c_i; the Lagrangian max_pi min_{lambda >= 0} J(pi) + sum_i lambda_i (r_i - c_i) is solved by
  alternating policy steps with projected gradient steps on the multipliers,
  lambda_i <- max(0, lambda_i + eta (c_i - r_i)) (``multiplier_step``): a violated constraint raises
  its multiplier, a slack one lowers it to zero.
"""

from __future__ import annotations

import itertools

import numpy as np

from orchestrator.config.schema import simplex_grid  # noqa: F401  (re-exported: the sweep's weight grid)


def dominates(p: np.ndarray, q: np.ndarray) -> bool:
    """p dominates q (maximization): no worse anywhere, better somewhere."""
    p, q = np.asarray(p, float), np.asarray(q, float)
    return bool(np.all(p >= q) and np.any(p > q))


def non_dominated(points: np.ndarray) -> list[int]:
    """Indices of the points no other point dominates, in input order (duplicates all kept)."""
    P = np.asarray(points, float)
    if P.ndim != 2:
        raise ValueError(f"points must be [n, d], got shape {P.shape}")
    return [i for i in range(len(P)) if not any(dominates(P[j], P[i]) for j in range(len(P)) if j != i)]


def hypervolume(points: np.ndarray, reference: np.ndarray) -> float:
    """Volume dominated by ``points`` above ``reference`` (maximization): the union of the boxes
    [reference, p]. Points not above the reference in every principle contribute only their part
    above it (coordinates below it are clipped to it, so they add nothing)."""
    P = np.asarray(points, float)
    r = np.asarray(reference, float)
    if P.size == 0:
        return 0.0
    if P.ndim != 2 or P.shape[1] != len(r):
        raise ValueError(f"points {P.shape} and reference {r.shape} disagree")
    P = np.maximum(P, r)
    P = P[np.all(P > r, axis=1)]
    return float(_hv(P - r)) if len(P) else 0.0


def _hv(P: np.ndarray) -> float:
    """Hypervolume of points above the origin, by slicing along the first coordinate: between two
    consecutive distinct first coordinates (taken from the top), the slice's (d-1)-volume is that of
    the points reaching at least that far."""
    if P.shape[1] == 1:
        return float(P[:, 0].max())
    xs = np.unique(P[:, 0])[::-1]
    total = 0.0
    for k, x in enumerate(xs):
        lower = xs[k + 1] if k + 1 < len(xs) else 0.0
        reach = P[P[:, 0] >= x][:, 1:]
        total += (x - lower) * _hv(reach[non_dominated(reach)] if len(reach) > 1 else reach)
    return total


def hypervolume_brute_force(points: np.ndarray, reference: np.ndarray) -> float:
    """The same volume by coordinate compression: every cell of the grid of all the points'
    coordinates, counted when some point dominates its upper corner. Exponential in d; for tests."""
    P = np.maximum(np.asarray(points, float), np.asarray(reference, float))
    r = np.asarray(reference, float)
    grids = [np.unique(np.concatenate([[r[d]], P[:, d]])) for d in range(len(r))]
    total = 0.0
    for cell in itertools.product(*[range(len(g) - 1) for g in grids]):
        upper = np.array([grids[d][c + 1] for d, c in enumerate(cell)])
        if np.any(np.all(P >= upper, axis=1)):
            total += float(np.prod([grids[d][c + 1] - grids[d][c] for d, c in enumerate(cell)]))
    return total


def multiplier_step(lam: np.ndarray, values: np.ndarray, thresholds: np.ndarray, lr: float) -> np.ndarray:
    """One projected gradient step on the Lagrange multipliers of constraints values >= thresholds:
    lambda <- max(0, lambda + lr (threshold - value))."""
    lam, v, c = (np.asarray(x, float) for x in (lam, values, thresholds))
    return np.maximum(0.0, lam + lr * (c - v))


def lagrangian_reward(objective: np.ndarray, constrained: np.ndarray, lam: np.ndarray) -> np.ndarray:
    """The per-sample reward the policy maximizes under multipliers ``lam``: objective + sum_i lam_i
    r_i, normalized by 1 + sum lam so its scale stays that of one reward (Moskovitz et al.'s
    normalized Lagrangian; the constant c_i terms do not change the policy gradient).
    objective: [b]; constrained: [b, m]; lam: [m]."""
    o, R, lam = np.asarray(objective, float), np.asarray(constrained, float), np.asarray(lam, float)
    return (o + R @ lam) / (1.0 + lam.sum())


def pareto_section(runs: list[dict], principles: list[str]) -> dict:
    """frontier.json's ``pareto`` from the runs that optimized fixed principle weights (rl entries with
    ``weights`` and per-point ``gold_principles``): per run, each principle's gold gain (over the
    initial -- SFT -- policy) and proxy change at the run's overall gold peak and at its end, with the
    KL there; the non-dominated set and its hypervolume above the reference (the SFT policy: 0 gain in
    every principle), at the peak (``front``, ``hypervolume``) and at the end (``front_end``,
    ``hypervolume_end``)."""
    pts = []
    for e in runs:
        p = e.get("points") or []
        if not p or "gold_principles" not in p[0]:
            continue
        g = [q["gold"] for q in p]
        i = int(np.nanargmax(g)) if np.isfinite(g).any() else len(p) - 1
        row = {"trial": e.get("trial", e.get("proxy")), "weights": e.get("weights")}
        for at, q in (("peak", p[i]), ("end", p[-1])):
            row[at] = {"step": q["step"], "kl": q["kl"], "gold": {pr: q["gold_principles"].get(pr) for pr in principles},
                       "proxy": {pr: v for pr, v in (q.get("proxy_members") or {}).items()}}
        pts.append(row)
    out = {"principles": list(principles), "reference": {pr: 0.0 for pr in principles},
           "reference_is": "the SFT policy (gold gains are relative to it)", "points": pts}
    for at, key in (("peak", ""), ("end", "_end")):
        G = np.array([[r[at]["gold"][pr] for pr in principles] for r in pts], float).reshape(len(pts), len(principles))
        ok = np.all(np.isfinite(G), axis=1)
        idx = [int(j) for j in np.flatnonzero(ok)]
        front = [idx[j] for j in non_dominated(G[idx])] if idx else []
        out["front" + key] = front
        out["hypervolume" + key] = hypervolume(G[front], np.zeros(len(principles))) if front else 0.0
    out["hypervolume_at"] = "each run's overall gold peak (front, hypervolume) and its last evaluation (_end)"
    return out


def fit_logistic(x: np.ndarray, y: np.ndarray, ridge: float = 1e-3, iters: int = 100) -> np.ndarray:
    """Coefficients w of P(y = 1) = sigma(x @ w) (no intercept: a pair's order carries none) for soft
    labels ``y`` in [0, 1], by Newton's method (IRLS) with a ridge of ``ridge`` x rows on |w|^2 / 2."""
    X, y = np.asarray(x, float), np.asarray(y, float)
    n, k = X.shape
    w = np.zeros(k)
    lam = ridge * n
    for _ in range(iters):
        s = 0.5 * (1.0 + np.tanh(0.5 * (X @ w)))
        grad = X.T @ (s - y) + lam * w
        hess = (X * (s * (1 - s))[:, None]).T @ X + lam * np.eye(k)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return w


def learn_principle_weights(deltas: np.ndarray, labels: np.ndarray, groups: np.ndarray, bootstrap: int,
                            seed: int) -> dict:
    """Weights of the principles learned from trade-off preferences (issue 22's ``learned``
    aggregation): a logistic model of P(a preferred) on the per-principle proxies' score differences
    r_i(a) - r_i(b) (``deltas`` [pairs, k]; ``labels`` the overall preference); ``weights`` are the
    coefficients scaled so their absolute values sum to 1 (a principle the preference runs against
    keeps its negative sign; ``raw`` as fitted), with a 90% interval from ``bootstrap``
    resamples of the pairs' prompts (``groups``)."""
    D, y, g = np.asarray(deltas, float), np.asarray(labels, float), np.asarray(groups)
    raw = fit_logistic(D, y)
    scale = lambda w: w / np.abs(w).sum() if np.abs(w).sum() > 0 else np.full(len(w), np.nan)  # noqa: E731
    out = {"raw": raw.tolist(), "weights": scale(raw).tolist(), "pairs": len(y)}
    if bootstrap:
        rng = np.random.default_rng(seed)
        ug = np.unique(g)
        rows = {u: np.flatnonzero(g == u) for u in ug}
        draws = []
        for _ in range(bootstrap):
            pick = np.concatenate([rows[u] for u in rng.choice(ug, len(ug))])
            w = fit_logistic(D[pick], y[pick])
            draws.append(scale(w))
        B = np.array(draws)
        out["weights_ci90"] = [[float(np.nanpercentile(B[:, j], 5)), float(np.nanpercentile(B[:, j], 95))]
                               for j in range(B.shape[1])]
    return out
