"""``PolicyLearner``: owns the policy (+ value head for PPO) and its optimizer; SFT and RL updates.

RL updates come in one method per algorithm family (``update_ppo`` with a critic, ``update_pg`` for
critic-free RLOO / GRPO); both run ``epochs`` x ``minibatches`` clipped-surrogate steps on one batch.
Checkpoints are safetensors (weights, value head, RNG, optimizer moments) plus JSON (optimizer
hyperparameters) -- nothing is unpickled. ``backend: deepspeed`` trains through a DeepSpeed ZeRO
engine instead (``orchestrator.nn.zero``), with the same checkpoint layout.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from orchestrator.config.schema import ModelConfig
from orchestrator.data.batch import RolloutBatch
from orchestrator.math import rl as R
from orchestrator.nn import zero
from orchestrator.nn.codec import load_codec
from orchestrator.nn.device import autocast, role_device
from orchestrator.nn.models import (
    build_policy,
    n_params,
    pad_right,
    set_threads,
    token_chunks,
)
from orchestrator.nn.sampling import response_forward


class PolicyLearner:
    def __init__(self, tokenizer_dir: str, model: dict, seed: int, num_cpus: float = 1.0,
                 chat_template: str = "auto", batch_tokens: int = 0, device: str = "cpu", dtype: str = "float32",
                 backend: str = "torch", zero_stage: int = 0, offload: str = "none"):
        """``model``: a ``ModelConfig`` as a dict; with ``path`` the policy and its own tokenizer
        (and chat template, unless ``chat_template`` is ``none``) load from there, else the policy is
        built from config over the task's tokenizer in ``tokenizer_dir``. ``backend``, ``zero_stage``,
        ``offload``: ``cluster.<learner>`` (``LearnerResources``) -- torch, or a DeepSpeed ZeRO engine."""
        self.threads = set_threads(num_cpus)
        self.chat_template = chat_template
        self.batch_tokens = batch_tokens  # most padded tokens per forward pass (0: whole SFT steps, 32-row RL chunks)
        self.codec = load_codec(model.get("path") or tokenizer_dir, chat_template)
        self.tok = self.codec.tok
        self.seed = seed
        self.device = role_device(device)  # fp32 weights, optimizer state and activations live there
        self.dtype = dtype  # bfloat16: forward passes under autocast, fp32 master weights
        self.model = build_policy(ModelConfig(**model), self.tok, seed).to(self.device)
        self.value_head: torch.nn.Linear | None = None
        self.opt: torch.optim.Optimizer | None = None
        self.backend, self.zero_stage, self.offload = backend, zero_stage, offload
        self.engine = None  # the DeepSpeed engine of the running SFT or RL (backend: deepspeed)
        self._groups: list[dict] = []  # the optimizer's param groups as torch writes them (checkpoints)
        self.version = 0  # RL updates applied
        self.rank, self.world = 0, 1  # a learner group (``join_group``): this replica's rank and the size
        self._progress: dict = {}

    def progress(self) -> dict:
        """How far the running ``sft`` is: {what, done, total, loss} (answered by a second actor
        thread while it runs -- ``ActorGroup(..., progress=True)``; every other call still runs one at
        a time, in order; the driver shows it beside its own count)."""
        return dict(self._progress)

    def where(self) -> dict:
        """This actor's process and Ray node (placement tests, fault drills)."""
        from actors.placement import where

        return where()

    def n_params(self) -> int:
        return sum(zero.numel(p) for p in self.model.parameters()) if self.engine is not None else n_params(self.model)

    def _trained(self) -> list[torch.nn.Parameter]:
        """The trained parameters in the optimizer's order: the policy's, then the value head's."""
        return list(self.model.parameters()) + (list(self.value_head.parameters()) if self.value_head else [])

    def _engine(self, opt: torch.optim.Optimizer, max_grad_norm: float, sched=None):
        """The DeepSpeed engine over the policy (+ value head) and ``opt`` (backend: deepspeed)."""
        zero.destroy(self.engine)
        return zero.make_engine(zero.Trained(self.model, self.value_head, self.device, self.dtype), opt,
                                self.zero_stage, self.offload, max_grad_norm, self.device, lr_scheduler=sched)

    def _call(self, **kwargs):
        """The policy's forward -- through the engine when there is one (ZeRO-3 gathers the
        parameters and counts micro-steps there)."""
        return (self.engine if self.engine is not None else self.model)(**kwargs)

    def _backward(self, loss: torch.Tensor, last: bool) -> None:
        """Accumulate ``loss``'s gradient; ``last``: the step's final piece (the engine's
        accumulation boundary, where ZeRO reduces the gradients over the group)."""
        if self.engine is None:
            loss.backward()
            return
        self.engine.set_gradient_accumulation_boundary(last)
        # the engine averages gradients over the group; the pieces' weights are shares of the whole
        # minibatch, so the group's sum is wanted: scale by the world size
        self.engine.backward(loss * self.world, scale_wrt_gas=False)

    def sft(self, pairs: list[tuple[str, str]], steps: int, sequences_per_step: int, lr: float,
            progress: bool = False) -> dict:
        """Next-token loss on response tokens only; AdamW, cosine decay with 5% warm-up."""
        t0 = time.perf_counter()
        torch.set_num_threads(self.threads)  # per calling thread under OpenMP (a threaded actor's pool)
        torch.manual_seed(self.seed)
        rng = random.Random(self.seed)
        if steps == 0:  # sft.steps 0: the policy as it is
            return {"loss_first": None, "loss_last": None, "seconds": time.perf_counter() - t0, "tokens_per_s": 0.0,
                    "steps": 0, "params": self.n_params()}
        enc = [(len(self.codec.prompt(p)), self.codec.sequence(p, r)) for p, r in pairs]
        self._progress = {"what": "sft step", "done": 0, "total": steps}
        opt = torch.optim.AdamW(self.model.parameters(), lr=lr, weight_decay=0.01, betas=(0.9, 0.98))
        warm = max(1, steps // 20)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(1.0, s / steps))))
        if self.backend == "deepspeed":  # the engine clips, steps the optimizer and the schedule
            self.engine = self._engine(opt, 1.0, sched)
        self.model.train()
        batches = self._length_bucketed(enc, sequences_per_step, rng)
        losses, tokens = [], 0
        for step in range(steps):
            idx = next(batches)
            if self.engine is not None:
                loss, n_tok = self._sft_backward([enc[i] for i in idx])
                zero.step(self.engine, list(self.model.parameters()))
            else:
                opt.zero_grad(set_to_none=True)
                loss, n_tok = self._sft_backward([enc[i] for i in idx])
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
                opt.step()
                sched.step()
            losses.append(loss)
            tokens += n_tok
            self._progress = {"what": "sft step", "done": step + 1, "total": steps, "loss": losses[-1]}
        self.model.eval()
        secs = time.perf_counter() - t0
        tail = losses[-max(1, steps // 10):]
        return {"loss_first": losses[0], "loss_last": sum(tail) / len(tail), "seconds": secs,
                "tokens_per_s": tokens / secs, "steps": steps, "params": self.n_params()}

    def _sft_backward(self, batch: list[tuple[int, list[int]]]) -> tuple[float, int]:
        """Next-token loss on the response tokens of ``batch`` [(prompt length, ids)] and its
        gradient: one forward pass, or -- past ``batch_tokens`` padded tokens -- length-bounded
        pieces, each piece's mean loss weighted by its share of the step's response tokens (the
        same objective). Returns (loss, tokens)."""

        def piece(rows):
            ids, mask = pad_right([batch[i][1] for i in rows], self.codec.pad_id)
            labels = ids.clone()
            labels[mask == 0] = -100
            for row, i in enumerate(rows):
                labels[row, : batch[i][0]] = -100  # no loss on the prompt
            return ids.to(self.device), mask.to(self.device), labels.to(self.device)

        longest = max(len(x[1]) for x in batch)
        if not self.batch_tokens or len(batch) * longest <= self.batch_tokens:
            ids, mask, labels = piece(range(len(batch)))
            with autocast(self.device, self.dtype):
                loss = self._call(input_ids=ids, attention_mask=mask, labels=labels).loss
            self._backward(loss, last=True)
            return loss.item(), int(mask.sum())
        pieces = [piece(c) for c in token_chunks([len(x[1]) for x in batch], self.batch_tokens, len(batch))]
        total = sum(int((lab[:, 1:] != -100).sum()) for _, _, lab in pieces)  # predicted tokens (HF shifts)
        loss_sum, tokens = 0.0, 0
        for j, (ids, mask, labels) in enumerate(pieces):
            w = int((labels[:, 1:] != -100).sum()) / total
            with autocast(self.device, self.dtype):
                loss = self._call(input_ids=ids, attention_mask=mask, labels=labels).loss * w
            self._backward(loss, last=j == len(pieces) - 1)
            loss_sum += loss.item()
            tokens += int(mask.sum())
        return loss_sum, tokens

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

    def weights(self) -> np.ndarray:
        """Every policy parameter, flattened into one float32 buffer in ``parameters()`` order.
        A single numpy array crosses Ray's object store without pickling (zero-copy reads), ~20x
        faster than a state dict of tensors for the tiny default (1 ms vs 23 ms per sync)."""
        params = list(self.model.parameters())
        with torch.no_grad(), zero.gathered(self.engine, params):  # ZeRO-3: a collective of the group
            return torch.nn.utils.parameters_to_vector(params).float().cpu().numpy()

    def open_weight_group(self, address: str, rank: int, world: int, backend: str) -> int:
        """Host (rank 0) the broadcast group the generators pull weights from
        (``cluster.rl.weight_sync: broadcast``); other replicas of a learner group stay out of it."""
        from orchestrator.nn.broadcast import WeightGroup

        if getattr(self, "weight_group", None) is not None:  # re-formed after a generator restart
            self.weight_group.close()
        self.weight_group = WeightGroup(address, rank, world, backend) if self.rank == 0 else None
        return rank

    def weight_group_address(self) -> str:
        from orchestrator.nn.broadcast import free_address

        return free_address()

    def push_weights(self) -> int:
        """Broadcast the flat fp32 weights to the generators (they ``pull_weights`` at the same
        time): device to device over NCCL, or from host memory over gloo. Returns the value count."""
        params = list(self.model.parameters())
        with torch.no_grad(), zero.gathered(self.engine, params):  # ZeRO-3: a collective of the learner group
            flat = torch.nn.utils.parameters_to_vector(params).float()
            if getattr(self, "weight_group", None) is not None:
                self.weight_group.broadcast(flat)
                self.weight_group.synchronize()  # delivered (NCCL returns once queued) before the next update
        return int(flat.numel())

    def save(self, out_dir: str) -> str:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        with zero.gathered(self.engine, list(self.model.parameters())):
            if self.engine is None or self.rank == 0:
                self.model.save_pretrained(out_dir)
                self.codec.save(out_dir)
        return out_dir

    # ------------------------------------------------------------------------------------------
    # RL

    def reset(self, policy_dir: str) -> None:
        """Reload the policy from ``policy_dir`` and drop any RL state (an RL slot's next run)."""
        self.codec = load_codec(policy_dir, self.chat_template)
        self.tok = self.codec.tok
        zero.destroy(self.engine)
        self.engine = None
        self.model = build_policy(ModelConfig(path=policy_dir), self.tok, self.seed).to(self.device)
        self.value_head, self.opt, self.version = None, None, 0

    def init_rl(self, lr: float, value_head: bool, seed: int, max_grad_norm: float = 1.0) -> int:
        """Prepare RL: a zero-initialized linear value head on the last hidden state (PPO, as TRL's
        ``AutoModelForCausalLMWithValueHead``) and AdamW over everything trained -- wrapped in a
        DeepSpeed engine with ``backend: deepspeed`` (which clips at ``max_grad_norm``; the torch
        backend clips at each update's ``hp``). Returns params."""
        torch.manual_seed(seed)
        if value_head:
            self.value_head = torch.nn.Linear(self.model.config.get_text_config().hidden_size, 1)
            torch.nn.init.zeros_(self.value_head.weight)
            torch.nn.init.zeros_(self.value_head.bias)
            self.value_head.to(self.device)
        params = self._trained()
        self.opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, betas=(0.9, 0.95), eps=1e-8)
        self._groups = self.opt.state_dict()["param_groups"]
        n = sum(p.numel() for p in params)
        self.max_grad_norm = max_grad_norm
        if self.backend == "deepspeed":
            self.engine = self._engine(self.opt, max_grad_norm)
        self.model.eval()  # no dropout in the tiny default; eval mode keeps RL deterministic anyway
        return n

    def _forward(self, batch: RolloutBatch, rows, temperature: float, grad: bool):
        rows = list(rows)
        mask = batch.response_mask[rows]
        t = int(mask.sum(1).max())
        m = mask[:, :t].to(self.device)
        with torch.set_grad_enabled(grad), autocast(self.device, self.dtype):
            logp, logits, h = response_forward(self.model, [batch.prompt_ids[i] for i in rows],
                                               batch.response_ids[rows, :t], mask[:, :t], self.codec.pad_id,
                                               temperature, hidden=self.value_head is not None, forward=self.engine)
            values = self.value_head(h).squeeze(-1) * m if self.value_head is not None else None
        return logp, logits, values, m, t

    def evaluate(self, batch: RolloutBatch, temperature: float = 1.0) -> dict:
        """Log-probs (and values) of the batch under the current policy, no grad: the "old" policy of
        the clipped objective and the pi of the KL penalty. ``[b, t]`` each, 0 at padding."""
        logp, _, values, _, t = self._forward(batch, range(len(batch)), temperature, grad=False)
        pad = batch.response_ids.shape[1] - t
        out = {"logprobs": torch.nn.functional.pad(logp, (0, pad)).cpu(), "values": None}
        if values is not None:
            out["values"] = torch.nn.functional.pad(values, (0, pad)).cpu()
        return out

    def _epochs(self, batch: RolloutBatch, hp: dict, seed: int, loss_fn) -> dict:
        """``hp["epochs"]`` passes over the batch in ``hp["minibatches"]`` shuffled minibatches (the
        shuffle is seeded by ``seed`` alone, so a resumed run redraws exactly the same ones).

        A minibatch is run as chunks of ~``hp["chunk_rows"]`` rows of similar length (gradients
        accumulated, each chunk's token-mean loss weighted by its share of the minibatch's tokens):
        the same objective as one padded forward, with far less padding -- one long collapsed
        response no longer pads a whole batch of short ones."""
        g = torch.Generator().manual_seed(seed)
        b = len(batch)
        size = b // hp["minibatches"]
        lengths = [len(p) + int(n) for p, n in zip(batch.prompt_ids, batch.response_mask.sum(1))]
        params = self._trained()
        if self.engine is not None and self.max_grad_norm != hp["max_grad_norm"]:
            raise ValueError(f"max_grad_norm {hp['max_grad_norm']} != the engine's {self.max_grad_norm} (init_rl)")
        stats: dict[str, list] = {}
        for _ in range(hp["epochs"]):
            perm = torch.randperm(b, generator=g)
            for m in range(hp["minibatches"]):
                rows = sorted(perm[m * size: (m + 1) * size].tolist(), key=lambda i: (lengths[i], i))
                chunks = self._chunks(rows, lengths, hp.get("chunk_rows", 32))
                if self.world > 1:  # a learner group: this replica takes every world-th piece
                    chunks = chunks[self.rank:: self.world]
                total = float(batch.response_mask[rows].sum())
                if self.engine is None:
                    self.opt.zero_grad(set_to_none=True)
                acc: dict[str, float] = {}
                for j, chunk in enumerate(chunks):
                    logp, logits, values, mask, t = self._forward(batch, chunk, hp["temperature"], grad=True)
                    loss, st = loss_fn(chunk, logp, values, mask, t)
                    w = float(mask.sum()) / total
                    self._backward(loss * w, last=j == len(chunks) - 1)
                    with torch.no_grad():
                        st["entropy"] = float(R.masked_mean(R.entropy_from_logits(logits), mask))
                    st["loss"] = float(loss.detach())
                    for k, v in st.items():
                        acc[k] = acc.get(k, 0.0) + w * v
                if self.engine is not None:  # the engine reduced the gradients over the group
                    acc = self._all_reduce([], acc) if self.world > 1 else acc
                    acc["grad_norm"] = zero.step(self.engine, params)
                else:
                    if self.world > 1:  # the group's gradient: every replica's pieces summed (weights are global)
                        acc = self._all_reduce(params, acc)
                    acc["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, hp["max_grad_norm"]))
                    self.opt.step()
                for k, v in acc.items():
                    stats.setdefault(k, []).append(v)
        self.version += 1
        return {f"learner/{k}": float(np.mean(v)) for k, v in stats.items()}

    def _chunks(self, rows: list[int], lengths: list[int], chunk_rows: int) -> list[list[int]]:
        """A minibatch's rows (sorted by length) as the pieces one forward pass takes: at most
        ``batch_tokens`` padded tokens each, else ~``chunk_rows`` rows; at least one per replica of
        a learner group."""
        if self.batch_tokens:  # length-bounded pieces: the learner's memory set in tokens
            chunks = [[rows[i] for i in c] for c in
                      token_chunks([lengths[r] for r in rows], self.batch_tokens, len(rows))]
            if len(chunks) >= self.world:
                return self._even(chunks)
        n_chunks = max(1, round(len(rows) / chunk_rows), self.world)
        return self._even([c.tolist() for c in np.array_split(np.array(rows), n_chunks)])

    def _even(self, chunks: list[list[int]]) -> list[list[int]]:
        """A DeepSpeed group's pieces: a multiple of the world size, so every replica runs as many
        forward / backward passes (ZeRO's collectives happen inside them and must pair up); the
        largest pieces are halved (the token bound still holds)."""
        if self.engine is None or self.world == 1:
            return chunks
        chunks = list(chunks)
        while len(chunks) % self.world:
            i = max(range(len(chunks)), key=lambda k: len(chunks[k]))
            if len(chunks[i]) < 2:
                raise ValueError(f"a minibatch of {sum(map(len, chunks))} rows cannot be shared by "
                                 f"{self.world} replicas: raise rollouts per step or lower rl.minibatches")
            c = chunks.pop(i)
            chunks[i:i] = [c[: len(c) // 2], c[len(c) // 2:]]
        return chunks

    # ------------------------------------------------------------------------------------------
    # a learner group: N replicas in one torch.distributed group, each with a shard of every
    # minibatch, gradients all-reduced (OpenRLHF's and verl's data-parallel learner, without DeepSpeed)

    def group_address(self) -> str:
        """``host:port`` for the group's rendezvous (asked of rank 0): this node's IP and a free port."""
        import socket

        try:
            import ray

            host = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
        except Exception:  # noqa: BLE001 -- outside Ray (tests of the class itself)
            host = "127.0.0.1"
        with socket.socket() as sock:
            sock.bind(("", 0))
            return f"{host}:{sock.getsockname()[1]}"

    def join_group(self, rank: int, world: int, address: str) -> int:
        """Join the learner group (every replica at once: the call blocks until all have joined):
        gloo on CPU, NCCL on CUDA. Replicas start from the same weights and draw the same seeds, so
        with all-reduced gradients their parameters and optimizer states stay equal."""
        import torch.distributed as dist

        if world > 1 and not dist.is_initialized():
            backend = "nccl" if next(self.model.parameters()).is_cuda else "gloo"
            dist.init_process_group(backend, init_method=f"tcp://{address}", rank=rank, world_size=world)
        self.rank, self.world = rank, world
        return rank

    def leave_group(self) -> None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        self.rank, self.world = 0, 1

    def _all_reduce(self, params: list, acc: dict) -> dict:
        """Sum every replica's gradients (one flat buffer, one collective) and its token-weighted
        statistics; returns the group's statistics."""
        import torch.distributed as dist

        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        keys = sorted(acc)
        stats = torch.tensor([acc[k] for k in keys], dtype=torch.float32, device=self.device)
        flat = torch.cat([*(g.reshape(-1) for g in grads), stats])
        dist.all_reduce(flat)
        i = 0
        for p in params:
            n = p.numel()
            p.grad = flat[i: i + n].view_as(p).clone()
            i += n
        return {k: float(v) for k, v in zip(keys, flat[i:])}

    def update_ppo(self, batch: RolloutBatch, old: dict, advantages: torch.Tensor, returns: torch.Tensor,
                   hp: dict, seed: int) -> dict:
        """PPO with a value head (Schulman et al. 2017; Gao et al. 2022's RL setting): clipped policy
        surrogate + ``vf_coef`` x clipped value loss, advantages from GAE (computed by the caller)."""
        def loss_fn(rows, logp, values, mask, t):
            d = self.device
            pl, st = R.clipped_policy_loss(logp, old["logprobs"][rows, :t].to(d), advantages[rows, :t].to(d), mask,
                                           hp["clip"])
            vl = R.clipped_value_loss(values, old["values"][rows, :t].to(d), returns[rows, :t].to(d), mask,
                                      hp["value_clip"])
            st.update(policy_loss=float(pl.detach()), value_loss=float(vl.detach()))
            return pl + hp["vf_coef"] * vl, st
        return self._epochs(batch, hp, seed, loss_fn)

    def update_pg(self, batch: RolloutBatch, old: dict, advantages: torch.Tensor, hp: dict, seed: int) -> dict:
        """Critic-free policy gradient (RLOO / GRPO): one advantage per sequence broadcast to its
        tokens, the same clipped surrogate so several epochs / minibatches stay near the old policy."""
        adv = advantages[:, None].expand_as(batch.response_mask).contiguous()

        def loss_fn(rows, logp, values, mask, t):
            pl, st = R.clipped_policy_loss(logp, old["logprobs"][rows, :t].to(self.device), adv[rows, :t].to(self.device),
                                           mask, hp["clip"])
            st["policy_loss"] = float(pl.detach())
            return pl, st
        return self._epochs(batch, hp, seed, loss_fn)

    def save_checkpoint(self, out_dir: str) -> list[str]:
        """Weights (+ value head), RNG and optimizer moments as safetensors; optimizer
        hyperparameters as JSON. The same layout on both backends (DeepSpeed's shards are gathered
        to whole tensors first -- a collective: a DeepSpeed group calls it on every replica, and
        rank 0 writes)."""
        out = Path(out_dir)
        if self.engine is not None:
            module = zero.Trained(self.model, self.value_head)
            tensors = zero.full_weights(self.engine, module)
            state, groups = zero.optimizer_state(self.engine, self._trained(), self._groups)
        else:
            tensors = {f"policy.{k}": v.detach().cpu().clone().contiguous() for k, v in self.model.state_dict().items()}
            if self.value_head is not None:
                tensors.update({f"value_head.{k}": v.detach().cpu().clone() for k, v in self.value_head.state_dict().items()})
            sd = self.opt.state_dict()  # tensors -> safetensors, hyperparameters -> JSON: nothing pickled
            state, groups = sd["state"], sd["param_groups"]
        files = ["learner.safetensors", "optimizer.safetensors", "optimizer.json"]
        if self.engine is not None and self.rank != 0:  # a DeepSpeed group: every replica gathered, rank 0 writes
            return files
        out.mkdir(parents=True, exist_ok=True)
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["version"] = torch.tensor([self.version], dtype=torch.int64)
        save_file(tensors, str(out / "learner.safetensors"))
        save_file({f"{i}.{k}": v.detach().cpu().clone().contiguous() for i, st in state.items() for k, v in st.items()},
                  str(out / "optimizer.safetensors"))
        (out / "optimizer.json").write_text(json.dumps(groups))
        return files

    def load_checkpoint(self, in_dir: str) -> int:
        """Restore what ``save_checkpoint`` wrote (safetensors and JSON: nothing is unpickled), on
        either backend whichever wrote it."""
        d = Path(in_dir)
        tensors = load_file(str(d / "learner.safetensors"))
        state: dict[int, dict] = {}
        for key, v in load_file(str(d / "optimizer.safetensors")).items():
            i, k = key.split(".", 1)
            state.setdefault(int(i), {})[k] = v
        groups = json.loads((d / "optimizer.json").read_text())
        if self.engine is not None:
            module = zero.Trained(self.model, self.value_head)
            weights = {k: v for k, v in tensors.items() if k.startswith(("policy.", "value_head."))}
            zero.load_state(self.engine, module, weights, self._trained(), state, groups)
        else:
            self.model.load_state_dict({k[7:]: v for k, v in tensors.items() if k.startswith("policy.")})
            if self.value_head is not None:
                self.value_head.load_state_dict({k[11:]: v for k, v in tensors.items() if k.startswith("value_head.")})
            self.opt.load_state_dict({"state": state, "param_groups": groups})
        torch.set_rng_state(tensors["rng.torch"])
        self.version = int(tensors["version"][0])
        return self.version
