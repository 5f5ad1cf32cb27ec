"""Gold-free overoptimization detectors, and their scoring against gold (issue 19; SCIENCE.md,
"Monitoring without gold"). Numbers in, numbers out.

A *detector* turns a per-evaluation signal, computed without gold, into an alarm step by a stated
threshold rule (``Rule``: the signal crosses ``threshold`` in ``direction`` for ``patience``
evaluations in a row; the alarm is the first evaluation of that run). The signals:

* ``independent_gap`` -- the training proxy's rise minus the rise of reward models the run does not
  train on (other sizes, seeds, a proxy trained on disjoint labels), each measured from the run's
  first evaluation, minus the gap's lowest value so far: how far the proxy has pulled away from
  independent judges since they last agreed. The seed's advice: compare every policy against several
  independent reward models.
* ``disagreement`` -- the proxy ensemble's spread over members on the policy's samples, relative to
  the first evaluation's (Coste et al. 2023: member disagreement grows off-distribution).
* ``proxy_slope`` -- an online fit of the proxy against d = sqrt(KL) with Gao et al. (2022)'s RL form
  R(d) = d (alpha - beta log d) on the evaluations so far; the signal is the fitted marginal gain
  dR/dd at the current d, relative to the gain at the first fitted point: the proxy curve bending
  over (its curvature) says the cheap reward is used up.
* ``kl_acceleration`` -- KL spent per step between evaluations, relative to the early rate (the
  mean over the first ``early`` intervals): a policy that found an exploit runs away in KL.
* ``entropy`` -- the policy's per-token entropy relative to the first evaluation's (collapse).
* ``length_drift`` -- |mean response length / first evaluation's - 1| (length hacking).
* ``latent_outlier`` -- InfoRM-style (Miao et al. 2024): the share of the policy's samples whose
  Mahalanobis distance from the SFT samples, in the proxy's last hidden layer, exceeds the 95th
  percentile of held-out SFT samples' own distances (``outlier_share``); ~0.05 without a shift.

*Scoring against gold* (``score_detector``): the true peak is the evaluation with the highest gold.
Lead = peak step - alarm step (evaluations), and kl at the peak - kl at the alarm (nats); negative
is late. A false alarm is an alarm before gold has risen by 2 standard errors above its first
evaluation, or any alarm in a run whose gold never falls 2 s.e. below its peak. Gold kept: the gold
gained by stopping at the alarm as a share of the gain at the true peak, (g_alarm - g_0) / (g_peak -
g_0) -- a share of the gain rather than SCIENCE.md's ratio of raw golds, because gold's scale and
sign are arbitrary; a run without an alarm keeps the gain at its end.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from orchestrator.config.schema import MONITOR_DETECTORS, MonitorConfig

DETECTORS = tuple(MONITOR_DETECTORS)


@dataclass(frozen=True)
class Rule:
    """``signal`` beyond ``threshold`` (``above``: >, ``below``: <) for ``patience`` evaluations in a row."""

    threshold: float
    direction: str = "above"
    patience: int = 1

    def __post_init__(self):
        if self.direction not in ("above", "below"):
            raise ValueError(f"direction {self.direction!r} must be above or below")
        if self.patience < 1:
            raise ValueError(f"patience {self.patience} must be >= 1")

    def describe(self) -> str:
        return f"{'>' if self.direction == 'above' else '<'} {self.threshold:g} for {self.patience} evaluation(s)"


def as_rule(rule) -> Rule:
    """A ``Rule``, or one from ``MonitorConfig.rules()``'s (threshold, direction, patience)."""
    return rule if isinstance(rule, Rule) else Rule(*rule)


# the default rules (config ``monitor.<detector>`` overrides them; units in ``MonitorConfig``'s docs)
DEFAULT_RULES = {name: as_rule(r) for name, r in MonitorConfig().rules().items()}


def first_alarm(signal, rule: Rule) -> int | None:
    """Index of the first evaluation where ``signal`` has been beyond the threshold for ``patience``
    evaluations in a row (the last of them: when the rule can first be known), or None. NaN never
    counts (a signal not yet defined, e.g. a fit with too few points)."""
    run = 0
    for i, v in enumerate(np.asarray(signal, dtype=float)):
        hit = (v > rule.threshold) if rule.direction == "above" else (v < rule.threshold)
        run = run + 1 if (not math.isnan(v) and hit) else 0
        if run >= rule.patience:
            return i
    return None


# ------------------------------------------------------------------------------------------
# signals, one value per evaluation


