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
    objective: [b]; constrained: [b, m]; lam: [m] -- numpy arrays or torch tensors alike (the RL loop
    passes its tensors)."""
    return (objective + constrained @ lam) / (1.0 + lam.sum())


AGGREGATION_GROUPS = {"fixed": "aggregation", "learned": "aggregation", "family": "aggregation",
                      "constrained": "constrained"}


def pareto_section(runs: list[dict], principles: list[str], levels: int = 4) -> dict:
    """frontier.json's ``pareto`` from the runs over the per-principle proxies (rl entries of size
    ``principles`` with per-point ``gold_principles``): per run, its ``aggregation`` (fixed, learned,
    family, constrained), its weights or constraints, and each principle's gold gain (over the
    initial -- SFT -- policy) and proxy change at the run's overall gold peak and at its end, with the
    KL there; the non-dominated set and its hypervolume above the reference (the SFT policy: 0 gain in
    every principle), at the peak (``front``, ``hypervolume``) and at the end (``front_end``,
    ``hypervolume_end``); and ``compare`` (``compare_at_kl``): aggregation vs constrained at equal KL."""
    pts, series = [], []
    for e in runs:
        p = e.get("points") or []
        if not p or "gold_principles" not in p[0]:
            continue
        g = [q["gold"] for q in p]
        i = int(np.nanargmax(g)) if np.isfinite(g).any() else len(p) - 1
        row = {"trial": e.get("trial", e.get("proxy")), "aggregation": e.get("aggregation", "fixed")}
        row.update({k: e[k] for k in ("weights", "constraints", "lagrange") if k in e})
        names = list(e.get("members") or [])  # the per-principle proxies, in the principles' order
        for at, q in (("peak", p[i]), ("end", p[-1])):
            pm = q.get("proxy_members") or {}
            proxy = ({pr: pm.get(n) for pr, n in zip(principles, names)} if len(names) == len(principles)
                     else dict(pm))  # each principle's proxy change (by member name if they do not line up)
            row[at] = {"step": q["step"], "kl": q["kl"], "gold": {pr: q["gold_principles"].get(pr) for pr in principles},
                       "proxy": proxy}
        row["degraded_end"] = [pr for pr in principles if (row["end"]["gold"][pr] or 0.0) < 0]
        pts.append(row)
        series.append((row["aggregation"], np.array([q["kl"] for q in p], float),
                       np.array([[q["gold_principles"].get(pr, np.nan) for pr in principles] for q in p], float),
                       np.array(g, float)))
    out = {"principles": list(principles), "reference": {pr: 0.0 for pr in principles},
           "reference_is": "the SFT policy (gold gains are relative to it)", "points": pts}
    Gs = {at: np.array([[r[at]["gold"][pr] for pr in principles] for r in pts], float).reshape(len(pts), len(principles))
          for at in ("peak", "end")}
    both = np.concatenate(list(Gs.values()))
    ok = both[np.all(np.isfinite(both), axis=1)]
    nadir = ok.min(axis=0) if len(ok) else np.zeros(len(principles))
    out["nadir"] = {pr: float(v) for pr, v in zip(principles, nadir)}
    for at, key in (("peak", ""), ("end", "_end")):
        out["front" + key], out["hypervolume" + key], out["hypervolume_nadir" + key] = front_and_hypervolume(
            Gs[at], nadir)
    out["hypervolume_at"] = ("each run's overall gold peak (front, hypervolume) and its last evaluation (_end); above "
                             "the SFT policy (hypervolume) and above the nadir of all these points (hypervolume_nadir)")
    if len({AGGREGATION_GROUPS.get(a, a) for a, *_ in series}) == 2:
        out["compare"] = compare_at_kl(series, principles, levels)
    return out


def front_and_hypervolume(G: np.ndarray, nadir: np.ndarray | None = None) -> tuple:
    """The non-dominated rows of ``G`` [n, d] among the finite ones and their hypervolume above 0
    (the SFT policy); with ``nadir``, also their hypervolume above it: (front, hv[, hv_nadir])."""
    ok = np.all(np.isfinite(G), axis=1) if len(G) else np.zeros(0, bool)
    idx = [int(j) for j in np.flatnonzero(ok)]
    front = [idx[j] for j in non_dominated(G[idx])] if idx else []
    hv = lambda ref: hypervolume(G[front], ref) if front else 0.0  # noqa: E731
    return (front, hv(np.zeros(G.shape[1]))) if nadir is None else (front, hv(np.zeros(G.shape[1])), hv(nadir))


def gold_at_kl(kl: np.ndarray, G: np.ndarray, level: float) -> np.ndarray | None:
    """A run's per-principle gold where its KL first reaches ``level`` (linear between the two
    evaluations around it, in evaluation order); None when it never gets there."""
    hit = np.flatnonzero(kl >= level)
    if not len(hit):
        return None
    i = int(hit[0])
    if i == 0 or kl[i] == kl[i - 1]:
        return G[i]
    t = (level - kl[i - 1]) / (kl[i] - kl[i - 1])
    return G[i - 1] + t * (G[i] - G[i - 1])


def first_overoptimized(kl: np.ndarray, G: np.ndarray, principles: list[str]) -> tuple[str | None, dict]:
    """Per principle, the KL at which its gold peaks when it falls after (None: it never fell); the
    principle that peaks at the smallest such KL (None when none did)."""
    peaks = {}
    for j, pr in enumerate(principles):
        g = G[:, j]
        if not np.isfinite(g).any():
            peaks[pr] = None
            continue
        i = int(np.nanargmax(g))
        peaks[pr] = float(kl[i]) if i < len(g) - 1 and g[-1] < g[i] else None
    have = {p: k for p, k in peaks.items() if k is not None}
    return (min(have, key=lambda p: (have[p], p)) if have else None), peaks


def kl_levels(peaks: list[float], top: float, levels: int) -> list[float]:
    """The KLs two kinds of runs are compared at: ``levels`` log-spaced from half the median KL of the
    runs' gold peaks (where the runs are at their best; past it they degrade) to ``top``, the largest
    KL both kinds reach (where they have overoptimized) -- runs here peak within a few tenths of a nat
    and end tens of nats away; evenly up to ``top`` when the peaks are not below it."""
    lo = 0.5 * float(np.median(peaks)) if len(peaks) else 0.0
    if not 0 < lo < top:
        return [top * k / levels for k in range(1, levels + 1)]
    return [float(x) for x in np.geomspace(lo, top, levels)]


def compare_at_kl(series: list[tuple], principles: list[str], levels: int = 4) -> dict:
    """Aggregation (fixed, learned, per-family weights) vs constrained runs at equal KL (``kl_levels``):
    at each KL, each kind's runs that reach it (linear between evaluations) and their per-principle
    gold there: the hypervolume above the SFT policy (``hypervolume``; 0 as soon as every run has
    one principle at or below it) and above the nadir of both kinds' points at that KL
    (``hypervolume_nadir``, the usual reference of multi-objective comparisons), the mean gain per
    principle (``gold_mean``), the mean summed gain (``gold_sum``) and the mean number of principles
    below the SFT policy (``below_reference``); and which principle overoptimizes first in each run
    (``first_overoptimized``), counted per kind.
    ``series``: (aggregation, kl [t], gold per principle [t, d], overall gold [t]) per run."""
    groups: dict[str, list] = {}
    for a, kl, G, _ in series:
        groups.setdefault(AGGREGATION_GROUPS.get(a, a), []).append((kl, G))
    reach = {g: max(float(np.nanmax(kl)) for kl, _ in rs) for g, rs in groups.items()}
    peaks = [float(kl[int(np.nanargmax(g))]) for _, kl, _, g in series if np.isfinite(g).any()]
    out = {"kl": kl_levels(peaks, min(reach.values()), levels), "reach": reach,
           "median_peak_kl": float(np.median(peaks)) if peaks else None, "nadir": [],
           **{k: {g: [] for g in groups} for k in
              ("hypervolume", "hypervolume_nadir", "runs", "gold_mean", "gold_sum", "below_reference")}}
    for level in out["kl"]:
        at = {g: np.array([x for x in (gold_at_kl(kl, G, level) for kl, G in rs) if x is not None], float)
              .reshape(-1, len(principles)) for g, rs in groups.items()}
        both = np.concatenate(list(at.values()))
        nadir = np.nanmin(both, axis=0) if len(both) else np.zeros(len(principles))
        out["nadir"].append({p: float(v) for p, v in zip(principles, nadir)})
        for g, G in at.items():
            _, hv, hv_nadir = front_and_hypervolume(G, nadir)
            out["hypervolume"][g].append(hv)
            out["hypervolume_nadir"][g].append(hv_nadir)
            out["runs"][g].append(len(G))
            out["gold_mean"][g].append({p: float(G[:, j].mean()) if len(G) else None for j, p in enumerate(principles)})
            out["gold_sum"][g].append(float(G.sum(1).mean()) if len(G) else None)
            out["below_reference"][g].append(float((G < 0).sum(1).mean()) if len(G) else None)
    out["first_overoptimized"] = {}
    for g, rs in groups.items():
        counts = {pr: 0 for pr in principles}
        counts["none"] = 0
        for kl, G in rs:
            first, _ = first_overoptimized(kl, G, principles)
            counts[first or "none"] += 1
        out["first_overoptimized"][g] = counts
    out["note"] = ("each kind's runs at equal KL (log-spaced from half the median KL of the runs' gold peaks to the "
                   "largest KL both kinds reach); hypervolume above the SFT policy (0 = no run above it in every "
                   "principle) and above the nadir of both kinds' points there; first_overoptimized: per run, the "
                   "principle whose gold peaks (and falls) at the smallest KL")
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
