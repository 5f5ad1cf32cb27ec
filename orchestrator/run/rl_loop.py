"""One RL run (one Tune trial later): actors in a placement group, the linear step, evaluation on
fixed prompts, checkpoints with checksums, bit-identical resume, TensorBoard metrics.

``rl_step`` is the loop (DESIGN.md "The RL loop"): generate -> score -> shape -> advantages ->
update -> sync -> metrics -> checkpoint, every phase timed. Algorithms differ only in their
advantage function and the learner method it names (``ALGORITHMS``).

Gold enters as ``Sealed`` scores (``orchestrator.data.batch``): readable only inside ``metrics_scope()``,
so the information barrier is enforced at run time, not just by convention.
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from orchestrator.config.schema import ConfigError, RLConfig, TrialResources
from orchestrator.data.batch import RolloutBatch, Scores, metrics_scope
from orchestrator.data.checkpoint import (
    CheckpointError,
    sha256_file,
    stream,
    verify_checkpoint,
)
from orchestrator.math import rl as R
from orchestrator.math.algorithms import ALGORITHMS  # noqa: F401  (re-exported)
from orchestrator.math.generalization import spearman
from orchestrator.math.pareto import lagrangian_reward, multiplier_step
from orchestrator.run.actor_group import fetch, put

if TYPE_CHECKING:
    from orchestrator.run.slots import Slot

log = logging.getLogger("rlhf_frontier")


@dataclass(frozen=True)
class RunSpec:
    """What one RL run optimizes. ``members``: RewardEnsemble member dicts of the proxy ensemble."""

    name: str
    members: tuple[dict, ...]
    objective: str = "mean"
    kl_coef: float = 0.0
    proxy_params: int = 0
    labels: dict = field(default_factory=dict)
    monitors: tuple[dict, ...] = ()
    """Proxies the run does not train on (other sizes of its label source): the monitor's independent
    judges, scoring each evaluation's samples (never the update's)."""
    constraints: dict = field(default_factory=dict)
    """Constrained RL (issue 22; ``orchestrator.run.pareto.constraint_spec``): ``maximize`` (a member
    index, or None for the mean), ``constrained`` (member indices), ``level``, ``unit`` (``sd``, or
    per constrained member its proxy point), ``lr`` (the multipliers' step). Empty = unconstrained."""


class PhaseTimer:
    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, phase: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - t0


# --------------------------------------------------------------------------------------------
# one run


def initial_kl_controller(cfg: RLConfig, kl_coef: float) -> R.KLController:
    """beta at step 0: the trial's coefficient, fixed; or, adaptive (Ziegler et al. 2019), started
    there when it is > 0 and at ``rl.kl_init`` when it is 0 (ensemble and no-penalty trials), since
    the controller multiplies beta and would keep a 0 at 0 forever."""
    if cfg.kl_controller == "adaptive":
        return R.KLController(kl_coef if kl_coef > 0 else cfg.kl_init, cfg.kl_target, cfg.kl_horizon)
    return R.KLController(kl_coef, 0.0, cfg.kl_horizon)


def run_config(rl: dict) -> dict:
    """The rl config of one run, as JSON gives it back: ``rl`` without ``RLConfig.SWEEP_ONLY``."""
    return {k: v for k, v in json.loads(json.dumps(rl)).items() if k not in RLConfig.SWEEP_ONLY}


class RLRun:
    """The state of one RL run on a ``Slot`` of actors.

    train_rows / eval_rows: columns ``prompt``, ``family``, ``meta``. ``gold=False`` runs without a
    gold ensemble (the barrier test compares against it). Without ``slot`` the run makes (and on
    ``shutdown`` removes) its own; with one, it resets and reuses it.
    """

    def __init__(self, cfg: RLConfig, spec: RunSpec, resources: TrialResources, policy_dir: str,
                 tokenizer_dir: str, train_rows: dict, eval_rows: dict, out_dir: Path, seed: int,
                 gold: bool = True, local: bool = False, reference_id: str = "", slot: Slot | None = None):
        self.cfg, self.spec, self.seed, self.local = cfg, spec, seed, local
        self.out = Path(out_dir)
        self.train_rows, self.eval_rows = train_rows, eval_rows
        self.reference_id = reference_id or sha256_file(Path(policy_dir) / "model.safetensors")
        self.own_slot = slot is None
        if slot is None:
            from orchestrator.run.slots import Slot

            slot = Slot(resources, policy_dir, tokenizer_dir, list(spec.members), seed, gold, local, f"rl-{spec.name}")
        else:
            slot.reset(policy_dir, list(spec.members))
        self.slot = slot
        self.local = slot.local
        self.learner, self.gen, self.proxy = slot.learner, slot.gen, slot.proxy
        self.gold = slot.gold if gold else None  # a shared slot's gold stays out of a run without gold
        fetch(self.proxy.all("set_monitors", list(spec.monitors)))  # before the learner seeds its RNG
        fetch(self.learner.all("init_rl", cfg.lr, cfg.algorithm == "ppo", stream(seed, "rl/init"),  # every replica
                               cfg.max_grad_norm))
        self.kl = initial_kl_controller(cfg, spec.kl_coef)
        self.step = 0
        self.history: list[dict] = []
        self.evals: list[dict] = []
        self.latent_ref = None  # the monitor's SFT-sample features (the step-0 evaluation), checkpointed
        self.constraint: dict | None = None  # constrained RL's thresholds and multipliers, checkpointed
        self.pending: tuple | None = None
        self.last_checkpoint: Path | None = None  # saved by the latest step (run_rl's on_step sees it)
        self._perm: tuple[int, np.ndarray | None] = (-1, None)
        self.hp = {k: getattr(cfg, k) for k in ("epochs", "minibatches", "clip", "vf_coef", "value_clip",
                                                 "max_grad_norm", "temperature")}

    def learner_call(self, method: str, *args):
        """``method`` on one learner replica -- or, where a DeepSpeed group must call it together
        (``Slot.collective``: collectives inside), on every replica; rank 0's result."""
        if method in getattr(self.slot, "collective", ()):
            return self.learner.all(method, *args)[0]
        if method == "push_weights":  # rank 0 hosts the broadcast group
            return self.learner.actors[0].push_weights.remote(*args)
        return self.learner.one(method, *args)

    def _latent_outlier(self, rows: dict, step: int) -> dict:
        """InfoRM's latent outlier score (Miao et al. 2024): the share of this evaluation's samples
        whose Mahalanobis distance from the SFT policy's samples, in the first proxy member's last
        hidden layer, exceeds the 95th percentile of held-out SFT samples' own distances. The
        reference is the step-0 evaluation (the SFT policy, the same prompts), its even rows the fit,
        its odd rows the held-out; kept with the run's checkpoints (``self.latent_ref``). Empty for
        an oracle proxy (no latent space) or a run resumed without its reference."""
        from orchestrator.math.monitor import outlier_share

        if self.spec.members[0].get("kind") == "oracle":  # the oracle has no latent space
            return {}
        feats = fetch(self.proxy.one("features", rows))
        if step == 0:
            self.latent_ref = feats
        elif self.latent_ref is None:  # resumed from a checkpoint written before the monitor kept it
            return {}
        ref = self.latent_ref
        return {"latent_outlier": outlier_share(ref[0::2], ref[1::2], feats)}

    def monitor(self) -> None:
        """The gold-free detectors' signals at the latest evaluation (``orchestrator.math.monitor``,
        from its non-gold keys only), stored in it as ``monitor/<name>``: logged live."""
        from orchestrator.math.monitor import signals

        for name, series in signals(self.evals).items():
            self.evals[-1][f"monitor/{name}"] = series[-1]

    # ---- data --------------------------------------------------------------------------------
    def prompt_indices(self, step: int) -> list[int]:
        """Training prompts of a step: consecutive slices of a per-epoch permutation (seeded by the
        epoch), so the cursor is just ``step`` and a resumed run draws the same prompts."""
        n, k = len(self.train_rows["prompt"]), self.cfg.prompts_per_step
        out = []
        for pos in range(step * k, step * k + k):
            epoch, i = divmod(pos, n)
            out.append(int(self._epoch_perm(epoch)[i]))
        return out

    def _epoch_perm(self, epoch: int) -> np.ndarray:
        if self._perm[0] != epoch:
            n = len(self.train_rows["prompt"])
            self._perm = (epoch, np.random.default_rng(stream(self.seed, f"rl/epoch{epoch}")).permutation(n))
        return self._perm[1]

    def _launch(self, step: int) -> tuple:
        """Generation of ``step`` in ``rollout_chunks`` chunks, each chunk's proxy (and sealed gold)
        scoring chained onto it actor-to-actor: nothing waits here."""
        idx = self.prompt_indices(step)
        launched = []
        for j, c in enumerate(np.array_split(np.arange(len(idx)), self.cfg.rollout_chunks)):
            if not len(c):
                continue
            src = self._rows(self.train_rows, [idx[i] for i in c], None)
            b = self.gen.one("generate", src["prompt"], self.cfg.responses_per_prompt,
                             stream(self.seed, f"rl/gen/{step}/{j}"), self.cfg.max_new_tokens,
                             self.cfg.temperature, with_ref=True, fast=True)
            p = self.proxy.one("score_rollouts", b, src)
            g = self.gold.one("score_rollouts", b, src, sealed=True) if self.gold else None
            launched.append((b, p, g))
        return step, launched

    def prefetch(self, step: int) -> None:
        """Async mode: start generating (and scoring) ``step`` now, with the weights the generators hold."""
        if step < self.cfg.steps:
            self.pending = self._launch(step)

    def rollouts(self, step: int) -> tuple[RolloutBatch, Scores, list]:
        """The step's batch and proxy scores, and the (sealed, unread) gold score refs."""
        def once():
            if self.pending is not None and self.pending[0] == step:
                _, launched = self.pending
                self.pending = None
            else:
                _, launched = self._launch(step)
            batch = RolloutBatch.concat(fetch([b for b, _, _ in launched]))
            proxy = Scores.concat(fetch([p for _, p, _ in launched]))
            return batch, proxy, [g for _, _, g in launched if g is not None]

        return self._generating(once, f"step {step}")

    def _generating(self, fn, what: str):
        """``fn()`` (a generation and what is chained onto it), retried after a generator restart."""
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as e:
                self._recover_generators(e, attempt, what)  # re-raises what it cannot recover
                attempt += 1

    def _recover_generators(self, err: Exception, attempt: int, what: str) -> None:
        """After a failed generation: if a generator's process died (killed, out of memory, its node
        lost) and Ray restarts it (``cluster.rl.generator_restarts``), wait for it, push the current
        weights and return so the caller retries -- generation is seeded by (seed, step, chunk), so
        the retry reproduces the lost batch exactly. Anything else is re-raised."""
        import ray.exceptions as X

        lost = (X.RayActorError, X.ObjectLostError)  # a dead process, or its results gone with its node
        died = isinstance(err, lost) or isinstance(getattr(err, "cause", None), lost)
        if self.local or not died or attempt >= self.slot.generator_restarts:
            raise err
        log.warning("rl %s: a rollout generator died during %s (%s); waiting for its restart, re-pushing "
                    "weights version %d, retrying (%d/%d)", self.spec.name, what, err.__class__.__name__,
                    self.step, attempt + 1, self.slot.generator_restarts)
        self.pending = None  # async mode: a prefetched batch may be lost with it
        deadline = time.time() + 300
        while True:  # calls to a restarting actor wait for it; a dead one raises at once
            try:
                fetch(self.gen.all("reset", self.slot.policy_dir))
                break
            except X.RayActorError:
                if time.time() > deadline:
                    raise
                time.sleep(1.0)
        if getattr(self.slot, "weight_sync", "object_store") == "broadcast":
            self.slot.open_weight_group()  # the restarted generator joins a fresh group
        self.sync_weights()
        log.warning("rl %s: generators back; retrying %s", self.spec.name, what)

    @staticmethod
    def _rows(src: dict, rows: list[int], texts: list[str] | None) -> dict:
        out = {"prompt": [src["prompt"][i] for i in rows], "family": [src["family"][i] for i in rows],
               "meta": [src["meta"][i] for i in rows]}
        if texts is not None:
            out["response"] = texts
        return out

    def sync_weights(self) -> None:
        """Push the learner's weights to every generator (calls to an actor run in order, so the
        next ``generate`` sees them; nothing waits here)."""
        if getattr(self.slot, "weight_sync", "object_store") == "broadcast":  # learner and generators at once
            self.learner_call("push_weights")
            self.gen.all("pull_weights", self.step)
            return
        w = self.learner_call("weights")
        self.gen.all("load_weights", w, self.step)

    # ---- evaluation --------------------------------------------------------------------------
    def evaluate(self, step: int) -> dict:
        """The policy on the fixed eval prompts, ``eval_responses_per_prompt`` responses each, the
        same seed every time (common random numbers): KL (k1 sum, nats), proxy objective and
        members, gold and its principles, and gold's standard error over prompts.

        The policy's log-probs are the sampler's own (KV-cached decoding; within ~3e-6 per token of a
        full forward pass), except at step 0, where a full forward -- the function the reference
        uses -- makes the KL of the initial policy to itself exactly 0. The extra pass would cost a
        third of every later evaluation."""
        ev, k = self.eval_rows, self.cfg.eval_responses_per_prompt
        b = self._generating(lambda: fetch(self.gen.one(
            "generate", ev["prompt"], k, stream(self.seed, "rl/eval"), self.cfg.max_new_tokens,
            self.cfg.temperature, with_ref=True, recompute=step == 0, fast=True)), f"the evaluation at step {step}")
        rows = self._rows(ev, [int(i) for i in b.prompt_index], b.texts)
        p_ref = self.proxy.one("score", rows)
        g_ref = self.gold.one("score", rows, sealed=True) if self.gold else None
        mask = b.response_mask.float()
        ps = fetch(p_ref)
        pv = torch.tensor(ps.values)
        fams = rows["family"]
        if self.spec.constraints and self.constraint is None:  # the SFT policy's samples set the thresholds
            self.constraint = self.constraint_state(pv)
        out = {"step": step,
               "kl": float(R.sequence_kl(b.logprobs, b.ref_logprobs, mask).mean()),
               "kl_k3": float(R.sequence_kl(b.logprobs, b.ref_logprobs, mask, "k3").mean()),
               "proxy": float(R.aggregate(pv, self.spec.objective, self.cfg.uwo_lambda, fams).mean()),
               "tokens": float(mask.sum(1).mean()),
               # the policy's per-token entropy, estimated by the sampled tokens' mean surprisal (no extra pass)
               "entropy": float(-(b.logprobs * mask).sum() / mask.sum().clamp_min(1))}
        for j, m in enumerate(ps.members):
            out[f"proxy/{m}"] = float(pv[:, j].mean())
        # length and domain (issue 21): the objective's rank correlation with response length, and
        # every family's mean length (gold per family below) -- the stratified frontiers' raw points
        lens = mask.sum(1).numpy().astype(float)
        obj = R.aggregate(pv, self.spec.objective, self.cfg.uwo_lambda, fams).numpy()
        rho = spearman(obj, lens)
        if rho is not None:
            out["proxy_length_spearman"] = rho
        fam = np.asarray(rows["family"])
        families = sorted(set(fam.tolist()))
        for f in families:
            out[f"tokens_family/{f}"] = float(lens[fam == f].mean())
        if pv.shape[1] > 1:  # the members' disagreement on the policy's samples
            out["proxy_spread"] = float(pv.std(1, unbiased=False).mean())
        if self.spec.monitors:  # reward models the run does not train on, on the first response of each
            sub = list(range(0, len(rows["response"]), k))  # prompt (half the rows: half the judges' cost,
            srows = {c: [v[i] for i in sub] for c, v in rows.items()}  # which was 4-8% of the default's sweep)
            out["proxy_independent"] = float(np.mean(fetch(self.proxy.one("score_monitor", srows)).values))
            out["proxy_monitored"] = float(R.aggregate(pv[sub], self.spec.objective, self.cfg.uwo_lambda,
                                                       [fams[i] for i in sub]).mean())
        out.update(self._latent_outlier(rows, step))
        if g_ref is not None:
            gs = fetch(g_ref)
            with metrics_scope():
                g = np.asarray(gs.values).mean(axis=1)
                out["gold"] = float(g.mean())
                per_prompt = g.reshape(-1, k).mean(axis=1)  # rows are prompt-major
                out["gold_se"] = float(per_prompt.std() / np.sqrt(len(per_prompt)))
                for p, v in gs.principles.items():
                    out[f"gold/{p}"] = float(np.asarray(v).mean())
                for f in families:
                    out[f"gold_family/{f}"] = float(g[fam == f].mean())
        return out

    def constraint_state(self, pv: torch.Tensor) -> dict:
        """Constrained RL's state from the SFT policy's evaluation scores ``pv`` [b, k]: per
        constrained member its reference level (mean), s.d., threshold c_i = mean + level x unit
        (the s.d., or the member's proxy point) and multiplier (0)."""
        c = self.spec.constraints
        sub = pv[:, c["constrained"]].double()
        mean, sd = sub.mean(0).numpy(), sub.std(0, unbiased=False).clamp_min(1e-6).numpy()
        unit = sd if c["unit"] == "sd" else np.asarray(c["unit"], float)
        return {"names": list(c["names"]), "reference": mean.tolist(), "sd": sd.tolist(),
                "threshold": (mean + c["level"] * unit).tolist(), "lam": [0.0] * len(c["constrained"])}

    def family_of_rows(self, step: int, batch: RolloutBatch) -> list[str]:
        """The prompt family of each row of ``step``'s batch (rows are the step's prompts in order)."""
        idx = self.prompt_indices(step)
        return [self.train_rows["family"][idx[int(i)]] for i in batch.prompt_index]

    # ---- checkpoints -------------------------------------------------------------------------
    @property
    def ckpt_root(self) -> Path:
        return self.out / "checkpoints"

    def save_checkpoint(self) -> Path:
        """``checkpoints/step_NNNNNN``: learner weights + value head + RNG (safetensors), optimizer
        (tensors only), ``state.json`` (step, KL controller, cursor, reference, metric history) and
        ``manifest.json`` with a sha256 per file; written to a temp dir, then renamed."""
        final = self.ckpt_root / f"step_{self.step:06d}"
        tmp = final.with_name(final.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        files = fetch(self.learner_call("save_checkpoint", str(tmp)))
        state = {"step": self.step, "run": self.spec.name, "config": asdict(self.cfg), "seed": self.seed,
                 "reference": self.reference_id, "kl_controller": self.kl.state_dict(),
                 "cursor": {"prompt_position": self.step * self.cfg.prompts_per_step},
                 "rng": {"note": "every draw is seeded by (seed, step); the learner's torch RNG is in "
                                 "learner.safetensors"},
                 "history": self.history, "evals": self.evals,
                 **({"constraint": self.constraint} if self.constraint is not None else {})}
        (tmp / "state.json").write_text(json.dumps(state, default=_jsonable))
        if self.latent_ref is not None:  # the monitor's SFT reference features
            from safetensors.torch import save_file

            save_file({"latent_ref": torch.from_numpy(np.ascontiguousarray(self.latent_ref))},
                      str(tmp / "monitor.safetensors"))
            files = [*files, "monitor.safetensors"]
        manifest = {f: sha256_file(tmp / f) for f in [*files, "state.json"]}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(self.ckpt_root.glob("step_*[0-9]"))[:-self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return final

    def restore(self) -> int | None:
        """Load the newest checkpoint whose checksums verify; a corrupt or torn one is logged and
        skipped for the one before. A checkpoint of another config or reference is a user error.
        Returns the restored step, or None when there is none."""
        for d in sorted(self.ckpt_root.glob("step_*[0-9]"), reverse=True):
            try:
                state = verify_checkpoint(d)
            except CheckpointError as e:
                log.warning("rl %s: checkpoint %s is unusable (%s); trying the previous one", self.spec.name, d.name, e)
                continue
            if run_config(state["config"]) != run_config(asdict(self.cfg)) or state["seed"] != self.seed:
                raise ConfigError(f"--resume: {d} was written with another rl config or seed; "
                                  "resume with the config it was started with")
            if state["reference"] != self.reference_id:
                raise ConfigError(f"checkpoint {d} was trained from another reference policy than the SFT "
                                  f"policy this run starts from; remove {self.out} to train this run anew")
            version = fetch(self.learner.all("load_checkpoint", str(d)))[0]  # every replica of a learner group
            self.step = state["step"]
            self.kl.load_state_dict(state["kl_controller"])
            self.history, self.evals = state["history"], state["evals"]
            self.constraint = state.get("constraint")
            if (d / "monitor.safetensors").exists():
                from safetensors.torch import load_file

                self.latent_ref = load_file(str(d / "monitor.safetensors"))["latent_ref"].numpy()
            assert version == self.step, (version, self.step)
            self.sync_weights()
            log.info("rl %s: resumed from %s", self.spec.name, d)
            return self.step
        return None

    def shutdown(self) -> None:
        """Release the run's actors if it made them (a shared slot stays for the next run)."""
        if self.own_slot:
            self.slot.shutdown()


def _jsonable(x):
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    if isinstance(x, tuple):
        return list(x)
    raise TypeError(type(x))


# --------------------------------------------------------------------------------------------
# the step


def rl_step(run: RLRun) -> dict:
    """One RL step, phases in order, each timed. Gold is only ever read in ``metrics``."""
    cfg, T, step = run.cfg, PhaseTimer(), run.step
    t_start = time.perf_counter()
    with T("eval"):
        every = cfg.eval_every_late if cfg.eval_every_late and step >= cfg.eval_late_from else cfg.eval_every
        due = step % every == 0 or step <= cfg.eval_early
        if due and (not run.evals or run.evals[-1]["step"] < step):
            run.evals.append(run.evaluate(step))
            run.monitor()
    with T("generate"):  # generation, with each chunk's proxy/gold scoring chained onto it
        batch, proxy, g_refs = run.rollouts(step)
    with T("score"):
        batch_ref = put(batch, run.local)
        # PPO needs the value head's estimates; critic-free algorithms take the sampler's own
        # log-probs as the old policy (the exact behaviour policy, also in async mode)
        old = (fetch(run.learner_call("evaluate", batch_ref, cfg.temperature)) if cfg.algorithm == "ppo"
               else {"logprobs": batch.logprobs})
    with T("shape"):
        members = torch.tensor(proxy.values, dtype=torch.float32)
        fams = run.family_of_rows(step, batch) if run.spec.objective.startswith("family:") else None
        score = R.aggregate(members, run.spec.objective, cfg.uwo_lambda, fams)
        con = run.spec.constraints
        if con:  # constrained RL: the normalized Lagrangian under the current multipliers
            target, bound = score, members[:, con["constrained"]]
            lam = torch.tensor(run.constraint["lam"], dtype=torch.float32)
            score = lagrangian_reward(target, bound, lam)
        mask = batch.response_mask.float()
        kl_tok = R.KL_ESTIMATORS[cfg.kl_estimator](old["logprobs"], batch.ref_logprobs) * mask
        beta = run.kl.beta
    with T("advantages"):
        method, adv = ALGORITHMS[cfg.algorithm](score, kl_tok, beta, old, batch, cfg)
    staleness = step - batch.policy_version
    if cfg.async_generation:
        run.prefetch(step + 1)  # generation of step t+1 overlaps the update of step t
    with T("update"):
        stats = fetch(run.learner.all(method, batch_ref, old, **adv, hp=run.hp,  # every replica of a group
                                      seed=stream(run.seed, f"rl/update/{step}")))[0]
    run.step = step + 1
    with T("sync"):
        run.sync_weights()
    with T("metrics"):
        kl_seq = R.sequence_kl(old["logprobs"], batch.ref_logprobs, mask)
        run.kl.update(float(kl_seq.mean()), len(batch))
        m = {"step": step, "kl": float(kl_seq.mean()),
             "kl_k3": float(R.sequence_kl(old["logprobs"], batch.ref_logprobs, mask, "k3").mean()),
             "kl_coef": beta, "proxy/objective": float(score.mean()), "proxy/mean": float(members.mean()),
             "proxy/std_members": float(members.std(1, unbiased=False).mean()),
             "reward/shaped": float((score - beta * kl_tok.sum(1)).mean()),
             "response/tokens": float(mask.sum(1).mean()), "async/staleness": staleness, **stats}
        for j, name in enumerate(proxy.members):
            m[f"proxy/{name}"] = float(members[:, j].mean())
        if con:  # the multipliers this step used, each constraint's slack, then the multipliers' step
            m["proxy/target"] = float(target.mean())
            st, v = run.constraint, bound.double().mean(0).numpy()
            for j, name in enumerate(st["names"]):
                m[f"lagrange/{name}"] = st["lam"][j]
                m[f"constraint/{name}"] = float(v[j] - st["threshold"][j])
            sd = np.asarray(st["sd"])
            st["lam"] = multiplier_step(np.asarray(st["lam"]), v / sd, np.asarray(st["threshold"]) / sd,
                                        con["lr"]).tolist()
        if cfg.async_generation and cfg.algorithm == "ppo":
            m["async/behavior_kl"] = float(R.sequence_kl(batch.logprobs, old["logprobs"], mask).mean())
        if g_refs:
            gold_parts = fetch(g_refs)
            with metrics_scope():
                gold = Scores.concat(gold_parts)
                g = np.asarray(gold.values)
                m["gold/mean"] = float(g.mean())
                for j, name in enumerate(gold.members):
                    m[f"gold/{name}"] = float(g[:, j].mean())
                for p, v in gold.principles.items():
                    m[f"gold/{p}"] = float(np.asarray(v).mean())
        run.history.append(m)
    with T("checkpoint"):
        if run.step % cfg.checkpoint_every == 0 or run.step == cfg.steps:
            run.last_checkpoint = run.save_checkpoint()
    total = time.perf_counter() - t_start
    m.update({f"timing/{k}_s": v for k, v in T.seconds.items()})
    m["timing/step_s"] = total
    m["throughput/samples_per_s"] = len(batch) / total
    m["throughput/tokens_per_s"] = float(mask.sum()) / total
    return m


# --------------------------------------------------------------------------------------------
# the loop


def run_rl(run: RLRun, progress: bool = False, tensorboard: bool = True, stop_after: int | None = None,
           on_step=None) -> dict:
    """Run (or resume) until ``cfg.steps``; eval at the end; returns the run's summary.

    ``metrics.jsonl`` and TensorBoard event files (``tb/``) get every step; on resume both are cut
    back to the checkpoint, so no step is recorded twice. ``stop_after``: return after that many
    steps of this call (tests and benchmarks). ``on_step(metrics, evaluation or None, checkpoint
    dir or None)`` after every step and after the final evaluation (a Tune trial reports there)."""
    from tqdm import tqdm

    cfg = run.cfg
    run.out.mkdir(parents=True, exist_ok=True)
    start = run.restore() or 0
    if start == 0:
        run.sync_weights()  # version 0 everywhere (a no-op for the weights themselves)
    metrics_path = run.out / "metrics.jsonl"
    with open(metrics_path, "w") as f:  # rewritten from the checkpoint's history
        f.writelines(json.dumps(m) + "\n" for m in run.history)
    writer = None
    if tensorboard:
        from tensorboardX import SummaryWriter

        writer = SummaryWriter(str(run.out / "tb"), purge_step=start, flush_secs=10)
    done_here = 0
    try:
        with tqdm(total=cfg.steps, initial=start, desc=f"rl {run.spec.name}", disable=not progress,
                  leave=False) as bar, open(metrics_path, "a") as f:
            while run.step < cfg.steps and (stop_after is None or done_here < stop_after):
                m = rl_step(run)
                done_here += 1
                f.write(json.dumps({k: v for k, v in m.items()}) + "\n")
                f.flush()
                if writer is not None:
                    for k, v in m.items():
                        if k != "step" and isinstance(v, (int, float)):
                            writer.add_scalar(k, v, m["step"])
                    if run.evals and run.evals[-1]["step"] == m["step"]:
                        _write_eval(writer, run.evals[-1], m["step"])
                bar.update(1)
                bar.set_postfix(kl=f"{m['kl']:.2f}", proxy=f"{m['proxy/objective']:.3f}",
                                gold=f"{m.get('gold/mean', float('nan')):.3f}")
                if on_step is not None:
                    ev = run.evals[-1] if run.evals and run.evals[-1]["step"] == m["step"] else None
                    ck, run.last_checkpoint = run.last_checkpoint, None
                    on_step(m, ev, ck)
        if run.step >= cfg.steps and (not run.evals or run.evals[-1]["step"] < run.step):
            run.evals.append(run.evaluate(run.step))
            run.monitor()
            if writer is not None:
                _write_eval(writer, run.evals[-1], run.step)
            if on_step is not None:
                ck, run.last_checkpoint = run.last_checkpoint, None
                on_step({"step": run.step}, run.evals[-1], ck)
    finally:
        if writer is not None:
            writer.close()
    return summarize(run)


def _write_eval(writer, ev: dict, step: int) -> None:
    """An evaluation's scalars: ``eval/<key>``, and the gold-free detectors' signals as ``monitor/<name>``."""
    for k, v in ev.items():
        if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
            writer.add_scalar(k if k.startswith("monitor/") else f"eval/{k}", v, step)


def _length_family(e: dict, base: dict) -> dict:
    """An evaluation's length and per-family numbers for frontier.json (issue 21): ``length`` (mean
    response tokens), ``proxy_length_spearman``, and per family its gold gain since the initial
    policy and its mean length (what length-controlled gold and the stratified frontiers read)."""
    out = {"length": e["tokens"]}
    gp = {k.split("/", 1)[1]: e[k] - base.get(k, 0.0) for k in e if k.startswith("gold/")}
    if gp:  # each principle's gold gain (issue 22: the Pareto front reads these)
        out["gold_principles"] = gp
    pm = {k.split("/", 1)[1]: e[k] - base.get(k, 0.0) for k in e if k.startswith("proxy/")}
    if len(pm) > 1:  # each member's score change (the per-principle proxies of a weighted run)
        out["proxy_members"] = pm
    if "proxy_length_spearman" in e:
        out["proxy_length_spearman"] = e["proxy_length_spearman"]
    fams = sorted(k.split("/", 1)[1] for k in e if k.startswith("tokens_family/"))
    if fams:
        out["length_family"] = {f: e[f"tokens_family/{f}"] for f in fams}
        if all(f"gold_family/{f}" in e for f in fams):
            out["gold_family"] = {f: e[f"gold_family/{f}"] - base.get(f"gold_family/{f}", 0.0) for f in fams}
    return out


def summarize(run: RLRun) -> dict:
    """The run's contract entry (frontier.json "rl"): eval points relative to the initial policy."""
    from orchestrator.math.scaling import fit_bon, fit_rl

    ev = run.evals
    base = ev[0] if ev else {}
    points = [{"step": e["step"], "kl": max(e["kl"], 0.0), "gold": e.get("gold", float("nan")) - base.get("gold", 0.0),
               "proxy": e["proxy"] - base["proxy"], **_length_family(e, base)} for e in ev]
    out = {"proxy": run.spec.name, "proxy_params": run.spec.proxy_params, "kl_coef": run.spec.kl_coef,
           "seed": run.seed, "objective": run.spec.objective, "algorithm": run.cfg.algorithm,
           "members": [m["name"] for m in run.spec.members], "steps": run.step, "points": points,
           "monitors": [m["name"] for m in run.spec.monitors],
           "gold_se": float(np.mean([e.get("gold_se", 0.0) for e in ev])) if ev else None,
           **run.spec.labels}
    if run.constraint is not None:  # constrained RL: thresholds and the multipliers' course
        st, hist = run.constraint, [m for m in run.history if any(k.startswith("lagrange/") for k in m)]
        out["lagrange"] = {
            **{k: st[k] for k in ("names", "reference", "sd", "threshold")}, "final": st["lam"],
            "max": [max([m[f"lagrange/{n}"] for m in hist] + [0.0]) for n in st["names"]],
            "violated_fraction": [float(np.mean([m[f"constraint/{n}"] < 0 for m in hist])) if hist else None
                                  for n in st["names"]],
            "unit": "sd" if run.spec.constraints["unit"] == "sd" else "proxy point",
            "lr": run.spec.constraints["lr"]}
    from orchestrator.math.monitor import signals

    # the gold-free detectors' signals per evaluation (None where undefined) and gold's s.e. per
    # evaluation: what frontier.json's ``monitor`` section scores against gold
    out["monitor"] = {k: [v if math.isfinite(v) else None for v in s] for k, s in signals(ev).items()}
    out["gold_se_per_eval"] = [e.get("gold_se") for e in ev]
    fit_pts = [p for p in points if p["kl"] > 0]
    if len(fit_pts) >= 3 and all(np.isfinite(p["gold"]) for p in fit_pts):
        kl = np.array([p["kl"] for p in fit_pts])
        g = np.array([p["gold"] for p in fit_pts])
        out["fit"] = fit_rl(kl, g).to_dict()
        out["fit_bon_form"] = fit_bon(kl, g).to_dict()
        gold = np.array([p["gold"] for p in points])
        peak = int(np.argmax(gold))
        out["gold_peak_empirical"] = {"step": points[peak]["step"], "kl": points[peak]["kl"], "gold": float(gold[peak])}
        out["gold_drop_after_peak"] = float(gold[peak] - gold[-1])
    return out