def independent_gap(proxy, independent) -> np.ndarray:
    """``proxy``: [T] the training proxy's mean score per evaluation; ``independent``: [T, J] the
    independent RMs' (or [T]). Gap_t = (proxy_t - proxy_0) - mean_j (ind_tj - ind_0j); the signal is
    gap_t - min_{s<=t} gap_s."""
    p = np.asarray(proxy, dtype=float)
    ind = np.asarray(independent, dtype=float)
    ind = ind[:, None] if ind.ndim == 1 else ind
    gap = (p - p[0]) - (ind - ind[0]).mean(1)
    return gap - np.minimum.accumulate(gap)


def relative(series, base_index: int = 0) -> np.ndarray:
    """``series`` divided by its value at ``base_index`` (disagreement, entropy)."""
    s = np.asarray(series, dtype=float)
    return s / s[base_index] if s[base_index] != 0 else np.full_like(s, np.nan)


def length_drift(lengths) -> np.ndarray:
    s = np.asarray(lengths, dtype=float)
    return np.abs(s / s[0] - 1.0)


def kl_acceleration(steps, kl, early: int = 2) -> np.ndarray:
    """KL per step over each interval between evaluations, divided by the mean rate of the first
    ``early`` intervals; NaN until ``early`` intervals exist (and at evaluation 0)."""
    st, k = np.asarray(steps, dtype=float), np.asarray(kl, dtype=float)
    out = np.full(len(k), np.nan)
    if len(k) < 2:
        return out
    rate = np.diff(k) / np.maximum(np.diff(st), 1e-12)
    base = rate[:early].mean() if len(rate) >= early else np.nan
    if not base > 0:
        return out
    out[1:] = rate / base
    out[1: early + 1] = np.nan  # the early intervals define the baseline
    return out


def fit_rl_form(d, r) -> tuple[float, float] | None:
    """Least-squares (alpha, beta) of r - r_0 = d (alpha - beta log d) (Gao et al. 2022, eq. 2);
    None with fewer than 3 points of d > 0."""
    d, r = np.asarray(d, dtype=float), np.asarray(r, dtype=float)
    ok = d > 1e-9
    if ok.sum() < 3:
        return None
    x = np.stack([d[ok], -d[ok] * np.log(d[ok])], 1)
    coef, *_ = np.linalg.lstsq(x, r[ok], rcond=None)
    return float(coef[0]), float(coef[1])


def proxy_slope(kl, proxy, min_points: int = 3) -> np.ndarray:
    """The online fit's marginal gain dR/dd = alpha - beta (log d + 1) at each evaluation's d =
    sqrt(KL), fitted on the evaluations so far, relative to the gain the first fit gave at its own
    last point. NaN until ``min_points`` evaluations with KL > 0."""
    d = np.sqrt(np.maximum(np.asarray(kl, dtype=float), 0.0))
    r = np.asarray(proxy, dtype=float) - float(np.asarray(proxy, dtype=float)[0])
    out = np.full(len(d), np.nan)
    base = None
    for t in range(len(d)):
        if (d[: t + 1] > 1e-9).sum() < min_points:
            continue
        fit = fit_rl_form(d[: t + 1], r[: t + 1])
        if fit is None or d[t] <= 1e-9:
            continue
        alpha, beta = fit
        slope = alpha - beta * (math.log(d[t]) + 1.0)
        if base is None:
            base = slope
        out[t] = slope / base if base > 0 else np.nan
    return out


