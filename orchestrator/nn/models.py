"""Tiny HF models and the task tokenizer, built from config (or loaded by path on a cluster).

Policies are ``GPT2LMHeadModel``; reward models are ``GPT2ForSequenceClassification`` with one
label, so any HF tool can load a trained proxy (``save_pretrained`` writes safetensors).
"""

from __future__ import annotations

from pathlib import Path

import torch
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from orchestrator.config.schema import ModelConfig

PAD, BOS, SEP, EOS, UNK = "[PAD]", "[BOS]", "[SEP]", "[EOS]", "[UNK]"


def train_tokenizer(texts: list[str], out_dir: str | Path) -> PreTrainedTokenizerFast:
    """A word-level tokenizer over the task's own corpus (``tokenizers``), saved HF-style."""
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=[PAD, BOS, SEP, EOS, UNK]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, bos_token=BOS, sep_token=SEP,
                                   eos_token=EOS, unk_token=UNK)
    fast.save_pretrained(str(out_dir))
    return fast


def load_tokenizer(path: str | Path) -> PreTrainedTokenizerFast:
    return PreTrainedTokenizerFast.from_pretrained(str(path))


def _gpt2_config(cfg: ModelConfig, tok: PreTrainedTokenizerFast, **extra) -> GPT2Config:
    return GPT2Config(vocab_size=len(tok), n_positions=cfg.n_positions, n_embd=cfg.n_embd,
                      n_layer=cfg.n_layer, n_head=cfg.n_head, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                      activation_function="gelu_pytorch_tanh", **extra)


def build_policy(cfg: ModelConfig, tok: PreTrainedTokenizerFast, seed: int) -> torch.nn.Module:
    if cfg.path:
        return AutoModelForCausalLM.from_pretrained(cfg.path)
    torch.manual_seed(seed)
    return GPT2LMHeadModel(_gpt2_config(cfg, tok))


def build_reward_model(cfg: ModelConfig, tok: PreTrainedTokenizerFast, seed: int) -> torch.nn.Module:
    if cfg.path:
        return AutoModelForSequenceClassification.from_pretrained(cfg.path, num_labels=1)
    torch.manual_seed(seed)
    return GPT2ForSequenceClassification(_gpt2_config(cfg, tok, num_labels=1))


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def encode_prompt(tok: PreTrainedTokenizerFast, prompt: str) -> list[int]:
    """``[BOS] prompt [SEP]``: the policy continues with a response and ``[EOS]``."""
    return [tok.bos_token_id] + tok.encode(prompt, add_special_tokens=False) + [tok.sep_token_id]


def encode_pair(tok: PreTrainedTokenizerFast, prompt: str, response: str) -> list[int]:
    """``[BOS] prompt [SEP] response [EOS]`` -- what the policy is trained on and the RMs score."""
    return encode_prompt(tok, prompt) + tok.encode(response, add_special_tokens=False) + [tok.eos_token_id]


def pad_right(seqs: list[list[int]], pad_id: int, length: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to ``[b, t]`` ids and a ``[b, t]`` attention mask; t = the longest sequence, or
    ``length`` when that is longer (a fixed-shape pass)."""
    t = max(length, max(len(s) for s in seqs))
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        mask[i, : len(s)] = 1
    return ids, mask


def set_threads(num_cpus: float) -> int:
    """torch threads matching an actor's CPU share (fractions round down, at least one); also
    quiets transformers' per-load progress bars, which would flood the driver's log."""
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    n = max(1, int(num_cpus))
    torch.set_num_threads(n)
    return n


SCORE_TOKENS = 512
"""Tokens (rows x padded length) of one batch-invariant scoring pass when a role sets no
``batch_tokens``."""


def score_bucket(length: int, max_len: int = 0) -> int:
    """The padded length a sequence of ``length`` tokens is scored at: the next multiple of 16 up to
    256 tokens, of 64 beyond (at most 1/8 of the tokens are padding past 128), capped at the model's
    ``max_len`` (0 = no cap)."""
    step = 16 if length <= 256 else 64
    b = -(-max(length, 1) // step) * step
    return max(length, min(b, max_len)) if max_len else b


def invariant_chunks(lengths: list[int], budget: int, max_len: int = 0) -> list[tuple[list[int], int, int]]:
    """Batch-invariant scoring passes: ``(indices, padded length T, rows R)`` per pass, where T is
    the bucket of every sequence in it (``score_bucket``) and R = max(1, budget // T) rows depends on
    T alone -- a pass is always of shape [R, T], the last one per bucket filled up with copies.

    Why: a GEMM's rounding depends on its shape (the kernel's blocking, a GEMV path for one row), so
    padding a row to its batch's longest sequence, or scoring it among more or fewer rows, changes
    its score in the last bits (~5% of rows, up to ~7e-7, measured on the default's proxies). With
    the shape a function of the row's own length, a row's score is the same whichever rows it is
    scored with: in a run's best-of-n pool, an RL chunk, or a served request batched with other
    clients' (issue 23: the service returns exactly what the run computed; cf. SGLang #2427 and
    He and Thinking Machines Lab 2025, "Defeating nondeterminism in LLM inference", on batch invariance)."""
    by: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by.setdefault(score_bucket(n, max_len), []).append(i)
    out = []
    for t in sorted(by):
        rows = max(1, budget // t)
        idx = by[t]
        out += [(idx[k: k + rows], t, rows) for k in range(0, len(idx), rows)]
    return out


def token_chunks(lengths: list[int], budget: int, max_rows: int) -> list[list[int]]:
    """Indices into ``lengths`` sorted by length and cut into chunks of at most ``max_rows`` rows
    whose padded size (rows x longest) stays within ``budget`` tokens (0 = rows only); a row longer
    than the budget gets a chunk of its own."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    out: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        if cur and (len(cur) >= max_rows or (budget and (len(cur) + 1) * lengths[i] > budget)):
            out.append(cur)
            cur = []
        cur.append(i)
    if cur:
        out.append(cur)
    return out

