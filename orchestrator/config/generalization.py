"""The generalization section of the config (``generalization``, issue 21; re-exported by
``orchestrator.config.schema``). The proxies' own switches (``proxy.length_control``,
``proxy.holdout_families``) live in ``proxy``: they change how a proxy is trained."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.config.loading import _check

LENGTH_CONTROLS = ("none", "regress", "head")


@dataclass(frozen=True)
class GeneralizationConfig:
    """Reward-model generalization: length and domain analyses of every run (cheap: they read the
    best-of-n pool, the held-out pairs and the RL runs' evaluations), and domain fine-tuning (behind
    ``finetune_budgets``: it trains a proxy per budget)."""

    enabled: bool = True
    """The length and per-family analyses in frontier.json's ``generalization`` and the report:
    each RM's Spearman correlation with response length, length-controlled gold for every curve and
    its fits, per-family best-of-n and RL frontiers, in- vs out-of-domain accuracy."""
    length_controls: tuple[str, ...] = ()
    """Length-controlled proxies beside the job's own, side by side in one run: for each of these
    ``proxy.length_control`` modes (``regress``, ``head``), a proxy of each ``length_control_sizes``
    trained that way on the same labels from the same LM -- ``proxy-<size>-lc-<mode>`` -- with its
    best-of-n curve, calibration, length correlation and a no-penalty RL run (trial
    ``proxy-<size>-lc-<mode>-kl0``), compared with its size's own run at matched KL. Empty = none."""
    length_control_sizes: tuple[str, ...] = ()
    """The sizes that get length-controlled proxies; empty = ``rl.sizes`` (all proxies when that is empty)."""
    finetune_budgets: tuple[int, ...] = ()
    """Domain fine-tuning: each of ``finetune_sizes``' proxies, fine-tuned on this many labelled
    pairs of each held-out family (``proxy.holdout_families``), drawn from that family's training
    pairs; 0 = the proxy as trained. E.g. [0, 100, 300, 1000, 3000]. Empty = off."""
    finetune_sizes: tuple[str, ...] = ()
    """The proxies fine-tuned (names of ``proxy.sizes`` / ``proxy.models``); empty = the largest."""
    finetune_epochs: int = 4
    """Passes over the budget's pairs (a small budget takes few steps per pass)."""
    finetune_lr: float = 0.0
    """Peak learning rate of fine-tuning; 0 = half of ``proxy.lr``."""
    finetune_prompts_per_step: int = 8
    """Prompts per optimizer step in fine-tuning (every pair of those prompts is in the step)."""
    strata_bootstrap: int = 0
    """Bootstrap resamples for each family's best-of-n peak interval (0 = none: per family the
    pool has few prompts, and the intervals would be wide)."""

    def __post_init__(self):
        for i, m in enumerate(self.length_controls):
            _check(m in LENGTH_CONTROLS[1:], f"length_controls[{i}]", f"{m!r} must be regress or head")
        _check(len(set(self.length_controls)) == len(self.length_controls), "length_controls",
               f"{list(self.length_controls)} has duplicates")
        _check(all(k >= 0 for k in self.finetune_budgets), "finetune_budgets",
               f"{list(self.finetune_budgets)}: budgets are pair counts >= 0")
        _check(len(set(self.finetune_budgets)) == len(self.finetune_budgets), "finetune_budgets",
               f"{list(self.finetune_budgets)} has duplicates")
        _check(len(set(self.finetune_sizes)) == len(self.finetune_sizes), "finetune_sizes",
               f"{list(self.finetune_sizes)} has duplicates")
        _check(self.finetune_epochs >= 1, "finetune_epochs", "must be >= 1")
        _check(0 <= self.finetune_lr < 1, "finetune_lr", f"{self.finetune_lr} must be in [0, 1)")
        _check(self.finetune_prompts_per_step >= 1, "finetune_prompts_per_step", "must be >= 1")
        _check(self.strata_bootstrap >= 0, "strata_bootstrap", "must be >= 0")
