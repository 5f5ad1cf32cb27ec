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


class HFDecoder:
    """Incremental decoding through any HF causal LM and its KV cache (the general path)."""

    def __init__(self, model):
        self.model, self.kw = model, _cache_kw(model)

    def prefill(self, ids, attn, pos):
        out = self.model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, logits_to_keep=1)
        return out.logits[:, -1, :], _cache_of(out)

    def step(self, tok, attn, pos, past):
        out = self.model(input_ids=tok[:, None], attention_mask=attn, position_ids=pos, use_cache=True,
                         **{self.kw: past})
        return out.logits[:, -1, :], _cache_of(out)

    @staticmethod
    def select(past, keep):
        past.batch_select_indices(keep)
        return past


class GPT2Decoder:
    """GPT-2 decoding as a dozen plain torch ops per layer over a preallocated KV cache.

    Same weights as the HF model (it reads the module's parameters, so in-place weight loads are
    seen) and the same math; it skips the per-call machinery of ``transformers`` (output classes,
    cache objects, mask builders), which dominates a 2-layer model: ~3-4x faster sampling on CPU.
    Logits agree with the HF forward to float rounding (tested). Used only for ``gpt2`` models with
    a tanh/erf GELU; anything else takes ``HFDecoder``.
    """

    def __init__(self, model, max_len: int):
        import torch.nn.functional as F

        self.F, self.model, self.max_len = F, model, max_len
        c = model.config
        self.h, self.d = c.n_head, c.n_embd // c.n_head
        self.eps = c.layer_norm_epsilon
        self.approx = "tanh" if c.activation_function in ("gelu_new", "gelu_pytorch_tanh") else "none"

    @staticmethod
    def supports(model) -> bool:
        c = model.config
        return (c.model_type == "gpt2" and c.activation_function in ("gelu_new", "gelu_pytorch_tanh", "gelu")
                and not c.scale_attn_by_inverse_layer_idx and not c.reorder_and_upcast_attn and c.scale_attn_weights)

    def _layers(self, x, q_pos, kv_len, mask, cache, last_only: bool = True, hidden: bool = False, keep=None):
        F, tr = self.F, self.model.transformer
        b, t, e = x.shape
        for i, blk in enumerate(tr.h):
            a = F.layer_norm(x, (e,), blk.ln_1.weight, blk.ln_1.bias, self.eps)
            qkv = torch.addmm(blk.attn.c_attn.bias, a.reshape(b * t, e), blk.attn.c_attn.weight).view(b, t, 3, self.h, self.d)
            q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [b, h, t, d]
            if cache is None:  # one pass over whole sequences (differentiable)
                kc, vc = k, v
            else:
                kc, vc = cache[i]
                kc[:, :, q_pos: q_pos + t] = k
                vc[:, :, q_pos: q_pos + t] = v
            o = F.scaled_dot_product_attention(q, kc[:, :, :kv_len], vc[:, :, :kv_len], attn_mask=mask)
            o = o.transpose(1, 2).reshape(b * t, e)
            x = x + torch.addmm(blk.attn.c_proj.bias, o, blk.attn.c_proj.weight).view(b, t, e)
            m = F.layer_norm(x, (e,), blk.ln_2.weight, blk.ln_2.bias, self.eps).reshape(b * t, e)
            m = F.gelu(torch.addmm(blk.mlp.c_fc.bias, m, blk.mlp.c_fc.weight), approximate=self.approx)
            x = x + torch.addmm(blk.mlp.c_proj.bias, m, blk.mlp.c_proj.weight).view(b, t, e)
        x = x[:, -1] if last_only else (x if keep is None else x[:, keep])
        x = F.layer_norm(x, (e,), tr.ln_f.weight, tr.ln_f.bias, self.eps)
        logits = x @ self.model.lm_head.weight.T
        return (logits, x) if hidden else logits

    def forward(self, ids, attn, pos, hidden: bool = False, keep: slice | None = None):
        """Logits ``[b, p, V]`` (and the final hidden states after ``ln_f``) at the positions
        ``keep`` (default all) of whole sequences: the HF forward's math without its per-call
        machinery; differentiable (the learner's update runs through it). Padded query rows attend
        to themselves only."""
        tr = self.model.transformer
        p = ids.shape[1]
        valid = attn.bool()
        dev = ids.device
        mask = ((torch.ones(p, p, dtype=torch.bool, device=dev).tril()[None] & valid[:, None, :])
                | torch.eye(p, dtype=torch.bool, device=dev)[None])
        x = tr.wte(ids) + tr.wpe(pos)
        return self._layers(x, 0, p, mask[:, None], None, last_only=False, hidden=hidden, keep=keep)

    def prefill(self, ids, attn, pos):
        tr = self.model.transformer
        b, p = ids.shape
        n = len(tr.h)
        dev, dt = ids.device, tr.wte.weight.dtype
        cache = [(torch.zeros(b, self.h, self.max_len, self.d, device=dev, dtype=dt),
                  torch.zeros(b, self.h, self.max_len, self.d, device=dev, dtype=dt)) for _ in range(n)]
        valid = attn.bool()
        causal = torch.ones(p, p, dtype=torch.bool, device=dev).tril()
        mask = (causal[None] & valid[:, None, :]) | torch.eye(p, dtype=torch.bool, device=dev)[None]  # pads see themselves
        x = tr.wte(ids) + tr.wpe(pos)
        logits = self._layers(x, 0, p, mask[:, None], cache)
        return logits, {"cache": cache, "len": p, "valid": valid}

    def step(self, tok, attn, pos, state):
        tr = self.model.transformer
        t = state["len"]
        x = tr.wte(tok)[:, None] + tr.wpe(pos)
        valid = attn.bool()[:, None, None, : t + 1]
        logits = self._layers(x, t, t + 1, valid, state["cache"])
        state["len"] = t + 1
        return logits, state

    @staticmethod
    def select(state, keep):
        state["cache"] = [(k[keep], v[keep]) for k, v in state["cache"]]
        return state


