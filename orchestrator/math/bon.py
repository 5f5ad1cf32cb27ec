"""Best-of-n from one pool: the unbiased estimator, the analytic KL bound (Gao et al. 2022, sec. 2.2)
and the exact KL on the pool's own support.

Pure numpy; shapes in the docstrings.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.special import gammaln

from orchestrator.math.scaling import d_spacing_weights, fit_bon


def kl_bon(n: np.ndarray | int) -> np.ndarray | float:
    """KL of best-of-n to the base policy, ``ln n - (n - 1) / n`` nats (Stiennon et al. 2020;
    Gao et al. 2022 eq. 1). An upper bound on the true KL; kl_bon(1000) = 5.91."""
    n = np.asarray(n, dtype=float)
    out = np.log(n) - (n - 1.0) / n
    return float(out) if out.ndim == 0 else out


def bon_weights(N: int, n_max: int | None = None) -> np.ndarray:
    """``[n_max, N]`` weights: row n-1 gives P(the best of a random n-subset is the i-th smallest).

    Gao et al. 2022, appendix: with the pool sorted by proxy ascending S_1..S_N,
    E[R(best of n)] = sum_{i=n..N} C(i-1, n-1) / C(N, n) R(S_i). Computed in log space so N in the
    thousands does not overflow.
    """
    n_max = N if n_max is None else n_max
    if not 1 <= n_max <= N:
        raise ValueError(f"n_max={n_max} must be in 1..N={N}")
    n = np.arange(1, n_max + 1, dtype=float)[:, None]  # [n_max, 1]
    i = np.arange(1, N + 1, dtype=float)[None, :]      # [1, N]
    valid = i >= n

    def lchoose(a, b):
        return gammaln(a + 1) - gammaln(b + 1) - gammaln(a - b + 1)

    with np.errstate(invalid="ignore"):
        logw = lchoose(i - 1, n - 1) - lchoose(float(N), n)
    return np.where(valid, np.exp(np.where(valid, logw, 0.0)), 0.0)


def bon_curves(proxy: np.ndarray, gold: np.ndarray, n_max: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-prompt expected proxy and gold of best-of-n for every n = 1..n_max.

    proxy, gold: ``[P, N]`` scores of a pool of N responses for each of P prompts.
    Returns ``(proxy_bon, gold_bon)``, each ``[P, n_max]``. Ties in proxy are broken by gold
    ascending (the pessimistic order) so the estimate never profits from a tie.
    """
    proxy, gold = np.asarray(proxy, float), np.asarray(gold, float)
    if proxy.shape != gold.shape or proxy.ndim != 2:
        raise ValueError(f"proxy {proxy.shape} and gold {gold.shape} must both be [prompts, N]")
    P, N = proxy.shape
    w = bon_weights(N, n_max)  # [n_max, N]
    order = np.lexsort((gold, proxy), axis=-1)  # sort by proxy, then gold
    ps = np.take_along_axis(proxy, order, axis=1)
    gs = np.take_along_axis(gold, order, axis=1)
    return ps @ w.T, gs @ w.T


def bon_kl_exact(proxy: np.ndarray, gold: np.ndarray, text_ids: np.ndarray, n_max: int | None = None) -> np.ndarray:
    """``[n_max]`` exact KL(best-of-n || base) in nats, averaged over prompts, with the pool as the
    base distribution: a response sampled m times of N has probability m/N, identical texts are
    one outcome, and best-of-n takes the proxy-best of n independent draws (ties broken by gold
    ascending, as ``bon_curves`` does). With responses sorted by proxy, P(best = position i) =
    (i/N)^n - ((i-1)/N)^n, summed over the positions of each text.

    ``ln n - (n-1)/n`` (``kl_bon``) is the same quantity for a continuous, duplicate-free base and
    an upper bound on it (Gao et al. 2022; Beirami et al. 2024); a real policy repeats itself (a
    third of the default pool are duplicates), so the bound overstates best-of-n's KL most at small
    n. SCIENCE.md: on an enumerable support compute the exact one. text_ids: ``[P, N]`` ints, equal
    for equal responses of a prompt."""
    proxy, gold, text_ids = np.asarray(proxy, float), np.asarray(gold, float), np.asarray(text_ids)
    P, N = proxy.shape
    n = np.arange(1, (n_max or N) + 1, dtype=float)[:, None]
    i = np.arange(0, N + 1, dtype=float)[None, :] / N
    w = np.diff(i ** n, axis=1)  # [n_max, N]: P(best of n draws sits at sorted position i)
    out = np.zeros(w.shape[0])
    for p in range(P):
        order = np.lexsort((gold[p], proxy[p]))
        _, group = np.unique(text_ids[p][order], return_inverse=True)
        onehot = np.zeros((N, group.max() + 1))
        onehot[np.arange(N), group] = 1.0
        prob = w @ onehot                    # [n_max, texts]
        q = onehot.sum(0) / N                # [texts]
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(prob > 0, prob * np.log(prob / q), 0.0)
        out += terms.sum(1)
    return np.maximum(out / P, 0.0)


