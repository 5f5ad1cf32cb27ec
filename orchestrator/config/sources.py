"""Bring-your-own sources in the config: datasets (prompts, demonstrations, preferences) and the
gold reward models, and the name a model reference goes by (re-exported by ``schema``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.config.loading import _check


def model_key(ref: str) -> str:
    """The name a model reference goes by in stage, trial and report names: the last part of its
    path or hub id (``EleutherAI/pythia-70m`` -> ``pythia-70m``; ``tiny:llama-2x32`` -> ``llama-2x32``)."""
    import re

    tail = ref.removeprefix("tiny:").rstrip("/").split("/")[-1]
    return re.sub(r"[^A-Za-z0-9._-]+", "_", tail) or "model"


@dataclass(frozen=True)
class DataSource:
    """Where rows come from: a local file (``.parquet``, ``.jsonl``/``.json``, ``.csv``), a dataset
    directory, a hub dataset id, or a ``tiny:`` file; the prompt column every source has."""

    path: str = ""
    """A local file or directory, a hub id, or ``tiny:prompts`` / ``tiny:demos`` / ``tiny:preferences``."""
    split: str = "train"
    """The split read (a local file is split ``train``)."""
    subset: str = ""
    """The dataset's configuration name, for hub datasets that have several (``load_dataset(path, subset)``)."""
    prompt_column: str = "prompt"
    """The column holding the prompt text."""


@dataclass(frozen=True)
class DatasetConfig(DataSource):
    """Prompts from a dataset (``task.name: dataset``)."""

    eval_fraction: float = 0.1
    """Share of the prompts held out (drawn by seed): the best-of-n pool and the RL evaluation come
    from them, labelling and RL training from the rest."""
    chat_template: str = "auto"
    """``auto``: every model whose tokenizer has a chat template reads prompts through it (the
    policy generates after the user turn; RMs score the two-turn conversation); ``none``: plain text."""
    max_prompt_tokens: int = 0
    """Prompts longer than this (in the policy's tokens, template included) are dropped and counted;
    0 = the policy's context minus the longest response."""
    domain_column: str = ""
    """A column naming each prompt's domain (its family: the per-family frontiers and
    ``proxy.holdout_families`` read it; issue 21); empty = one family, ``dataset``."""

    def __post_init__(self):
        _check(0.0 < self.eval_fraction < 1.0, "eval_fraction", f"{self.eval_fraction} must be in (0, 1)")
        _check(self.chat_template in ("auto", "none"), "chat_template", f"{self.chat_template!r} must be auto or none")
        _check(self.max_prompt_tokens >= 0, "max_prompt_tokens", f"{self.max_prompt_tokens} must be >= 0")
        _check(bool(self.prompt_column), "prompt_column", "must name a column")


@dataclass(frozen=True)
class DemoDatasetConfig(DataSource):
    """Demonstrations for SFT from a dataset (``sft.dataset``; empty path = none)."""

    response_column: str = "response"
    """The demonstration column."""


@dataclass(frozen=True)
class PreferenceDatasetConfig(DataSource):
    """Human (or any) preference labels from a dataset (``label.source: dataset``)."""

    chosen_column: str = "chosen"
    """The preferred response."""
    rejected_column: str = "rejected"
    """The other response."""
    principle_columns: dict[str, str] = field(default_factory=dict)
    """Per-principle labels of the same pairs (``proxy.principles``; issue 22): {principle: column}, the
    column holding, per row, the preference for ``chosen`` over ``rejected`` on that principle alone --
    a number in [0, 1] (1: chosen is better, 0: rejected is, soft values allowed); 0.5 (a tie) and
    empty cells leave the row out of that principle's labels."""


@dataclass(frozen=True)
class GoldConfig:
    """The gold reward: the task's oracle (synthetic) or an ensemble of reward models."""

    models: tuple[str, ...] = ()
    """Sequence-classification RMs with a one-label head (local paths, hub ids or ``tiny:ARCH-LxW-rm``),
    each scored through its own tokenizer and template; gold = their mean. Empty = the synthetic
    task's oracle (a dataset task needs at least one)."""
    principles: dict[str, str] = field(default_factory=dict)
    """Per-principle gold (issue 22; the Pareto front's axes with your own models): {principle: one of
    ``gold.models``} -- that RM scores that principle (the overall gold stays the members' mean).
    Empty = no per-principle gold (the synthetic oracle has its own)."""
    dtype: str = "float32"
    """The gold RMs' weights in memory: ``float32``, or ``bfloat16`` / ``float16`` to halve a 7B gold's
    memory (scores are returned as float)."""

    def __post_init__(self):
        _check(self.dtype in ("float32", "bfloat16", "float16"), "dtype", f"{self.dtype!r} must be float32, "
               "bfloat16 or float16")
        _check(len(set(self.models)) == len(self.models), "models", f"{list(self.models)} has duplicates")
        keys = [model_key(m) for m in self.models]
        _check(len(set(keys)) == len(keys), "models", f"{keys}: two models go by one name")
        for p, ref in self.principles.items():
            _check(model_key(ref) in keys, f"principles.{p}", f"{ref!r} is not one of gold.models {list(self.models)}")
        _check(len(set(map(model_key, self.principles.values()))) == len(self.principles), "principles",
               "one gold RM per principle")