def mahalanobis_fit(reference, shrinkage: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Mean and inverse covariance of ``reference`` features [n, h], the covariance shrunk towards its
    mean variance (``shrinkage`` in [0, 1]; a hidden layer is wider than a few hundred samples)."""
    x = np.asarray(reference, dtype=np.float64)
    mu = x.mean(0)
    cov = np.cov(x - mu, rowvar=False).reshape(x.shape[1], x.shape[1])
    target = np.eye(len(cov)) * np.trace(cov) / len(cov)
    return mu, np.linalg.pinv((1 - shrinkage) * cov + shrinkage * target)


def mahalanobis(features, mu, inv) -> np.ndarray:
    z = np.asarray(features, dtype=np.float64) - mu
    return np.sqrt(np.maximum(np.einsum("ij,jk,ik->i", z, inv, z), 0.0))


def outlier_share(reference, held_out, features, quantile: float = 0.95, shrinkage: float = 0.1) -> float:
    """Share of ``features`` (the policy's samples) farther from ``reference`` (SFT samples) than the
    ``quantile`` of ``held_out`` SFT samples' own distances."""
    mu, inv = mahalanobis_fit(reference, shrinkage)
    cut = float(np.quantile(mahalanobis(held_out, mu, inv), quantile))
    return float((mahalanobis(features, mu, inv) > cut).mean())


# ------------------------------------------------------------------------------------------
# scoring against gold


def score_run(trial: str, steps, kl, gold, gold_se, alarm: int | None) -> dict:
    """One run's record: the alarm (index into the evaluations, or None) against the true gold peak."""
    steps, kl, gold = (np.asarray(x, dtype=float) for x in (steps, kl, gold))
    se = np.asarray(gold_se, dtype=float) if np.ndim(gold_se) else np.full(len(gold), float(gold_se))
    peak = int(np.argmax(gold))
    falls = bool((gold[peak:] < gold[peak] - 2 * se[peak]).any())
    rec = {"trial": trial, "alarm_step": None, "alarm_kl": None, "gold_peak_step": int(steps[peak]),
           "gold_peak_kl": float(kl[peak]), "gold_at_alarm": None, "gold_at_peak": float(gold[peak]),
           "gold_at_end": float(gold[-1]), "gold_falls": falls, "lead_evals": None, "lead_kl": None,
           "false_alarm": False}
    gain_peak = gold[peak] - gold[0]
    if alarm is None:
        rec["gold_kept_frac"] = float((gold[-1] - gold[0]) / gain_peak) if gain_peak > 0 else None
        return rec
    risen = bool(gold[alarm] - gold[0] >= 2 * se[0])
    rec.update(alarm_step=int(steps[alarm]), alarm_kl=float(kl[alarm]), gold_at_alarm=float(gold[alarm]),
               lead_evals=peak - alarm, lead_kl=float(kl[peak] - kl[alarm]),
               false_alarm=(not risen) or (not falls),
               gold_kept_frac=float((gold[alarm] - gold[0]) / gain_peak) if gain_peak > 0 else None)
    return rec


def score_detector(name: str, rule: Rule, runs: list[dict]) -> dict:
    """``runs``: [{trial, steps, kl, gold, gold_se, signal}] -> frontier.json's ``monitor.detectors``
    entry: the rule, each run's record, the median lead over the runs whose alarm was not false (a
    false alarm's lead is no warning), the false-alarm rate over runs that alarmed (an alarm in a
    run whose gold never falls is false), and the mean gold kept over all runs."""
    recs = [score_run(r["trial"], r["steps"], r["kl"], r["gold"], r["gold_se"], first_alarm(r["signal"], rule))
            for r in runs]
    return {"name": name, "threshold": rule.threshold, "direction": rule.direction, "patience": rule.patience,
            "rule": rule.describe(), "runs": recs, **summarize_records(recs)}


def calibrate(name: str, direction: str, patience, runs: list[dict], thresholds, max_false_alarm: float = 0.1,
              objective: str = "gold_kept") -> dict:
    """The threshold of a detector chosen on calibration ``runs`` ([{trial, steps, kl, gold, gold_se,
    signal}], as ``score_detector`` takes them): among ``thresholds`` whose false-alarm rate is at
    most ``max_false_alarm``, the one with the most gold kept if every run stopped at its alarm
    (``objective`` ``gold_kept``: the mean over runs, a run without an alarm keeping its end) or
    the most runs warned before their gold peak (``warned``); ties go to the other criterion, then to
    the lower false-alarm rate. Returns {name, threshold (None when no candidate alarms within the
    rate), patience, best, scan}: the whole scan, so the choice can be audited. ``patience``: one
    value or several to choose among. Choose on runs of one seed and
    score on others: a threshold scored on the runs it was chosen on flatters the detector."""
    if objective not in ("gold_kept", "warned"):
        raise ValueError(f"objective {objective!r}: gold_kept or warned")
    scan = []
    for pat in ([patience] if np.ndim(patience) == 0 else list(patience)):
        for t in thresholds:
            s = score_detector(name, Rule(float(t), direction, int(pat)), runs)
            scan.append({"threshold": float(t), "patience": int(pat), **{k: s[k] for k in ("alarms", "warned_before_peak", "false_alarm_rate",
                                                                        "lead_median", "gold_kept_frac")}})
    ok = [x for x in scan if x["alarms"] > 0 and (x["false_alarm_rate"] or 0.0) <= max_false_alarm]
    kept = lambda x: x["gold_kept_frac"] if x["gold_kept_frac"] is not None else -np.inf  # noqa: E731
    key = ((lambda x: (kept(x), x["warned_before_peak"], -x["false_alarm_rate"])) if objective == "gold_kept"
           else (lambda x: (x["warned_before_peak"], kept(x), -x["false_alarm_rate"])))
    best = max(ok, key=key, default=None)
    return {"name": name, "threshold": None if best is None else best["threshold"],
            "patience": None if best is None else best["patience"], "best": best, "scan": scan}


def summarize_records(recs: list[dict]) -> dict:
    """A detector's summary from its run records (``score_run``'s; one run's or several seeds'
    pooled): alarms, alarms that warned before the peak, the median lead over the runs whose alarm
    was not false (a false alarm's lead is no warning), the false-alarm rate over runs that alarmed
    (an alarm in a run whose gold never falls is false), and the mean gold kept over all runs."""
    alarmed = [x for x in recs if x["alarm_step"] is not None]
    true = [x for x in alarmed if not x["false_alarm"]]
    kept = [x["gold_kept_frac"] for x in recs if x["gold_kept_frac"] is not None]
    return {"alarms": len(alarmed), "warned_before_peak": sum(1 for x in true if x["lead_evals"] > 0),
            "lead_median": float(np.median([x["lead_evals"] for x in true])) if true else None,
            "lead_kl_median": float(np.median([x["lead_kl"] for x in true])) if true else None,
            "false_alarm_rate": (sum(x["false_alarm"] for x in alarmed) / len(alarmed)) if alarmed else None,
            "gold_kept_frac": float(np.mean(kept)) if kept else None,
            "runs_gold_falls": sum(1 for x in recs if x["gold_falls"]), "n_runs": len(recs)}


# ------------------------------------------------------------------------------------------
# from a run's evaluation records (``RLRun.evals``) -- never from its gold

READS = ("step", "kl", "proxy", "tokens", "entropy", "proxy_spread", "proxy_independent", "proxy_monitored",
         "latent_outlier")


def signals(evals: list[dict]) -> dict[str, list[float]]:
    """Every detector's signal at each evaluation so far, from the keys in ``READS`` only (gold and its
    standard error are never read: the monitor is what a run without gold can compute). A signal
    whose inputs the records lack (no independent RMs, a one-member proxy) is NaN throughout. Each
    value depends on the evaluations up to its own, so the live value (the last) equals the value a
    post-hoc pass computes."""
    n = len(evals)
    col = {k: np.array([float(e.get(k, float("nan"))) for e in evals]) for k in READS}
    nan = np.full(n, np.nan)
    if n == 0:
        return {d: [] for d in DETECTORS}
    out = {
        # the training proxy on the rows the independent RMs scored (``proxy_monitored``; older
        # records: all rows)
        "independent_gap": (independent_gap(np.where(np.isfinite(col["proxy_monitored"]), col["proxy_monitored"],
                                                     col["proxy"]), col["proxy_independent"])
                            if np.isfinite(col["proxy_independent"]).all() else nan),
        "disagreement": relative(col["proxy_spread"]) if np.isfinite(col["proxy_spread"]).all() else nan,
        "proxy_slope": proxy_slope(col["kl"], col["proxy"]),
        "kl_acceleration": kl_acceleration(col["step"], col["kl"]),
        "entropy": relative(col["entropy"]) if np.isfinite(col["entropy"][0]) else nan,
        "length_drift": length_drift(col["tokens"]) if col["tokens"][0] > 0 else nan,
        "latent_outlier": col["latent_outlier"],
    }
    return {k: [float(x) for x in v] for k, v in out.items()}


def monitor_section(rules: dict[str, Rule], runs: list[dict]) -> dict:
    """frontier.json's ``monitor``: each detector scored over ``runs`` ([{trial, steps, kl, gold,
    gold_se, signals: {detector: [...]}}], the sweep's RL runs with gold), the detectors whose
    signal no run has (all NaN) listed as not evaluated."""
    out: dict = {"detectors": [], "not_evaluated": {}}
    if runs:  # the baseline: every run to its end (gold kept without stopping)
        base = [score_run(r["trial"], r["steps"], r["kl"], r["gold"], r["gold_se"], None) for r in runs]
        out["no_stop"] = {k: v for k, v in summarize_records(base).items() if k in ("gold_kept_frac", "n_runs",
                                                                                     "runs_gold_falls")}
    for name in DETECTORS:
        have = [r for r in runs if any(v is not None and np.isfinite(v) for v in r["signals"].get(name, []))]
        if not have:
            out["not_evaluated"][name] = ("undefined on every run: its inputs are absent (no independent RMs, one "
                                          "member) or it never became defined (KL did not grow)")
            continue
        out["detectors"].append(score_detector(name, as_rule(rules[name]), [
            {**r, "signal": [np.nan if v is None else v for v in r["signals"][name]]} for r in have]))
    return out