def bon_brute_force(proxy: np.ndarray, gold: np.ndarray, n: int) -> tuple[float, float]:
    """The same expectation by enumerating every n-subset of one pool (``[N]`` each); for tests."""
    from itertools import combinations

    proxy, gold = np.asarray(proxy, float), np.asarray(gold, float)
    order = np.lexsort((gold, proxy))
    rank = np.empty(len(proxy), int)
    rank[order] = np.arange(len(proxy))
    tot_p = tot_g = 0.0
    count = 0
    for sub in combinations(range(len(proxy)), n):
        best = max(sub, key=lambda j: rank[j])
        tot_p += proxy[best]
        tot_g += gold[best]
        count += 1
    assert count == math.comb(len(proxy), n)
    return tot_p / count, tot_g / count


def pool_matrix(samples: dict, column: str, N: int) -> np.ndarray:
    """``[P, N]``: a best-of-n pool's column (a flat table of prompt_id, sample_id, ...), one row
    per prompt in prompt order, its samples in sample order."""
    pid = np.array(samples["prompt_id"])
    order = np.lexsort((np.array(samples["sample_id"]), pid))
    return np.array(samples[column], dtype=object if column == "response" else float)[order].reshape(-1, N)


def bon_summary(samples: dict, proxy_names: list[str], N: int, n_max: int, bootstrap: int, seed: int) -> dict:
    """Per proxy: mean best-of-n gold and proxy (relative to n = 1) for every n, the fit, and a
    bootstrap-over-prompts interval of the fitted peak KL."""
    gold = pool_matrix(samples, "score.gold", N)
    P = gold.shape[0]
    n = np.arange(1, n_max + 1)
    kl = kl_bon(n)
    w = d_spacing_weights(kl)
    out = {}
    rng = np.random.default_rng(seed)
    boots = [rng.integers(0, P, P) for _ in range(bootstrap)]
    if "response" in samples:  # identical texts are one outcome of the base distribution
        responses = pool_matrix(samples, "response", N)
        text_ids = np.zeros((P, N), dtype=np.int64)
        for p in range(P):
            ids: dict = {}
            text_ids[p] = [ids.setdefault(r, len(ids)) for r in responses[p]]
    else:  # no texts: every sample is its own outcome
        text_ids = np.tile(np.arange(N), (P, 1))
    for name in proxy_names:
        proxy = pool_matrix(samples, f"score.{name}", N)
        pb, gb = bon_curves(proxy, gold, n_max)  # [P, n_max]
        kl_exact = bon_kl_exact(proxy, gold, text_ids, n_max)
        g_mean, p_mean = gb.mean(0) - gb[:, 0].mean(), pb.mean(0) - pb[:, 0].mean()
        fit = fit_bon(kl, g_mean, w)
        peaks, golds = [], []
        for b in boots:
            gm = gb[b].mean(0) - gb[b, 0].mean()
            f = fit_bon(kl, gm, w)
            peaks.append(np.inf if f.kl_peak is None else f.kl_peak)
            golds.append(float(gm.max()) if f.gold_peak is None else f.gold_peak)  # no peak: the best measured
        finite = np.where(np.isfinite(peaks), peaks, 1e12)  # "no peak" sorts above every peak
        ci = [float(np.percentile(finite, 5)), float(np.percentile(finite, 95))] if boots else None
        out[name] = {"points": [{"n": int(a), "kl": float(k), "gold": float(g), "proxy": float(p), "kl_exact": float(e)}
                                for a, k, g, p, e in zip(n, kl, g_mean, p_mean, kl_exact)],
                     "fit": fit.to_dict(),
                     "kl_peak_ci90": None if ci is None else [c if c < 1e11 else None for c in ci],
                     # the same prompt resamples for every proxy: the size trend's interval (checks.size_trend)
                     "bootstrap": {"kl_peak": [None if not np.isfinite(x) else float(x) for x in peaks],
                                   "gold_peak": [float(x) for x in golds]}}
    return out
