"""``PolicyLearner``: owns the policy and its optimizer; supervised fine-tuning (later: RL updates)."""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import torch

from orchestrator.config import ModelConfig
from orchestrator.models import build_policy, encode_pair, encode_prompt, load_tokenizer, n_params, pad_right, set_threads


class PolicyLearner:
    def __init__(self, tokenizer_dir: str, model: dict, seed: int, num_cpus: float = 1.0):
        self.threads = set_threads(num_cpus)
        self.tok = load_tokenizer(tokenizer_dir)
        self.seed = seed
        self.model = build_policy(ModelConfig(**model), self.tok, seed)

    def n_params(self) -> int:
        return n_params(self.model)

    def sft(self, pairs: list[tuple[str, str]], steps: int, sequences_per_step: int, lr: float,
            progress: bool = False) -> dict:
        """Next-token loss on response tokens only; AdamW, cosine decay with 5% warm-up."""
        t0 = time.perf_counter()
        torch.manual_seed(self.seed)
        rng = random.Random(self.seed)
        enc = [(len(encode_prompt(self.tok, p)), encode_pair(self.tok, p, r)) for p, r in pairs]
        opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
        warm = max(1, steps // 20)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
        self.model.train()
        batches = self._length_bucketed(enc, sequences_per_step, rng)
        losses, tokens = [], 0
        for step in range(steps):
            idx = next(batches)
            ids, mask = pad_right([enc[i][1] for i in idx], self.tok.pad_token_id)
            labels = ids.clone()
            labels[mask == 0] = -100
            for row, i in enumerate(idx):
                labels[row, : enc[i][0]] = -100  # no loss on the prompt
            loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            opt.step()
            sched.step()
            losses.append(loss.item())
            tokens += int(mask.sum())
        self.model.eval()
        secs = time.perf_counter() - t0
        tail = losses[-max(1, steps // 10):]
        return {"loss_first": losses[0], "loss_last": sum(tail) / len(tail), "seconds": secs,
                "tokens_per_s": tokens / secs, "steps": steps, "params": self.n_params()}

    @staticmethod
    def _length_bucketed(enc: list, size: int, rng: random.Random, pool: int = 16):
        """Endless batches of ``size`` indices: shuffle, sort each run of ``pool`` batches by length,
        cut it into batches and shuffle those, so a batch pads to similar lengths (2x fewer padded
        tokens on the synthetic task) while every example is still seen once per epoch."""
        while True:
            perm = list(range(len(enc)))
            rng.shuffle(perm)
            for i in range(0, len(perm) - size + 1, size * pool):
                chunk = sorted(perm[i: i + size * pool], key=lambda j: len(enc[j][1]))
                group = [chunk[k: k + size] for k in range(0, len(chunk) - size + 1, size)]
                rng.shuffle(group)
                yield from group

    def weights(self) -> dict[str, torch.Tensor]:
        """The policy's state dict (put in the object store by Ray when returned)."""
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def save(self, out_dir: str) -> str:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out_dir)
        self.tok.save_pretrained(out_dir)
        return out_dir
