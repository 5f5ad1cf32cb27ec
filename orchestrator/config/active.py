"""The active-learning section of the config (``active``, ``python -m jobs.active``; re-exported by
``orchestrator.config.schema``)."""

from __future__ import annotations

from dataclasses import dataclass

from orchestrator.config.loading import _check

# the acquisition functions (``orchestrator.math.active``): each is one arm of the comparison
ACQUISITIONS = ("disagreement", "margin", "random")


@dataclass(frozen=True)
class ActiveConfig:
    """Pool-based active learning of the proxy (``python -m jobs.active``): rounds of (score the
    unlabelled pairs of the labelling pool with an ensemble of proxies -> acquire ``per_round`` pairs
    by each arm's acquisition function -> reveal their labels -> retrain the ensemble from its LM on
    everything labelled so far). Every arm starts from the same ``initial`` random pairs and spends
    the same budget per round."""

    arms: tuple[str, ...] = ("disagreement", "margin", "random")
    """Acquisition functions compared: ``disagreement`` (the variance over members of
    sigma(r_i(a) - r_i(b)); Gleave & Irving 2022, Christiano et al. 2017), ``margin`` (the smallest
    |mean over members of r(a) - r(b)|) and ``random`` (the control arm)."""
    members: int = 3
    """Ensemble members: proxies of ``size`` started from the same LM, differing in the seed of the
    head's initialization and the minibatch order (Coste et al. 2023's seed ensemble) and, with
    ``bootstrap``, in their resample of the labels."""
    bootstrap: bool = True
    """Each member trains on its own bootstrap resample (by prompt) of the labelled pairs -- query by
    bagging (Abe & Mamitsuka 1998). Off: the members differ only in seed, and on the smoke profile
    their disagreement was ~1e-5 (Gleave & Irving 2022: members of one pretrained model barely
    disagree)."""
    size: str = ""
    """The members' proxy size (one of ``proxy.sizes``); empty: ``proxy.seed_member_size``'s rule
    (the smallest)."""
    initial: int = 500
    """Labelled pairs before the first round, drawn at random (the same for every arm)."""
    per_round: int = 500
    """Pairs acquired per round and arm (the label budget per round)."""
    rounds: int = 6
    """Acquisition rounds after the initial set: each arm ends with ``initial + rounds * per_round`` labels."""

    def __post_init__(self):
        _check(len(self.arms) >= 1 and all(a in ACQUISITIONS for a in self.arms), "arms",
               f"{list(self.arms)}: each one of {', '.join(ACQUISITIONS)}")
        _check(len(set(self.arms)) == len(self.arms), "arms", f"{list(self.arms)} has duplicates")
        _check(self.members >= 2, "members", f"{self.members}: an ensemble needs at least 2 (disagreement "
               "is a variance over members)")
        _check(self.initial >= 1, "initial", f"{self.initial} must be >= 1")
        _check(self.per_round >= 1, "per_round", f"{self.per_round} must be >= 1")
        _check(self.rounds >= 1, "rounds", f"{self.rounds} must be >= 1")

    @property
    def budget(self) -> int:
        """Labels each arm has used by its last round."""
        return self.initial + self.rounds * self.per_round
