"""The typed batches that cross actor boundaries (torchtune's ``Trajectory``, verl's ``DataProto``)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class RolloutBatch:
    """Responses sampled for a list of prompts, ``b = len(prompt_index)`` rows.

    prompt_index: ``[b]`` int, index of each row's prompt in the list passed to ``generate``.
    response_ids: ``[b, t]`` int64 response tokens (EOS included), right-padded with pad.
    response_mask: ``[b, t]`` 1 for real response tokens (EOS included), 0 for padding.
    logprobs: ``[b, t]`` float32 log pi(token) under the sampling policy (at the sampling temperature).
    ref_logprobs: ``[b, t]`` float32 log pi_ref(token), or None when not requested.
    texts: ``b`` decoded responses (special tokens removed).
    """

    prompt_index: np.ndarray
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor | None
    texts: list[str]

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def n_tokens(self) -> np.ndarray:
        """``[b]`` response lengths in tokens (EOS included)."""
        return self.response_mask.sum(1).numpy()


@dataclass
class Scores:
    """Scores of ``b`` responses by an ensemble of ``k`` members.

    values: ``[b, k]`` float, one column per member, named by ``members``.
    principles: name -> ``[b]`` per-principle scores (the gold oracle fills these).
    """

    values: np.ndarray
    members: tuple[str, ...]
    principles: dict[str, np.ndarray] = field(default_factory=dict)

    def mean(self) -> np.ndarray:
        """``[b]`` mean over members."""
        return self.values.mean(axis=1)