def decoder_for(model, max_len: int):
    """The fast GPT-2 path where it applies, the generic HF path otherwise."""
    return GPT2Decoder(model, max_len) if GPT2Decoder.supports(model) else HFDecoder(model)


@torch.no_grad()
def sample(model, prompts: list[list[int]], max_new_tokens: int, temperature: float, eos_id: int,
           pad_id: int, generator: torch.Generator, compact_below: float = 0.75,
           fast: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sample one response per prompt row.

    prompts: b token-id lists. Returns ``(ids [b, t], mask [b, t], logprobs [b, t])``: response tokens
    right-padded with ``pad_id`` (EOS included and masked in), and log pi(token) under the tempered
    sampling distribution, 0 where masked. ``fast``: decode GPT-2 with ``GPT2Decoder``.

    Rows that have emitted EOS are dropped from the batch (and the KV cache) once fewer than
    ``compact_below`` of the rows still running are alive: responses are short on average but a
    batch of hundreds nearly always holds one that runs to ``max_new_tokens``. The random draws do
    not depend on compaction: each row draws from its own slice of one ``[b, V]`` uniform per step.
    On CPU the uniforms come from ``generator``; on a GPU from a generator on the device seeded by one
    draw from ``generator`` (a ``[b, V]`` uniform from a CPU generator is serial: ~0.3 s per step at
    512 x 50k vocabulary, far more than a GPU's decode step), so a seed gives the same samples on
    the same kind of device.
    """
    dev = next(model.parameters()).device  # the model's device: inputs and logits there, bookkeeping on CPU
    ids, attn = left_pad(prompts, pad_id)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    ids, attn, pos = ids.to(dev), attn.to(dev), pos.to(dev)
    dec = decoder_for(model, ids.shape[1] + max_new_tokens) if fast else HFDecoder(model)
    logits, past = dec.prefill(ids, attn, pos)
    next_pos = pos[:, -1:] + 1
    b = len(prompts)
    toks = torch.full((b, max_new_tokens), pad_id, dtype=torch.long)
    lps = torch.zeros((b, max_new_tokens), dtype=torch.float32)
    mask = torch.zeros((b, max_new_tokens), dtype=torch.long)
    rows = torch.arange(b)  # the original row of each row still in the batch
    done = torch.zeros(b, dtype=torch.bool)
    length = 0
    draws = generator
    if dev.type != "cpu":
        seed = int(torch.randint(0, 2 ** 62, (1,), generator=generator))
        draws = torch.Generator(device=dev).manual_seed(seed)
    rows_dev = rows.to(dev)
    for t in range(max_new_tokens):
        logp = torch.log_softmax(logits.float() / temperature, dim=-1)
        # Gumbel-max with one uniform per (original row, token) and step: the same samples whether
        # or not finished rows were compacted away.
        u = torch.rand((b, logp.shape[1]), generator=draws, device=draws.device)[rows_dev]
        tok = torch.argmax(logp - torch.log(-torch.log(u.clamp_min(1e-20))), dim=-1)
        tok_c, lp_c = tok.cpu(), logp.gather(1, tok[:, None]).squeeze(1).cpu()
        live = rows[~done]
        toks[live, t] = tok_c[~done]
        lps[live, t] = lp_c[~done]
        mask[live, t] = 1
        length = t + 1
        done = done | (tok_c == eos_id)
        if bool(done.all()):
            break
        if float((~done).float().mean()) < compact_below:
            keep = torch.nonzero(~done).squeeze(1)
            kd = keep.to(dev)
            past = dec.select(past, kd)
            rows, done = rows[keep], done[keep]
            rows_dev = rows.to(dev)
            tok, attn, next_pos = tok[kd], attn[kd], next_pos[kd]
        attn = torch.cat([attn, torch.ones((len(rows), 1), dtype=attn.dtype, device=dev)], dim=1)
        logits, past = dec.step(tok, attn, next_pos, past)
        next_pos = next_pos + 1
    return toks[:, :length], mask[:, :length], lps[:, :length]


def response_forward(model, prompts: list[list[int]], response_ids: torch.Tensor, response_mask: torch.Tensor,
                     pad_id: int, temperature: float = 1.0, hidden: bool = False, forward=None):
    """One forward pass over ``[left-padded prompt | right-padded response]`` rows, so every row's
    response sits in the same columns. Returns ``(logprobs [b, t], logits [b, t, V], hidden [b, t, H]
    or None)`` at the positions that predict each response token (logits divided by ``temperature``).
    The learner (with grad) and the reference (without) use this same function, so a policy equal to
    its reference gives exactly zero KL. ``forward``: what runs ``model``'s HF forward instead (a
    DeepSpeed engine wrapping it: ZeRO-3's parameters exist only inside its forward)."""
    dev = next(model.parameters()).device
    p_ids, p_mask = left_pad(prompts, pad_id)
    response_ids, response_mask = response_ids.to(dev), response_mask.to(dev)
    ids = torch.cat([p_ids.to(dev), response_ids], 1)
    attn = torch.cat([p_mask.to(dev), response_mask.to(p_mask.dtype)], 1)
    pos = (attn.cumsum(1) - 1).clamp(min=0)
    p, t = p_ids.shape[1], response_ids.shape[1]
    keep = slice(p - 1, p + t - 1)  # the positions that predict response tokens
    if forward is None and _plain_ok(model):  # GPT-2 without dropout: the same math in plain ops, LM head on `keep` only
        out = GPT2Decoder(model, ids.shape[1]).forward(ids, attn, pos, hidden=hidden, keep=keep)
        logits, h = out if hidden else (out, None)
    else:
        o = (forward or model)(input_ids=ids, attention_mask=attn, position_ids=pos, output_hidden_states=hidden)
        logits, h = o.logits[:, keep], (o.hidden_states[-1][:, keep] if hidden else None)
    logits = logits.float() / temperature
    logp = torch.log_softmax(logits, -1).gather(2, response_ids[:, :, None]).squeeze(2) * response_mask
    return logp, logits, h


def _plain_ok(model) -> bool:
    c = model.config
    no_dropout = not model.training or (c.resid_pdrop == 0 and c.embd_pdrop == 0 and c.attn_pdrop == 0)
    return GPT2Decoder.supports(model) and no_dropout


@torch.no_grad()
def response_logprobs(model, prompts: list[list[int]], response_ids: torch.Tensor,
                      response_mask: torch.Tensor, pad_id: int, temperature: float = 1.0,
                      chunk_rows: int = 32, batch_tokens: int = 0) -> torch.Tensor:
    """``[b, t]`` log pi(response token) for given responses (e.g. under the frozen reference),
    computed in chunks of rows of similar length (far less padding than one padded batch): at most
    ``chunk_rows`` rows and, given, ``batch_tokens`` padded tokens each."""
    from orchestrator.nn.models import token_chunks

    lengths = [len(p) + int(n) for p, n in zip(prompts, response_mask.sum(1))]
    out = torch.zeros(response_ids.shape, dtype=torch.float32)
    for rows in token_chunks(lengths, batch_tokens, chunk_rows):
        mask = response_mask[rows]
        t = max(1, int(mask.sum(1).max()))
        lp = response_forward(model, [prompts[i] for i in rows], response_ids[rows, :t], mask[:, :t], pad_id,
                              temperature)[0]
        out[rows, :t] = lp.cpu()
    return out
