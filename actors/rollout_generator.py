"""``RolloutGenerator``: a copy of the policy plus the frozen reference; batched KV-cache sampling."""

from __future__ import annotations

import os
import signal

import numpy as np
import torch
from transformers import AutoModelForCausalLM

from orchestrator.data.batch import RolloutBatch
from orchestrator.nn.codec import load_codec
from orchestrator.nn.models import set_threads
from orchestrator.nn.sampling import response_logprobs, sample


class RolloutGenerator:
    def __init__(self, policy_dir: str, num_cpus: float = 1.0, batch_tokens: int = 0, device: str = "cpu",
                 dtype: str = "float32"):
        """``policy_dir``: a ``save_pretrained`` directory; it is both the starting policy and the
        frozen reference (the reference is never updated)."""
        self.threads = set_threads(num_cpus)
        self.batch_tokens = batch_tokens  # the role's token budget of a log-prob pass (0 = 32 rows)
        from orchestrator.nn.device import role_device

        self.device = role_device(device)  # policy, reference and KV cache live there
        self.dtype = getattr(torch, dtype)  # bfloat16: bf16 copies of policy and reference (sampling only)
        self.policy_dir = None
        self._die_after: int | None = None
        self.reset(policy_dir)

    def where(self) -> dict:
        """This actor's process and Ray node (placement tests, fault drills)."""
        from actors.placement import where

        return where()

    def drill_die_during_generate(self, after_calls: int = 0) -> None:
        """Fault drill: SIGKILL this process in the middle of its ``after_calls``-th next
        ``generate`` (after sampling started). Ray restarts the actor (``cluster.rl.generator_restarts``)
        without the drill, as after a real crash."""
        self._die_after = after_calls

    def reset(self, policy_dir: str) -> int:
        """Start over from ``policy_dir`` (policy = reference, version 0); cheap when it is the one
        already loaded (the policy is copied from the untouched reference)."""
        if policy_dir != self.policy_dir:
            self.codec = load_codec(policy_dir)  # the policy's own tokenizer and template, as saved with it
            self.policy = AutoModelForCausalLM.from_pretrained(policy_dir).to(self.device, self.dtype).eval()
            self.ref = AutoModelForCausalLM.from_pretrained(policy_dir).to(self.device, self.dtype).eval()
            for p in self.ref.parameters():
                p.requires_grad_(False)
            self.policy_dir = policy_dir
        else:
            self.policy.load_state_dict(self.ref.state_dict())
        self.version = 0
        return 0

    @torch.no_grad()
    def load_weights(self, flat, version: int = 0) -> int:
        """Replace the policy's weights by ``PolicyLearner.weights()`` (one flat buffer in
        ``parameters()`` order; the reference never changes). ``version`` counts the learner
        updates they include and is stamped on every batch sampled with them."""
        flat = torch.from_numpy(np.array(flat, dtype=np.float32))  # a copy: Ray hands out read-only buffers
        return self._set_flat(flat.to(self.device), version)  # one host-to-device transfer

    def _set_flat(self, flat: torch.Tensor, version: int) -> int:
        params = list(self.policy.parameters())
        n = sum(p.numel() for p in params)
        if flat.numel() != n:
            raise ValueError(f"weights of {flat.numel()} values for a policy of {n} parameters")
        i = 0
        for p in params:
            p.copy_(flat[i: i + p.numel()].view_as(p))
            i += p.numel()
        self.version = version
        return version

    def open_weight_group(self, address: str, rank: int, world: int, backend: str) -> int:
        """Join the learner's broadcast group (``cluster.rl.weight_sync: broadcast``) as ``rank``."""
        from orchestrator.nn.broadcast import WeightGroup

        if getattr(self, "weight_group", None) is not None:
            self.weight_group.close()
        self.weight_group = WeightGroup(address, rank, world, backend)
        return rank

    @torch.no_grad()
    def pull_weights(self, version: int) -> int:
        """Receive the learner's flat fp32 weights by broadcast (``PolicyLearner.push_weights``,
        which must be called at the same time) and load them, as ``load_weights`` does."""
        n = sum(p.numel() for p in self.policy.parameters())
        flat = self.weight_group.broadcast(torch.empty(n, dtype=torch.float32, device=self.weight_group.device))
        return self._set_flat(flat, version)

    def generate(self, prompts: list[str], n: int, seed: int, max_new_tokens: int, temperature: float = 1.0,
                 with_ref: bool = False, recompute: bool = False, fast: bool = False) -> RolloutBatch:
        """``n`` responses for each prompt; rows ordered prompt-major (prompt 0's n first).

        with_ref: also the reference's per-token logprobs. recompute: replace the sampler's logprobs
        by a full forward pass of the same function the reference uses (exactly 0 KL at step 0).
        fast: decode GPT-2 policies with ``sampling.GPT2Decoder`` (the RL loop; pools keep the HF path)."""
        g = torch.Generator().manual_seed(seed)
        if self._die_after is not None:
            self._die_after -= 1
            if self._die_after < 0:
                os.kill(os.getpid(), signal.SIGKILL)
        enc = [self.codec.prompt(p) for p in prompts]
        rows = [e for e in enc for _ in range(n)]
        pad = self.codec.pad_id
        ids, mask, lps = sample(self.policy, rows, max_new_tokens, temperature, self.codec.eos_id, pad, g, fast=fast)
        bt = self.batch_tokens
        ref = response_logprobs(self.ref, rows, ids, mask, pad, temperature, batch_tokens=bt) if with_ref else None
        if recompute:
            lps = response_logprobs(self.policy, rows, ids, mask, pad, temperature, batch_tokens=bt)
        texts = self.codec.decode([r[m.bool()].tolist() for r, m in zip(ids, mask)])
        return RolloutBatch(prompt_index=np.repeat(np.arange(len(prompts)), n), response_ids=ids,
                            response_mask=mask, logprobs=lps, ref_logprobs=ref, texts=texts,
                            prompt_ids=rows, policy_version=self.version)
