"""The typed batches that cross actor boundaries (torchtune's ``Trajectory``, verl's ``DataProto``)."""

from __future__ import annotations

import contextlib
import contextvars
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
    prompt_ids: ``b`` prompt token lists (``[BOS] prompt [SEP]``), what the learner conditions on.
    policy_version: learner updates applied to the weights that sampled the batch (async staleness).
    """

    prompt_index: np.ndarray
    response_ids: torch.Tensor
    response_mask: torch.Tensor
    logprobs: torch.Tensor
    ref_logprobs: torch.Tensor | None
    texts: list[str]
    prompt_ids: list[list[int]] | None = None
    policy_version: int = 0

    def __len__(self) -> int:
        return len(self.texts)

    @property
    def n_tokens(self) -> np.ndarray:
        """``[b]`` response lengths in tokens (EOS included)."""
        return self.response_mask.sum(1).numpy()

    @staticmethod
    def concat(parts: list[RolloutBatch]) -> RolloutBatch:
        """Rows of ``parts`` in order; prompt indices offset so they stay distinct per prompt. Padding
        is masked out, so its token id (0) never matters."""
        if len(parts) == 1:
            return parts[0]
        t = max(p.response_ids.shape[1] for p in parts)

        def pad(x: torch.Tensor, value) -> torch.Tensor:
            return torch.nn.functional.pad(x, (0, t - x.shape[1]), value=value)

        offsets = np.cumsum([0] + [int(p.prompt_index.max()) + 1 for p in parts[:-1]])
        return RolloutBatch(
            prompt_index=np.concatenate([p.prompt_index + o for p, o in zip(parts, offsets)]),
            response_ids=torch.cat([pad(p.response_ids, 0) for p in parts]),
            response_mask=torch.cat([pad(p.response_mask, 0) for p in parts]),
            logprobs=torch.cat([pad(p.logprobs, 0.0) for p in parts]),
            ref_logprobs=(torch.cat([pad(p.ref_logprobs, 0.0) for p in parts])
                          if parts[0].ref_logprobs is not None else None),
            texts=[x for p in parts for x in p.texts],
            prompt_ids=[x for p in parts for x in p.prompt_ids] if parts[0].prompt_ids is not None else None,
            policy_version=min(p.policy_version for p in parts))


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

    @staticmethod
    def concat(parts: list[Scores]) -> Scores:
        """Rows of ``parts`` in order (sealed parts only inside ``metrics_scope()``)."""
        if len(parts) == 1:
            return parts[0]
        return Scores(values=np.concatenate([np.asarray(p.values) for p in parts]), members=parts[0].members,
                      principles={k: np.concatenate([np.asarray(p.principles[k]) for p in parts])
                                  for k in parts[0].principles})


# --------------------------------------------------------------------------------------------
# the gold information barrier (DESIGN.md "Roles")

_METRICS_SCOPE: contextvars.ContextVar[bool] = contextvars.ContextVar("gold_metrics_scope", default=False)


class BarrierError(RuntimeError):
    """Gold scores were read outside the metrics phase of the RL loop."""


@contextlib.contextmanager
def metrics_scope():
    """The only place sealed gold scores can be read: the RL loop's metrics phase (and reports)."""
    token = _METRICS_SCOPE.set(True)
    try:
        yield
    finally:
        _METRICS_SCOPE.reset(token)


def _refuse(self, *args, **kwargs):
    raise BarrierError("gold scores reached the training path (reward, advantage or learner); inside RL "
                       "they may only be read in the metrics phase")


class Sealed:
    """Gold scores inside RL: an array that can only be read within ``metrics_scope()``.

    Every way of getting at the numbers -- ``np.asarray``, indexing, iteration, ``float``, numpy
    ufuncs, arithmetic, ``torch.as_tensor`` (which goes through the sequence protocol) -- raises
    ``BarrierError`` outside the scope. So a code path that feeds gold into a reward, an advantage
    or the learner fails loudly instead of silently training on gold.
    """

    __slots__ = ("_a",)

    def __init__(self, a):
        self._a = np.asarray(a)

    def _open(self) -> np.ndarray:
        if not _METRICS_SCOPE.get():
            _refuse(self)
        return self._a

    def __array__(self, dtype=None, copy=None):
        a = self._open()
        return a if dtype is None else a.astype(dtype)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        args = [np.asarray(x) if isinstance(x, Sealed) else x for x in inputs]
        return getattr(ufunc, method)(*args, **kwargs)

    def __getitem__(self, key):
        return self._open()[key]

    def __iter__(self):
        return iter(self._open())

    def __len__(self) -> int:
        return len(self._a)

    @property
    def shape(self) -> tuple:
        return self._a.shape

    def __getstate__(self):
        return self._a

    def __setstate__(self, a):
        self._a = a

    def __repr__(self) -> str:
        return f"Sealed(shape={self._a.shape})"

    __float__ = __int__ = __index__ = __bool__ = _refuse
    __add__ = __radd__ = __sub__ = __rsub__ = __mul__ = __rmul__ = __truediv__ = __rtruediv__ = _refuse
    __neg__ = __pow__ = __lt__ = __le__ = __gt__ = __ge__ = __matmul__ = __rmatmul__ = _refuse


def seal(scores: Scores) -> Scores:
    return Scores(values=Sealed(scores.values), members=scores.members,
                  principles={k: Sealed(v) for k, v in scores.principles.items()})
