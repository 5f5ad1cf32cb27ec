"""``RewardEnsemble``: k scorers behind one ``score``; role ``proxy`` (trained RMs) or ``gold``.

One class serves both roles -- the role is a name. Gold members are the task's oracle (later also
large RMs); proxy members are ``GPT2ForSequenceClassification`` models trained with the
Bradley-Terry loss (soft labels allowed).
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from orchestrator.config.schema import ModelConfig
from orchestrator.data.batch import Scores, seal
from orchestrator.data.tasks.synthetic import PRINCIPLES, oracle
from orchestrator.math.calibration import ece, pair_accuracy
from orchestrator.nn.device import autocast, role_device
from orchestrator.nn.length_control import LengthControl, fit_length_beta  # noqa: F401  (re-exported)


def _hf():
    """``transformers`` and the model helpers, imported on first use: an oracle-only (gold)
    ensemble never loads them, so its actor starts in ~1 s instead of ~4 s."""
    from orchestrator.nn import models

    return models


def _length_bucketed(items: list, size: int, length: dict, rng: random.Random, pool: int = 16) -> list[list]:
    """One epoch of batches of ``size`` items: shuffle, sort runs of ``pool`` batches by length, cut,
    shuffle the batches -- similar lengths pad together; every item once per epoch."""
    perm = list(items)
    rng.shuffle(perm)
    batches = []
    for i in range(0, len(perm), size * pool):
        chunk = sorted(perm[i: i + size * pool], key=lambda g: length[g])
        batches += [chunk[k: k + size] for k in range(0, len(chunk), size)]
    rng.shuffle(batches)
    return batches


def rollout_rows(batch, src: dict[str, list]) -> dict[str, list]:
    """The rows a ``RolloutBatch`` scores as: row i is prompt ``src[...][batch.prompt_index[i]]``
    (with its other columns) and response ``batch.texts[i]``."""
    idx = [int(i) for i in batch.prompt_index]
    rows = {k: [src[k][i] for i in idx] for k in src}
    rows["response"] = batch.texts
    return rows


class RewardMemberError(RuntimeError):
    """A member of a reward ensemble failed (raised, or gave non-finite scores); names the member."""


def _drill(role: str, name: str, calls: dict) -> str:
    """Fault drill (``RLHF_FRONTIER_FAIL_MEMBER=ROLE/NAME:CALL:MARKER[:MODE]``, set in the job's
    environment): member NAME of ensemble ROLE fails on its CALL-th scoring, once per MARKER file --
    how the tests show a failing reward model stops the step loudly and the run resumes. MODE
    ``raise`` (the default) raises; ``nan`` returns "nan" so the caller gives a NaN score, as a
    diverged model would. Returns "" when the drill does not fire."""
    spec = os.environ.get("RLHF_FRONTIER_FAIL_MEMBER", "")
    if not spec:
        return ""
    mode = "raise"
    for m in ("raise", "nan"):
        if spec.endswith(f":{m}"):
            spec, mode = spec[: -len(m) - 1], m
    who, call, marker = spec.split(":", 2)
    if who != f"{role}/{name}":
        return ""
    calls[name] = calls.get(name, 0) + 1
    if calls[name] >= int(call) and not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(calls[name]))
        if mode == "nan":
            return "nan"
        raise RuntimeError(f"fault drill: {role}/{name} failed on scoring call {calls[name]}")
    return ""


class RewardEnsemble:
    def __init__(self, role: str, members: list[dict], tokenizer_dir: str = "", num_cpus: float = 1.0,
                 chat_template: str = "auto", batch_tokens: int = 0, device: str = "cpu", dtype: str = "float32"):
        """members: ``{"name", "kind": "oracle"}`` or ``{"name", "kind": "hf", "size" | "path", "seed",
        "norm": (shift, scale) (optional), "head": "new" | "trained"}``. An ``hf`` member loaded by
        path reads text through the tokenizer saved there (its own codec: tokenizer, chat template
        unless ``chat_template`` is ``none``, pad / eos), a member built from ``size`` through the
        task's tokenizer in ``tokenizer_dir``. ``head: trained`` (gold RMs, trained proxies) requires
        the checkpoint's one-label score head; ``new`` (default) adds one to a causal LM."""
        if role not in ("proxy", "gold", "monitor"):
            raise ValueError(f"role {role!r} must be 'proxy', 'gold' or 'monitor'")
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.role = role
        if tokenizer_dir or any(m["kind"] != "oracle" for m in members):
            self.threads = _hf().set_threads(num_cpus)
        else:
            self.threads = max(1, int(num_cpus))
            torch.set_num_threads(self.threads)
        self.tokenizer_dir, self.chat_template = tokenizer_dir, chat_template
        self.batch_tokens = batch_tokens  # tokens per scoring pass (0: models.SCORE_TOKENS)
        self.device = role_device(device)
        self.dtype = dtype  # bfloat16: forward passes under autocast (fp32 master weights for training)
        self._calls: dict[str, int] = {}
        self._progress: dict = {}
        self.set_members(members)

    def progress(self) -> dict:
        """How far the running ``train`` is: {what, done, total, loss} over every member's steps
        (answered by a second actor thread while it runs -- ``ActorGroup(..., progress=True)``; every
        other call still runs one at a time, in order)."""
        return dict(self._progress)

    def where(self) -> dict:
        """This actor's process and Ray node (placement tests, fault drills)."""
        from actors.placement import where

        return where()

    def set_monitors(self, members: list[dict]) -> tuple[str, ...]:
        """Reward models the run does NOT train on, kept beside the members in this actor: the gold-free
        monitor's independent judges (``score_monitor``). Reloaded only when they change."""
        key = [dict(m) for m in members]
        if getattr(self, "_monitor_key", None) == key:
            return self._monitor.names if self._monitor is not None else ()
        self._monitor_key = key
        # role "monitor": its own name in errors and fault drills (a drill of proxy/<name> targets the
        # member a run trains on, never the same model judging another run)
        # building models sets this process's threads and draws from (or reseeds) its torch RNG: keep the
        # caller's -- a colocated trial runs every role in one process, where the learner sums with those
        # threads and checkpoints that RNG
        threads, rng = torch.get_num_threads(), torch.get_rng_state()
        self._monitor = (RewardEnsemble("monitor", members, self.tokenizer_dir, self.threads, self.chat_template,
                                        self.batch_tokens, str(self.device), self.dtype) if members else None)
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)
        return self._monitor.names if self._monitor is not None else ()

    def score_monitor(self, rows: dict[str, list]) -> Scores | None:
        """The independent judges' (normalized) scores of ``rows``, or None when there are none."""
        monitor = getattr(self, "_monitor", None)
        return monitor.score(rows) if monitor is not None else None

    def set_members(self, members: list[dict]) -> tuple[str, ...]:
        """(Re)load the ensemble's members -- an RL slot reuses its actor for the next run."""
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.names = tuple(m["name"] for m in members)
        self.principle_of = tuple(m.get("principle") for m in members)  # gold RMs that score one principle
        # (shift, scale) per member: scores are reported as (raw - shift) / scale (``norm`` of an RL
        # run's proxy member: its mean and std on the SFT policy's samples)
        self.norms = [tuple(m.get("norm", (0.0, 1.0))) for m in members]
        self.members: list = []
        self.codecs: list = []
        for m in members:
            if m["kind"] == "oracle":
                self.members.append("oracle")
                self.codecs.append(None)
            elif m["kind"] == "hf":
                from orchestrator.nn.codec import (
                    has_tokenizer,
                    load_codec,
                    max_positions,
                )

                if m.get("path"):
                    torch.manual_seed(m.get("seed", 0))  # a causal LM's checkpoint has no score head yet
                    from transformers import AutoModelForSequenceClassification

                    if m.get("head") == "trained":
                        model = AutoModelForSequenceClassification.from_pretrained(
                            m["path"], dtype=getattr(torch, m.get("dtype", "float32")))
                        if model.config.num_labels != 1:
                            raise ValueError(f"member {m['name']}: {m['path']} has a {model.config.num_labels}-label "
                                             "head; a reward model needs one label")
                    else:
                        model = AutoModelForSequenceClassification.from_pretrained(m["path"], num_labels=1)
                    src = m["path"] if has_tokenizer(m["path"]) else self.tokenizer_dir
                else:
                    src = self.tokenizer_dir
                    model = _hf().build_reward_model(ModelConfig(size=m["size"], n_head=m.get("n_head", 4),
                                                                 n_positions=m.get("n_positions", 96)),
                                                     load_codec(src).tok, m.get("seed", 0))
                codec = load_codec(src, self.chat_template, max_positions(model.config))
                if model.config.pad_token_id is None:  # the score is read at the last non-pad token
                    model.config.pad_token_id = codec.pad_id
                self.members.append(model.to(self.device).eval())
                self.codecs.append(codec)
            else:
                raise ValueError(f"member {m['name']}: unknown kind {m['kind']!r}")
        return self.names

    def n_params(self) -> dict[str, int]:
        return {n: (0 if m == "oracle" else _hf().n_params(m)) for n, m in zip(self.names, self.members)}

    # ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def _rm_scores(self, model, seqs: list[list[int]], pad_id: int) -> np.ndarray:
        """The model's scores of token sequences, batch-invariant: every pass has a shape fixed by
        its rows' length bucket (``models.invariant_chunks``), so a sequence's score does not depend
        on the other sequences scored with it -- the run's in-process scores and the reward service's
        (``orchestrator.run.rm_server``) agree bit for bit however requests are batched."""
        with autocast(self.device, self.dtype):
            return self._rm_scores_in(model, seqs, pad_id)

    def _rm_scores_in(self, model, seqs: list[list[int]], pad_id: int) -> np.ndarray:
        from orchestrator.nn.codec import max_positions

        res = np.empty(len(seqs), np.float64)
        budget = self.batch_tokens or _hf().SCORE_TOKENS
        for idx, t, rows in _hf().invariant_chunks([len(s) for s in seqs], budget, max_positions(model.config)):
            ids, mask = _hf().pad_right([seqs[j] for j in idx] + [seqs[idx[-1]]] * (rows - len(idx)), pad_id, t)
            res[idx] = model(input_ids=ids.to(self.device),
                             attention_mask=mask.to(self.device)).logits[: len(idx), 0].float().cpu().numpy()
        return res

    def _bt_backward(self, model, useqs: list[list[int]], pad_id: int, loss_of, heads: int = 1) -> torch.Tensor:
        """One step's loss ``loss_of(r)`` (r: ``[sequences, heads]``, the model's first ``heads``
        logits) and its gradient, in one forward pass or -- when the step's padded tokens exceed
        ``batch_tokens`` -- in two passes over length-bounded pieces: every score without grad, the
        loss's gradient with respect to the scores, then each piece's forward again backpropagating
        its share (the same gradient as one pass; parameters outside the model that ``loss_of``
        uses get theirs from the first backward)."""
        longest = max(len(s) for s in useqs)
        dev = self.device
        if not self.batch_tokens or len(useqs) * longest <= self.batch_tokens:
            ids, mask = _hf().pad_right(useqs, pad_id)
            with autocast(dev, self.dtype):
                r = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits[:, :heads].float()
            loss = loss_of(r)
            loss.backward()
            return loss
        pieces = _hf().token_chunks([len(s) for s in useqs], self.batch_tokens, len(useqs))
        r = torch.zeros(len(useqs), heads)
        with torch.no_grad():
            for c in pieces:
                ids, mask = _hf().pad_right([useqs[j] for j in c], pad_id)
                with autocast(dev, self.dtype):
                    r[c] = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits[:, :heads].float().cpu()
        r.requires_grad_(True)
        loss = loss_of(r)
        loss.backward()
        for c in pieces:
            ids, mask = _hf().pad_right([useqs[j] for j in c], pad_id)
            with autocast(dev, self.dtype):
                out = model(input_ids=ids.to(dev), attention_mask=mask.to(dev)).logits[:, :heads].float()
            out.backward(r.grad[c].to(dev))
        return loss.detach()

    @torch.no_grad()
    def features(self, rows: dict[str, list], member: int = 0, batch: int = 256) -> np.ndarray:
        """``[b, hidden]``: member ``member``'s last hidden layer at the token its score is read from
        (the last non-pad token) for each (prompt, response) -- the latent space of InfoRM's outlier
        score (Miao et al. 2024), ``orchestrator.math.monitor.outlier_share``."""
        model = self.members[member]
        if model == "oracle":
            raise ValueError(f"{self.role} member {self.names[member]!r} is the oracle: it has no latent space")
        c = self.codecs[member]
        seqs = [c.score_input(p, r) for p, r in zip(rows["prompt"], rows["response"])]
        out: list = [None] * len(seqs)
        step = batch
        with autocast(self.device, self.dtype):
            for idx in (_hf().token_chunks([len(s) for s in seqs], self.batch_tokens, batch) if self.batch_tokens
                        else [list(range(i, min(i + step, len(seqs)))) for i in range(0, len(seqs), step)]):
                ids, mask = _hf().pad_right([seqs[j] for j in idx], c.pad_id)
                h = model(input_ids=ids.to(self.device), attention_mask=mask.to(self.device),
                          output_hidden_states=True).hidden_states[-1]
                last = mask.sum(1) - 1  # right padding: the last real token
                feats = h[torch.arange(len(idx)), last.to(self.device)].float().cpu().numpy()
                for k, j in enumerate(idx):
                    out[j] = feats[k]
        return np.stack(out) if out else np.zeros((0, 0))

    def score(self, rows: dict[str, list], sealed: bool = False) -> Scores:
        """rows: columns ``prompt``, ``response`` (and ``family``, ``meta`` for the oracle).
        Returns ``Scores`` with values ``[b, k]``; the oracle also fills per-principle scores.
        ``sealed``: wrap the numbers so they can only be read inside ``metrics_scope()`` (the RL
        loop scores gold this way: the information barrier is enforced, not just promised)."""
        # the role's threads, whoever calls (a colocated trial's process runs every role): a GEMM's
        # rounding depends on how many threads split it, and the reward service scores with these
        prev = torch.get_num_threads()
        torch.set_num_threads(self.threads)
        try:
            out = self._score(rows)
        finally:
            torch.set_num_threads(prev)
        return seal(out) if sealed else out

    def _score(self, rows: dict[str, list]) -> Scores:
        b = len(rows["response"])
        values = np.zeros((b, len(self.members)))
        principles: dict[str, np.ndarray] = {}
        seqs: dict[str, list] = {}  # per codec: members sharing a tokenizer encode the texts once
        for j, m in enumerate(self.members):
            name = self.names[j]
            try:
                drill = _drill(self.role, name, self._calls)
                if m == "oracle":
                    res = [oracle(f, mt, r) for f, mt, r in zip(rows["family"], rows["meta"], rows["response"])]
                    values[:, j] = [x["gold"] for x in res]
                    for p in PRINCIPLES:
                        principles[p] = np.array([x[p] for x in res])
                else:
                    c = self.codecs[j]
                    if c.key not in seqs:
                        seqs[c.key] = [c.score_input(p, r) for p, r in zip(rows["prompt"], rows["response"])]
                    shift, scale = self.norms[j]
                    values[:, j] = (self._rm_scores(m, seqs[c.key], c.pad_id) - shift) / scale
                    if self.principle_of[j]:  # gold.principles: this RM is that principle's gold (issue 22)
                        principles[self.principle_of[j]] = values[:, j].copy()
                if drill == "nan":
                    values[len(values) // 2, j] = np.nan
            except Exception as e:
                raise RewardMemberError(f"{self.role} member {name!r} failed: {e.__class__.__name__}: {e}") from e
            bad = np.flatnonzero(~np.isfinite(values[:, j]))
            if len(bad):
                raise RewardMemberError(f"{self.role} member {name!r} failed: gave {len(bad)} non-finite "
                                        f"score(s), first on row {int(bad[0])}")
        return Scores(values=values, members=self.names, principles=principles)

    def score_rollouts(self, batch, src: dict[str, list], sealed: bool = False) -> Scores:
        """``score`` of a ``RolloutBatch`` straight from a generator (Ray hands the batch over
        without the driver): row i is prompt ``src[...][batch.prompt_index[i]]`` and response
        ``batch.texts[i]``. The RL loop chains this onto each generation chunk, so scoring chunk j
        overlaps generating chunk j+1."""
        return self.score(rollout_rows(batch, src), sealed)

    # ----------------------------------------------------------------------------------------
    def train(self, data: dict, epochs: int, prompts_per_step: int, lr: float, seed: int,
              member_pairs: list[list[int]] | None = None, draws: bool = False,
              length_control: str = "none", length_lambda: float = 1.0) -> dict:
        """Bradley-Terry training of every HF member on labelled pairs.

        data: ``texts`` [(prompt, response)] unique sequences; ``a``, ``b`` [pairs] indices into
        texts; ``p_a`` [pairs] soft labels; ``group`` [pairs] prompt id; ``val`` [pairs] bool.
        A step takes ``prompts_per_step`` prompts and *all* their pairs, so each sequence is
        encoded once per step however many pairs it is in (4 responses -> 6 pairs, 4 forwards).
        ``member_pairs``: per member, the training pairs it sees (indices into the pairs, repeats
        count twice: a bootstrap resample); default every pair not in ``val``. ``draws``: a repeat is a
        prompt drawn again, its copy a group of its own (its own place in the epoch, so a bootstrap
        resample takes as many steps as the data it resamples, as bagging does); otherwise a repeat
        weighs twice in its prompt's step. ``length_control`` (``proxy.length_control``, issue 21):
        ``regress`` adds beta * (len(a) - len(b)) to each pair's logit, beta learned and reported
        (``length_beta``), not part of the saved model; ``head`` trains ODIN's length head beside the
        score (``nn.length_control.LengthControl``) and saves only the score.
        """
        torch.set_num_threads(self.threads)  # per calling thread under OpenMP (a threaded actor's pool)
        a, b = np.asarray(data["a"]), np.asarray(data["b"])
        p_a, val = np.asarray(data["p_a"], float), np.asarray(data["val"], bool)
        group = np.asarray(data["group"])
        if member_pairs is not None and len(member_pairs) != len(self.members):
            raise ValueError(f"member_pairs: {len(member_pairs)} lists for {len(self.members)} members")
        stats = {}
        done_before = 0  # steps of the members trained before this one
        for j, (name, m) in enumerate(zip(self.names, self.members)):
            if m == "oracle":
                continue
            rows = np.flatnonzero(~val) if member_pairs is None else np.asarray(member_pairs[j], dtype=np.int64)
            if member_pairs is not None and val[rows].any():
                raise ValueError(f"member_pairs[{j}] holds validation pairs")
            by_group: dict = {}
            copies: dict[int, int] = {}
            for i in rows:
                c = copies.get(int(i), 0) if draws else 0  # the copy of prompt group[i] this repeat belongs to
                copies[int(i)] = c + 1
                by_group.setdefault((int(group[i]), c) if draws else int(group[i]), []).append(int(i))
            train_groups = sorted(by_group)
            codec = self.codecs[j]
            seqs = [codec.score_input(p, r) for p, r in data["texts"]]
            lens = torch.tensor([float(len(codec.response(r))) for _, r in data["texts"]])
            group_len = {g: max(len(seqs[x]) for i in idx for x in (a[i], b[i])) for g, idx in by_group.items()}
            t0 = time.perf_counter()
            torch.manual_seed(seed + j)
            rng = random.Random(seed + j)
            full, rest = divmod(len(train_groups), prompts_per_step * 16)  # as _length_bucketed cuts them
            steps_per_epoch = full * 16 + math.ceil(rest / prompts_per_step)
            total = steps_per_epoch * epochs
            lc = LengthControl(length_control, m, length_lambda, lens, (a[rows], b[rows], p_a[rows]))
            opt = torch.optim.AdamW(m.parameters(), lr=lr, weight_decay=0.01)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: min(1.0, (s + 1) / max(1, total // 20)) * max(0.0, 1 - s / total))
            m.train()
            losses = []
            for _ in range(epochs):
                for step_groups in _length_bucketed(train_groups, prompts_per_step, group_len, rng):
                    pairs = [i for g in step_groups for i in by_group[g]]
                    uniq = sorted(set(a[pairs].tolist()) | set(b[pairs].tolist()))
                    where = {u: k for k, u in enumerate(uniq)}
                    ia = torch.tensor([where[x] for x in a[pairs].tolist()])
                    ib = torch.tensor([where[x] for x in b[pairs].tolist()])
                    opt.zero_grad(set_to_none=True)
                    pa = torch.tensor(p_a[pairs], dtype=torch.float32)
                    loss = self._bt_backward(m, [seqs[u] for u in uniq], codec.pad_id,
                                             lambda r: lc.loss(r, ia, ib, pa, uniq), lc.heads)
                    torch.nn.utils.clip_grad_norm_(m.parameters(), 1.0)
                    opt.step()
                    sched.step()
                    losses.append(loss.item())
                    self._progress = {"what": "BT step", "done": done_before + len(losses),
                                      "total": done_before + total, "loss": losses[-1]}
            done_before += total
            m.eval()
            st = {"seconds": time.perf_counter() - t0, "loss_last": float(np.mean(losses[-20:])),
                  "steps": total, **lc.finish(), "params": _hf().n_params(m)}
            if val.any():
                r = self._rm_scores(m, seqs, codec.pad_id)
                ra, rb, pv = r[a[val]], r[b[val]], p_a[val]
                st["val_accuracy"] = pair_accuracy(ra, rb, pv)
                hard = pv != 0.5
                st["val_ece"] = ece(1 / (1 + np.exp(-(ra - rb)[hard])), (pv[hard] > 0.5).astype(float))
                st["val_pairs"] = int(val.sum())
            stats[name] = st
        return stats

    def save(self, out_dir: str) -> dict[str, str]:
        paths = {}
        for name, m, c in zip(self.names, self.members, self.codecs):
            if m != "oracle":
                d = Path(out_dir) / name
                m.save_pretrained(d)
                c.save(d)
                paths[name] = str(d)
        return paths
