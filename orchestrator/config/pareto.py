"""The ``pareto`` section of the config (issue 22; re-exported by ``orchestrator.config.schema``):
per-family principle weights and constrained RL over the per-principle proxies
(``proxy.principles``). The fixed and learned weight vectors are sweep axes
(``sweep.principle_weights`` / ``principle_simplex`` / ``principle_learned``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.config.loading import _check

CONSTRAINT_BASES = ("reference", "frontier")


@dataclass(frozen=True)
class ParetoConfig:
    """Aggregations of the per-principle proxies beyond fixed weights, each a no-penalty trial of
    the sweep whose gold per principle joins frontier.json's ``pareto`` front."""

    family_weights: dict[str, tuple[float, ...]] = field(default_factory=dict)
    """Task-dependent weights: {prompt family: one weight per principle (``proxy.principles``'
    order, >= 0, summing to 1)}; ``"*"`` covers every family not named. One trial
    (``principles-<size>-family-kl0``) optimizing, on each prompt, its family's weighted sum. Empty = off."""
    constraint_levels: tuple[float, ...] = ()
    """Constrained RL (Moskovitz et al. 2024): one trial per level, maximizing ``constraint_maximize``
    subject to every other principle's proxy r_i >= c_i, with c_i = reference_i + level x unit_i:
    reference_i is r_i's mean on the SFT policy's evaluation samples (the run's step-0 evaluation)
    and unit_i its standard deviation there (``constraint_base: reference``) or r_i's best-of-n gain
    at its own principle's gold peak in a finished run -- the peak KL of that curve's Gao fit
    (``frontier``: level 1 is that proxy point).
    Level 0 = no principle's proxy falls below the SFT policy. Empty = off."""
    constraint_maximize: str = "mean"
    """What the constrained runs maximize: one of ``proxy.principles`` (the others are constrained)
    or ``mean`` (the principles' mean; every principle is constrained)."""
    constraint_base: str = "reference"
    """The constraint levels' unit: ``reference`` (the proxy's s.d. on SFT samples) or ``frontier``
    (its proxy point, read from ``constraint_frontier``)."""
    constraint_frontier: str = ""
    """``constraint_base: frontier``: a finished run's frontier.json (or its run directory) with the
    same ``proxy.principles`` proxies' best-of-n curves."""
    multiplier_lr: float = 0.2
    """Step size of the multipliers' projected gradient ascent, per RL step, on the violation in
    units of the proxy's s.d. on SFT samples: lambda_i <- max(0, lambda_i + lr (c_i - r_i) / sd_i)."""

    def __post_init__(self):
        for f, w in self.family_weights.items():
            _check(len(w) >= 1 and all(x >= 0 for x in w) and abs(sum(w) - 1) < 1e-6, f"family_weights.{f}",
                   f"{list(w)}: weights >= 0 summing to 1")
        _check(len(set(self.constraint_levels)) == len(self.constraint_levels), "constraint_levels",
               f"{list(self.constraint_levels)} has duplicates")
        _check(self.constraint_base in CONSTRAINT_BASES, "constraint_base",
               f"{self.constraint_base!r} is not one of {', '.join(CONSTRAINT_BASES)}")
        _check(self.constraint_base != "frontier" or bool(self.constraint_frontier), "constraint_frontier",
               "constraint_base frontier reads the proxy points from a finished run: name its frontier.json")
        _check(self.multiplier_lr > 0, "multiplier_lr", f"{self.multiplier_lr} must be > 0")


def check(cfg) -> None:
    """The section against the rest of the config (``cfg``: the FrontierConfig, which imports this
    module -- hence no annotation)."""
    from pathlib import Path

    p, pr = cfg.pareto, list(cfg.proxy.principles)
    if p.family_weights:
        _check(len(pr) >= 2, "pareto.family_weights", "per-family weights need proxy.principles with >= 2 principles")
        for f, w in p.family_weights.items():
            _check(len(w) == len(pr), f"pareto.family_weights.{f}",
                   f"{list(w)}: one weight per principle of proxy.principles {pr}")
            _check(f == "*" or cfg.task.name != "synthetic" or f in cfg.task.families, f"pareto.family_weights.{f}",
                   f"{f!r} is not one of task.families {list(cfg.task.families)} (or '*')")
        _check("*" in p.family_weights or (cfg.task.name == "synthetic" and set(cfg.task.families) <= set(p.family_weights)),
               "pareto.family_weights", "names no weights for some families: add them or '*' (a dataset's "
               "families are its domain column's values: '*' is needed)")
    if p.constraint_levels:
        _check(len(pr) >= 2, "pareto.constraint_levels", "constrained RL needs proxy.principles with >= 2 principles")
        _check(p.constraint_maximize == "mean" or p.constraint_maximize in pr, "pareto.constraint_maximize",
               f"{p.constraint_maximize!r} is not 'mean' or one of proxy.principles {pr}")
        if p.constraint_base == "frontier":
            path = Path(p.constraint_frontier).expanduser()
            path = path / "frontier.json" if path.is_dir() else path
            _check(path.is_file(), "pareto.constraint_frontier", f"{path} is not a file")
