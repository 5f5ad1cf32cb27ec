"""Batched sampling with a KV cache and per-token log-probabilities (torch only, no Ray)."""

from __future__ import annotations

import inspect

import torch


def _cache_kw(model) -> str:
    """transformers 5.x renamed ``past_key_values`` to ``cache``; accept either."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(out):
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


def left_pad(seqs: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-pad to ``[b, t]`` ids and mask, so every row's next token sits in the last column."""
    t = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), t), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), t), dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, t - len(s):] = torch.tensor(s)
        mask[i, t - len(s):] = 1
    return ids, mask


@torch.no_grad()
def sample(model, prompts: list[list[int]], max_new_tokens: int, temperature: float, eos_id: int,
           pad_id: int, generator: torch.Generator, compact_below: float = 0.75) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample one response per prompt row.

    prompts: b token-id lists. Returns ``(ids [b, t], mask [b, t], logprobs [b, t])``: response tokens
    right-padded with ``pad_id`` (EOS included and masked in), and log pi(token) under the tempered
    sampling distribution, 0 where masked.

    Rows that have emitted EOS are dropped from the batch (and the KV cache) once fewer than
    ``compact_below`` of the rows still running are alive: responses are short on average but a
    batch of hundreds nearly always holds one that runs to ``max_new_tokens``. The random draws do
    not depend on compaction: each row draws from its own slice of one ``[b, V]`` uniform per step.
    """
    ids, attn = left_pad(prompts, pad_id)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    kw = _cache_kw(model)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1)
    past, logits = _cache_of(out), out.logits[:, -1, :]
    next_pos = pos[:, -1:] + 1
    b = len(prompts)
    toks = torch.full((b, max_new_tokens), pad_id, dtype=torch.long)
    lps = torch.zeros((b, max_new_tokens), dtype=torch.float32)
    mask = torch.zeros((b, max_new_tokens), dtype=torch.long)
    rows = torch.arange(b)  # the original row of each row still in the batch
    done = torch.zeros(b, dtype=torch.bool)
    length = 0
    for t in range(max_new_tokens):
        logp = torch.log_softmax(logits.float() / temperature, dim=-1)
        # Gumbel-max with one uniform per (original row, token) and step: the same samples whether
        # or not finished rows were compacted away.
        u = torch.rand((b, logp.shape[1]), generator=generator)[rows]
        tok = torch.argmax(logp - torch.log(-torch.log(u.clamp_min(1e-20))), dim=-1)
        live = rows[~done]
        toks[live, t] = tok[~done]
        lps[live, t] = logp.gather(1, tok[:, None]).squeeze(1)[~done]
        mask[live, t] = 1
        length = t + 1
        done = done | (tok == eos_id)
        if bool(done.all()):
            break
        if float((~done).float().mean()) < compact_below:
            keep = torch.nonzero(~done).squeeze(1)
            past.batch_select_indices(keep)
            rows, tok, attn, next_pos, done = rows[keep], tok[keep], attn[keep], next_pos[keep], done[keep]
        attn = torch.cat([attn, torch.ones((len(rows), 1), dtype=attn.dtype)], dim=1)
        out = model(input_ids=tok[:, None], attention_mask=attn, position_ids=next_pos, use_cache=True,
                    **{kw: past})
        past, logits = _cache_of(out), out.logits[:, -1, :]
        next_pos = next_pos + 1
    return toks[:, :length], mask[:, :length], lps[:, :length]


def response_forward(model, prompts: list[list[int]], response_ids: torch.Tensor, response_mask: torch.Tensor,
                     pad_id: int, temperature: float = 1.0, hidden: bool = False):
    """One forward pass over ``[left-padded prompt | right-padded response]`` rows, so every row's
    response sits in the same columns. Returns ``(logprobs [b, t], logits [b, t, V], hidden [b, t, H]
    or None)`` at the positions that predict each response token (logits divided by ``temperature``).
    The learner (with grad) and the reference (without) use this same function, so a policy equal to
    its reference gives exactly zero KL."""
    p_ids, p_mask = left_pad(prompts, pad_id)
    ids = torch.cat([p_ids, response_ids], 1)
    attn = torch.cat([p_mask, response_mask.to(p_mask.dtype)], 1)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=attn, position_ids=pos, output_hidden_states=hidden)
    p, t = p_ids.shape[1], response_ids.shape[1]
    logits = out.logits[:, p - 1: p + t - 1].float() / temperature
    logp = torch.log_softmax(logits, -1).gather(2, response_ids[:, :, None]).squeeze(2) * response_mask
    h = out.hidden_states[-1][:, p - 1: p + t - 1] if hidden else None
    return logp, logits, h


@torch.no_grad()
def response_logprobs(model, prompts: list[list[int]], response_ids: torch.Tensor,
                      response_mask: torch.Tensor, pad_id: int, temperature: float = 1.0) -> torch.Tensor:
    """``[b, t]`` log pi(response token) for given responses (e.g. under the frozen reference)."""
    return response_forward(model, prompts, response_ids, response_mask, pad_id, temperature)[0]
