"""Every role of an RL run in one process (``cluster.rl.colocate``): ``TrialWorker`` hosts a local
``Slot`` and runs the loop there; ``ColocatedSlot`` puts one in a placement group of one bundle.
``make_slot`` picks the placement the config asks for, ``execute`` runs an ``RLRun`` on either."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from orchestrator.config.schema import RLConfig, TrialResources
from orchestrator.run.rl_loop import RLRun, RunSpec, rl_step, run_rl
from orchestrator.run.slots import Slot


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
        from orchestrator.nn.models import set_threads

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
