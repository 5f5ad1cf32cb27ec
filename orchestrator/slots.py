"""Where one RL run's roles live (``cluster.rl``): ``Slot`` -- the learner, generator, proxy and
gold as separate actors in one placement group (or in this process, ``local=True``) -- and
``ColocatedSlot`` -- every role in one actor (``TrialWorker``). ``make_slot`` picks by config,
``execute`` runs an ``RLRun`` on either."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from actors.policy_learner import PolicyLearner
from actors.reward_ensemble import RewardEnsemble
from actors.rollout_generator import RolloutGenerator
from orchestrator.actor_group import ActorGroup, fetch
from orchestrator.checkpoint import stream
from orchestrator.config import RLConfig, TrialResources
from orchestrator.rl_loop import RLRun, RunSpec, rl_step, run_rl


class Slot:
    """The actors one RL run needs -- learner, generator replicas, proxy and gold ensembles -- in one
    placement group (all bundles or none, so concurrent runs never deadlock on half-placed actors).
    A slot outlives a run: ``reset`` readies it for the next one in a fraction of a second, where
    starting four fresh actor processes costs ~15 s of CPU on a small machine.
    ``local=True`` builds the roles in this process instead (the benchmark's overhead baseline)."""

    def __init__(self, resources: TrialResources, policy_dir: str, tokenizer_dir: str, members: list[dict],
                 seed: int, gold: bool = True, local: bool = False, name: str = "rl", pg: tuple | None = None):
        """pg: ``(placement_group, first bundle index)`` to place the role actors into an existing
        group (a Tune trial's own) instead of creating one."""
        self.local, self.pg = local, None
        placement: dict = {}
        if not local:
            import ray
            from ray.util.placement_group import placement_group

            if pg is None:
                group, o = placement_group(resources.bundles(), strategy=resources.strategy,
                                           name=f"{name}-{os.urandom(4).hex()}"), 0
                ray.get(group.ready())
                self.pg = group  # ours to remove
            else:
                group, o = pg
            g = resources.generator.replicas
            placement = {"learner": (group, [o]), "generator": (group, list(range(o + 1, o + 1 + g))),
                         "proxy": (group, [o + 1 + g]), "gold": (group, [o + 2 + g])}
        self.policy_dir = policy_dir
        self.learner = ActorGroup(PolicyLearner, resources.learner, tokenizer_dir, {"path": policy_dir},
                                  stream(seed, "rl/learner"), placement=placement.get("learner"), local=local)
        # generators hold nothing a restart loses (the run re-pushes the weights): Ray restarts them
        self.gen = ActorGroup(RolloutGenerator, resources.generator, policy_dir,
                              placement=placement.get("generator"), local=local,
                              options={"max_restarts": resources.generator_restarts})
        self.generator_restarts = 0 if local else resources.generator_restarts
        self.proxy = ActorGroup(RewardEnsemble, resources.proxy, "proxy", list(members), tokenizer_dir,
                                placement=placement.get("proxy"), local=local)
        self.gold = (ActorGroup(RewardEnsemble, resources.gold, "gold", [{"name": "oracle", "kind": "oracle"}],
                                placement=placement.get("gold"), local=local) if gold else None)
        self.members = list(members)

    def reset(self, policy_dir: str, members: list[dict]) -> None:
        refs = [*self.learner.all("reset", policy_dir), *self.gen.all("reset", policy_dir)]
        if list(members) != self.members:
            refs += self.proxy.all("set_members", list(members))
            self.members = list(members)
        fetch(refs)
        self.policy_dir = policy_dir

    def shutdown(self) -> None:
        for g in (self.learner, self.gen, self.proxy, self.gold):
            if g is not None:
                g.shutdown()
        if self.pg is not None:
            from ray.util.placement_group import remove_placement_group

            remove_placement_group(self.pg)
            self.pg = None


def make_slot(resources: TrialResources, policy_dir: str, tokenizer_dir: str, members: list[dict], seed: int,
              gold: bool = True, name: str = "rl"):
    """The slot ``resources`` ask for: roles as separate actors (``Slot``) or all in one
    (``ColocatedSlot``, ``cluster.rl.colocate``)."""
    cls = ColocatedSlot if resources.colocate else Slot
    return cls(resources, policy_dir, tokenizer_dir, members, seed, gold, name=name)


def execute(slot, cfg: RLConfig, spec: RunSpec, resources: TrialResources, policy_dir: str, tokenizer_dir: str,
            train_rows: dict, eval_rows: dict, out_dir: Path, seed: int, progress: bool = False,
            stop_after: int | None = None) -> dict:
    """Run (or resume) one RL run on ``slot`` to its end; returns ``summarize``'s entry."""
    if isinstance(slot, ColocatedSlot):
        return slot.execute(cfg, spec, policy_dir, tokenizer_dir, train_rows, eval_rows, out_dir, seed,
                            progress, stop_after)
    run = RLRun(cfg, spec, resources, policy_dir, tokenizer_dir, train_rows, eval_rows, out_dir, seed, slot=slot)
    return run_rl(run, progress=progress, stop_after=stop_after)


class TrialWorker:
    """Every role of an RL run in one process (``cluster.rl.colocate``): the learner, generator,
    proxy and gold objects are the same classes the separate actors run, called in-process
    (``Slot(local=True)``), so results are bit-identical to the separate-actor placement while
    the per-call hand-offs between processes disappear. On a small machine those hand-offs cost
    ~35-50% of a step (processes that take turns on a core run each other's caches and TLBs cold;
    ``python -m jobs.bench rl`` measures it); on a cluster where each role has its own GPU, keep
    the roles apart. Colocation as in verl's colocated worker groups / OpenRLHF's colocate mode.

    A threaded actor (two threads): ``run`` works while ``status`` answers progress polls."""

    def __init__(self, resources: TrialResources, policy_dir: str, tokenizer_dir: str, members: list[dict],
                 seed: int, gold: bool = True):
        from orchestrator.models import set_threads

        self.threads = set_threads(resources.num_cpus)
        self.resources = resources
        self.slot = Slot(resources, policy_dir, tokenizer_dir, members, seed, gold, local=True)
        self.run_: RLRun | None = None

    def start(self, cfg: RLConfig, spec: RunSpec, policy_dir: str, tokenizer_dir: str, train_rows: dict,
              eval_rows: dict, out_dir: str, seed: int) -> None:
        torch.set_num_threads(self.threads)  # per calling thread under OpenMP
        self.run_ = RLRun(cfg, spec, self.resources, policy_dir, tokenizer_dir, train_rows, eval_rows,
                          Path(out_dir), seed, slot=self.slot)

    def run(self, cfg: RLConfig, spec: RunSpec, policy_dir: str, tokenizer_dir: str, train_rows: dict,
            eval_rows: dict, out_dir: str, seed: int, stop_after: int | None = None) -> dict:
        """Run (or resume) a run to its end (or ``stop_after`` steps); returns its summary."""
        self.start(cfg, spec, policy_dir, tokenizer_dir, train_rows, eval_rows, out_dir, seed)
        return run_rl(self.run_, tensorboard=True, stop_after=stop_after)

    def steps(self, n: int) -> list[dict]:
        """``n`` bare ``rl_step``s of the started run (the benchmark), their metrics."""
        torch.set_num_threads(self.threads)
        return [rl_step(self.run_) for _ in range(n)]

    def status(self) -> tuple[int, dict]:
        """(steps done, the last step's kl / proxy / gold means) of the current run."""
        r = self.run_
        if r is None:
            return 0, {}
        last = r.history[-1] if r.history else {}
        return r.step, {k: last[k] for k in ("kl", "proxy/objective", "gold/mean") if k in last}


class ColocatedSlot:
    """A ``TrialWorker`` in its own placement group of one bundle (all the roles' CPUs and GPUs)."""

    def __init__(self, resources: TrialResources, policy_dir: str, tokenizer_dir: str, members: list[dict],
                 seed: int, gold: bool = True, name: str = "rl"):
        import ray
        from ray.util.placement_group import placement_group
        from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

        self.pg = placement_group(resources.bundles(), strategy="STRICT_PACK", name=f"{name}-{os.urandom(4).hex()}")
        ray.get(self.pg.ready())
        b = resources.bundles()[0]
        self.worker = ray.remote(TrialWorker).options(
            num_cpus=b["CPU"], num_gpus=b.get("GPU", 0), max_concurrency=2,
            scheduling_strategy=PlacementGroupSchedulingStrategy(self.pg, placement_group_bundle_index=0),
        ).remote(resources, policy_dir, tokenizer_dir, list(members), seed, gold)

    def execute(self, cfg: RLConfig, spec: RunSpec, policy_dir: str, tokenizer_dir: str, train_rows: dict,
                eval_rows: dict, out_dir: Path, seed: int, progress: bool = False,
                stop_after: int | None = None) -> dict:
        import ray
        from tqdm import tqdm

        ref = self.worker.run.remote(cfg, spec, policy_dir, tokenizer_dir, train_rows, eval_rows, str(out_dir),
                                     seed, stop_after)
        with tqdm(total=cfg.steps, desc=f"rl {spec.name}", disable=not progress, leave=False) as bar:
            while not ray.wait([ref], timeout=1.0)[0]:
                step, last = ray.get(self.worker.status.remote())
                bar.n = step
                bar.set_postfix({k.split("/")[0]: f"{v:.3f}" for k, v in last.items()}, refresh=True)
        return ray.get(ref)

    def shutdown(self) -> None:
        import ray
        from ray.util.placement_group import remove_placement_group

        ray.kill(self.worker)
        if self.pg is not None:
            remove_placement_group(self.pg)
            self.pg = None
