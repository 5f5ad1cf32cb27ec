"""The gold-free monitor's section of the config (``monitor``): each detector's threshold rule
(``orchestrator.math.monitor`` computes the signals; ``orchestrator.config.schema`` re-exports these)."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.config.loading import _check

# the gold-free detectors (``orchestrator.math.monitor``) and the direction their signal alarms in
MONITOR_DETECTORS = {"independent_gap": "above", "disagreement": "above", "proxy_slope": "below",
                     "kl_acceleration": "above", "entropy": "below", "length_drift": "above",
                     "latent_outlier": "above"}


@dataclass(frozen=True)
class MonitorRule:
    """A detector's threshold rule: its signal beyond ``threshold`` for ``patience`` evaluations in a
    row is an alarm (the direction is the detector's: ``orchestrator.math.monitor``)."""

    threshold: float = 1.0
    patience: int = 2

    def __post_init__(self):
        _check(self.patience >= 1, "patience", f"{self.patience} must be >= 1")
        _check(self.threshold == self.threshold, "threshold", "must be a number")


def _rule(threshold: float, patience: int = 2):
    return field(default_factory=lambda: MonitorRule(threshold, patience))


@dataclass(frozen=True)
class MonitorConfig:
    """The gold-free overoptimization monitor (``orchestrator.math.monitor``): its signals are computed
    at every RL evaluation and logged as ``monitor/<detector>``; these rules turn them into alarm steps,
    scored against gold in ``frontier.json``'s ``monitor`` section (issue 19)."""

    independent_gap: MonitorRule = _rule(0.5)
    """The training proxy's rise minus independent RMs', from its lowest point (scores' units, z on SFT)."""
    disagreement: MonitorRule = _rule(1.5)
    """The proxy members' spread on the policy's samples, x the first evaluation's (above)."""
    proxy_slope: MonitorRule = _rule(0.25)
    """The online RL-form fit's marginal proxy gain per sqrt-nat, x the first fitted one (below)."""
    kl_acceleration: MonitorRule = _rule(1.7, 1)
    """KL per step, x the early rate (above). 1.7 with patience 1: the rule with the most gold kept at a
    false-alarm rate <= 10% on the default's seed-0 runs (``monitor.calibrate``, 2026-12-01), scored on
    other seeds in the README; no other detector had a threshold within that rate there."""
    entropy: MonitorRule = _rule(0.7)
    """The policy's per-token entropy, x the first evaluation's (below)."""
    length_drift: MonitorRule = _rule(0.3)
    """|mean response length / the first evaluation's - 1| (above)."""
    latent_outlier: MonitorRule = _rule(0.25)
    """Share of the policy's samples beyond the SFT samples' 95th-percentile Mahalanobis distance (above)."""

    disjoint_size: str = ""
    """A proxy size (one of ``proxy.sizes``) for the disjoint-labels judge: two more proxies of that
    size are trained on disjoint halves of the labelled prompts (``proxy-<size>-half-a`` / ``-half-b``)
    and one more no-penalty trial trains on half a, monitored by half b alone -- an independent RM
    that shares none of its labels. Empty: off."""

    def rules(self) -> dict[str, tuple[float, str, int]]:
        """Every detector's rule as (threshold, direction, patience) (``monitor.Rule(*rule)``)."""
        return {name: (getattr(self, name).threshold, direction, getattr(self, name).patience)
                for name, direction in MONITOR_DETECTORS.items()}
