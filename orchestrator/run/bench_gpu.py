"""``python -m jobs.bench gpu``: one RL step's three phases on one GPU, with torch and transformers only
(no Ray: the GPU machine lent to sessions has none, and its wheel is too large to carry).

A policy the size of GPT-2 small (124M, built from config, no download) and a 124M reward model; a
realistic RL batch (default 64 prompts x 8 responses, 128-token prompts, 128 new tokens). It times,
in bf16 (fp32 master weights for the update) and in fp32:

* generation -- the reference's log-probs of the samples included (as the generator computes them
  with each batch) -- the project's KV-cache sampler (``orchestrator.nn.sampling.sample``, the plain-torch
  GPT-2 decoder) on a bf16 copy of the policy: generated tokens/s;
* scoring -- the reward model on every (prompt, response): tokens/s;
* the update -- the clipped policy-gradient loss over the batch in length-bounded pieces, backward
  and AdamW, as ``PolicyLearner._epochs`` does it: tokens/s and MFU;
* the weight sync -- the learner's flat fp32 buffer copied device to host (``weight_sync:
  object_store``; the object store's own copy and the generators' reads come on top) and host to
  device (a generator's load): GB/s. The broadcast path (NCCL, device to device) needs a second
  process and GPU and is not measured by this one-GPU, one-process profile.

Every phase runs once untimed first (CUDA context, cuBLAS handles, kernel selection). When TRL is
importable (``.[trl]``), its RLOOTrainer trains the same policy and reward model on the same batch
shape (``orchestrator.run.trl_baseline``; bf16 mixed precision, its own ``generate``), and the
report gives both RL samples/s and the speedup.

MFU = model FLOPs / time / the GPU's dense peak. Model FLOPs per trained token: 6 N (forward and
backward matmuls over N non-embedding + embedding parameters that see the token) plus 12 L d T for
attention scores and values (L layers, width d, context T) -- the PaLM appendix B count (Chowdhery
et al. 2022), less the LM head's 6 V d on prompt positions (the update applies it to response
positions only); fp32 matmuls run as TF32 (the fp32 peak is TF32's). Peak memory is
``torch.cuda.max_memory_allocated`` within each phase. Without CUDA it prints
"no CUDA device" and exits 0; ``--device cpu`` runs the same code on the CPU (a dry run of the code,
with ``--size`` small). The last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

# dense (no sparsity) tensor-core peak FLOP/s by GPU name fragment: bf16, fp32 (TF32 for fp32 matmuls)
PEAKS = {"H200": (989e12, 494e12), "H100": (989e12, 494e12), "A100": (312e12, 156e12), "L40S": (362e12, 183e12),
         "A10G": (125e12, 62.5e12), "L4": (121e12, 60e12)}


def flops_per_token(n_params: int, n_layer: int, d_model: int, context: int) -> float:
    """Training FLOPs per token (forward + backward): 6 N + 12 L d T (Chowdhery et al. 2022, app. B)."""
    return 6.0 * n_params + 12.0 * n_layer * d_model * context


def peak_flops(device_name: str, dtype: str) -> float | None:
    for k, (bf16, fp32) in PEAKS.items():
        if k in device_name:
            return bf16 if dtype == "bfloat16" else fp32
    return None


def _sync(dev):
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def run(device: str, dtype: str, layers: int, width: int, prompts: int, responses: int, prompt_len: int,
        new_tokens: int, chunk_tokens: int, seed: int) -> dict:
    import torch
    from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

    from orchestrator.math import rl as R
    from orchestrator.nn.device import autocast
    from orchestrator.nn.models import pad_right, token_chunks
    from orchestrator.nn.sampling import response_forward, response_logprobs, sample

    dev = torch.device(device)
    torch.manual_seed(seed)
    heads = max(1, width // 64)
    cfg = GPT2Config(n_layer=layers, n_embd=width, n_head=heads, n_positions=max(1024, prompt_len + new_tokens),
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, activation_function="gelu_pytorch_tanh")
    vocab, eos = cfg.vocab_size, cfg.eos_token_id
    policy = GPT2LMHeadModel(cfg).to(dev)  # fp32 master weights
    gen_model = GPT2LMHeadModel(cfg).to(dev, getattr(torch, dtype)).eval()
    gen_model.load_state_dict(policy.state_dict())
    rm_cfg = GPT2Config(**cfg.to_dict())
    rm_cfg.num_labels, rm_cfg.pad_token_id = 1, eos
    rm = GPT2ForSequenceClassification(rm_cfg).to(dev, getattr(torch, dtype)).eval()
    n_params = sum(p.numel() for p in policy.parameters())
    g = torch.Generator().manual_seed(seed)
    rows = []
    for _ in range(prompts):
        n = int(prompt_len * (0.5 + 0.5 * torch.rand((), generator=g)))
        p = torch.randint(0, vocab - len(SPECIALS), (n,), generator=g).tolist()  # words only (TRL reads text)
        rows += [p] * responses
    out: dict = {"dtype": dtype, "batch": len(rows), "params": n_params}
    def mem():  # this phase's peak (the counter is reset when the phase starts: ``fresh``)
        return torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else None

    def fresh():
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)

    if dev.type == "cuda":  # fp32 matmuls on tensor cores (TF32), the fp32 peak PEAKS states
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True

    # warm-up: every phase once, small and untimed (CUDA context, cuBLAS, kernel selection)
    w_ids, w_mask, w_lps = sample(gen_model, rows[:2], 4, 1.0, eos, eos, torch.Generator().manual_seed(seed), fast=True)
    with autocast(dev, dtype):
        rm(input_ids=torch.tensor([rows[0]], device=dev)).logits.float().sum().item()
        response_forward(policy, rows[:2], w_ids, w_mask, eos)[0].sum().backward()
    policy.zero_grad(set_to_none=True)
    _sync(dev)
    fresh()
    t0 = time.perf_counter()
    ids, mask, lps = sample(gen_model, rows, new_tokens, 1.0, eos, eos, torch.Generator().manual_seed(seed),
                            fast=True)
    # the frozen reference's log-probs of the samples (the KL penalty; the generator computes them
    # with the batch, ``with_ref``): one more no-grad pass, on the same weights here
    response_logprobs(gen_model, rows, ids, mask, eos, batch_tokens=chunk_tokens)
    _sync(dev)
    dt = time.perf_counter() - t0
    gen_tokens = int(mask.sum())
    out["generate"] = {"seconds": dt, "tokens_per_s": gen_tokens / dt, "peak_gib": mem(),
                       "includes": "sampling + the reference's log-probs"}

    seqs = [p + r[m.bool()].tolist() for p, r, m in zip(rows, ids, mask)]
    fresh()
    t0 = time.perf_counter()
    with torch.no_grad(), autocast(dev, dtype):
        for c in token_chunks([len(s) for s in seqs], chunk_tokens, len(seqs)):
            x, a = pad_right([seqs[i] for i in c], eos)
            rm(input_ids=x.to(dev), attention_mask=a.to(dev)).logits[:, 0].float().cpu()
    _sync(dev)
    dt = time.perf_counter() - t0
    score_tokens = sum(len(s) for s in seqs)
    out["score"] = {"seconds": dt, "tokens_per_s": score_tokens / dt, "peak_gib": mem()}

    adv = torch.randn(len(rows), generator=g)
    opt = torch.optim.AdamW(policy.parameters(), lr=1e-6)
    lengths = [len(p) + int(m.sum()) for p, m in zip(rows, mask)]
    total = float(mask.sum())
    _sync(dev)
    fresh()
    t0 = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    for c in token_chunks(lengths, chunk_tokens, len(rows)):
        m = mask[c]
        t = int(m.sum(1).max())
        with autocast(dev, dtype):
            logp, _, _ = response_forward(policy, [rows[i] for i in c], ids[c, :t], m[:, :t], eos)
        mm = m[:, :t].to(dev)
        loss, _ = R.clipped_policy_loss(logp, lps[c, :t].to(dev), adv[c, None].expand(-1, t).to(dev), mm, 0.2)
        (loss * float(mm.sum()) / total).backward()
    torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
    opt.step()
    _sync(dev)
    dt = time.perf_counter() - t0
    upd_tokens = sum(lengths)
    # 6N + 12LdT per token over the sequences, less the LM head on prompt positions (the update's
    # forward applies it to the response positions only)
    head = policy.config.vocab_size * width
    flops = (flops_per_token(n_params, layers, width, max(lengths)) * upd_tokens
             - 6.0 * head * (upd_tokens - int(mask.sum())))
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    pk = peak_flops(name, dtype)
    out["update"] = {"seconds": dt, "tokens_per_s": upd_tokens / dt, "flops": flops,
                     "mfu": (flops / dt / pk) if pk else None, "peak_gib": mem()}
    out["rl_samples_per_s"] = len(rows) / (out["generate"]["seconds"] + out["score"]["seconds"] + dt)

    params = list(policy.parameters())
    _sync(dev)
    t0 = time.perf_counter()
    with torch.no_grad():
        host = torch.nn.utils.parameters_to_vector(params).float().cpu()  # PolicyLearner.weights()
    _sync(dev)
    d2h = time.perf_counter() - t0
    t0 = time.perf_counter()
    with torch.no_grad():
        torch.nn.utils.vector_to_parameters(host.to(dev, getattr(torch, dtype)), list(gen_model.parameters()))
    _sync(dev)
    h2d = time.perf_counter() - t0
    gb = host.numel() * 4 / 1e9
    out["sync"] = {"gb": gb, "device_to_host_s": d2h, "host_to_device_s": h2d, "d2h_gb_per_s": gb / d2h,
                   "h2d_gb_per_s": gb / h2d}
    out["_models"] = (policy, rm, rows)  # for the TRL comparison (dropped from the report)
    return out


SPECIALS = ("[PAD]", "[SEP]", "[BOS]", "[EOS]")  # the last ids of the vocabulary; [EOS] is GPT-2's eos


def save_for_trl(policy, rm, out_dir: str) -> tuple[str, str]:
    """The bench's policy and RM as ``save_pretrained`` directories with a word-level tokenizer over
    the whole vocabulary ("w<id>" words, then ``SPECIALS``), so TRL's text path reads the bench's
    prompts as exactly their ids."""
    from pathlib import Path

    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab_size = policy.config.vocab_size
    vocab = {f"w{i}": i for i in range(vocab_size - len(SPECIALS))}
    vocab.update({t: vocab_size - len(SPECIALS) + k for k, t in enumerate(SPECIALS)})
    tk = Tokenizer(models.WordLevel(vocab, unk_token="[PAD]"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="[PAD]", sep_token="[SEP]", bos_token="[BOS]",
                                  eos_token="[EOS]")
    tok.add_special_tokens({"additional_special_tokens": list(SPECIALS)})
    dirs = []
    for name, model in (("policy", policy), ("rm", rm)):
        d = Path(out_dir) / name
        model.config.pad_token_id = tok.pad_token_id
        model.save_pretrained(d)
        tok.save_pretrained(d)
        dirs.append(str(d))
    return dirs[0], dirs[1]


def trl_rate(models: tuple, device: str, bf16: bool, prompts: int, responses: int, new_tokens: int,
             seed: int) -> dict:
    """TRL's RLOOTrainer on the bench's policy, RM and prompts: 3 steps, the first untimed."""
    import contextlib
    import sys
    import tempfile

    from orchestrator.run.trl_baseline import trl_samples_per_s

    policy, rm, rows = models
    texts = [" ".join(f"w{i}" for i in r) for r in rows[::responses]]
    with tempfile.TemporaryDirectory(prefix="bench-gpu-trl-") as tmp, contextlib.redirect_stdout(sys.stderr):
        pdir, rdir = save_for_trl(policy, rm, tmp)
        return trl_samples_per_s(pdir, rdir, texts, "rloo", steps=3, prompts_per_step=prompts,
                                 responses_per_prompt=responses, max_new_tokens=new_tokens, beta=0.05, lr=1e-6,
                                 threads=max(1, __import__("os").cpu_count() or 1), seed=seed, device=device,
                                 bf16=bf16)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m jobs.bench gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (a dry run of the code)")
    p.add_argument("--size", default="12x768", help="policy and RM size LAYERSxWIDTH (default: GPT-2 small, 124M)")
    p.add_argument("--prompts", type=int, default=64)
    p.add_argument("--responses", type=int, default=8)
    p.add_argument("--prompt-len", type=int, default=128, help="longest prompt (tokens; lengths 50-100%% of it)")
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--chunk-tokens", type=int, default=65536, help="padded tokens per forward pass (batch_tokens)")
    p.add_argument("--dtypes", default="bfloat16,float32")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-trl", action="store_true", help="skip TRL's RLOOTrainer on the same batch")
    args = p.parse_args(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device")
        return 0
    layers, width = (int(x) for x in args.size.lower().split("x"))
    try:
        import trl  # noqa: F401
        have_trl = not args.no_trl
    except ImportError:
        have_trl = False
    res = {"device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu", "size": args.size,
           "trl": None if have_trl else "not measured (TRL is not installed: pip install -e '.[trl]')"}
    models = None
    for dt in [d for d in args.dtypes.split(",") if d]:
        r = run(args.device, dt, layers, width, args.prompts, args.responses, args.prompt_len, args.new_tokens,
                args.chunk_tokens, args.seed)
        models = r.pop("_models")
        res[dt] = r
        u, sy = r["update"], r["sync"]
        print(f"{dt}: generate {r['generate']['tokens_per_s']:,.0f} tok/s, score {r['score']['tokens_per_s']:,.0f} "
              f"tok/s, update {u['tokens_per_s']:,.0f} tok/s" + (f" (MFU {u['mfu']:.1%})" if u["mfu"] else "")
              + f", {r['rl_samples_per_s']:.1f} RL samples/s; weight sync {sy['gb']:.2f} GB: device->host "
              f"{sy['d2h_gb_per_s']:.1f} GB/s, host->device {sy['h2d_gb_per_s']:.1f} GB/s", flush=True)
    if have_trl and models is not None:
        bf16 = "bfloat16" in res
        t = trl_rate(models, args.device, bf16 and args.device == "cuda", args.prompts, args.responses,
                     args.new_tokens, args.seed)
        ours = res["bfloat16" if bf16 else next(k for k in res if k in ("float32",))]["rl_samples_per_s"]
        res["trl"] = {k: t[k] for k in ("samples_per_s", "trl_version", "steps", "seconds", "mean_completion_len")}
        res["speedup_vs_trl"] = ours / t["samples_per_s"]
        print(f"TRL {t['trl_version']} RLOOTrainer: {t['samples_per_s']:.1f} RL samples/s; ours "
              f"{ours:.1f} ({res['speedup_vs_trl']:.2f}x)", flush=True)
    print(json.dumps(res))
    return 0
