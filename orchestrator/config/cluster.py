"""Where the roles run (the ``cluster`` section of the config): resources and replicas per role,
one RL run's placement group, and the checks against the cluster a job runs on. Placement lives
here, never in algorithm config (``orchestrator.config.schema`` re-exports these classes)."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.config.loading import _check
from orchestrator.config.serve import ServeConfig


@dataclass(frozen=True)
class RoleResources:
    """Resources and replicas of one actor role."""

    replicas: int = 1
    """Actors of this role."""
    num_cpus: float = 1.0
    """CPUs per actor (fractions allowed); torch threads = max(1, floor(num_cpus))."""
    num_gpus: float = 0.0
    """GPUs per actor."""
    resources: dict[str, float] = field(default_factory=dict)
    """Custom Ray resources per actor, e.g. ``{rollout_node: 0.01}``: start nodes with
    ``ray start --resources='{"rollout_node": 1}'`` (or the autoscaler's node types) and the role
    only lands on those nodes. Placement-group bundles carry them too."""
    batch_tokens: int = 0
    """The most tokens (rows x padded length) one forward pass of this role holds, so its memory is
    bounded by length rather than by a row count: scoring splits larger batches; training (SFT,
    Bradley-Terry, RL updates) accumulates gradients over pieces of the same step (the same
    objective; float rounding may differ in the last bits). 0 = the recipes' row counts (scoring
    1024 rows, RL updates 32). README "Your own models" sizes it per role."""

    dtype: str = "float32"
    """Compute precision of the role: ``float32``, or ``bfloat16`` -- the learner and reward ensembles
    keep fp32 master weights and run their forward passes under bf16 autocast; the generators hold
    bf16 copies of the policy and the reference (half the memory). Changes numbers (rounding)."""

    def __post_init__(self):
        _check(self.replicas >= 1, "replicas", f"{self.replicas} must be >= 1")
        _check(self.dtype in ("float32", "bfloat16"), "dtype", f"{self.dtype!r} must be float32 or bfloat16")
        _check(self.batch_tokens >= 0, "batch_tokens", f"{self.batch_tokens} must be >= 0 (0 = row counts)")
        _check(self.num_cpus > 0, "num_cpus", f"{self.num_cpus} must be > 0")
        _check(self.num_gpus >= 0, "num_gpus", f"{self.num_gpus} must be >= 0")
        for k, v in self.resources.items():
            _check(k not in ("CPU", "GPU", "memory", "object_store_memory"), f"resources.{k}",
                   "CPUs and GPUs are num_cpus / num_gpus; resources holds custom resources only")
            _check(v > 0, f"resources.{k}", f"{v} must be > 0")

    def actor_options(self) -> dict:
        """``ray.remote(...).options`` of one actor of this role."""
        opts: dict = {"num_cpus": self.num_cpus, "num_gpus": self.num_gpus}
        if self.resources:
            opts["resources"] = dict(self.resources)
        return opts

    def bundle(self) -> dict:
        """The placement-group bundle of one actor of this role."""
        b = {"CPU": self.num_cpus, **self.resources}
        if self.num_gpus:
            b["GPU"] = self.num_gpus
        return b


@dataclass(frozen=True)
class LearnerResources(RoleResources):
    """Resources of a learner role, and how it trains: plain torch or a DeepSpeed ZeRO engine."""

    backend: str = "torch"
    """``torch`` (AdamW on whole parameters; a learner group all-reduces one flat gradient buffer)
    or ``deepspeed`` (a ZeRO engine over the policy and PPO's value head, the same torch AdamW;
    stages 0-2 give the torch learner's losses to float rounding). Needs the ``deepspeed`` extra."""
    zero_stage: int = 0
    """ZeRO stage with ``backend: deepspeed``: 0 (data-parallel), 1 (optimizer states sharded over
    the group's replicas), 2 (+ gradients), 3 (+ parameters: gathered per layer on the fly)."""
    offload: str = "none"
    """``optimizer``: ZeRO-Offload -- the fp32 master weights and Adam moments live in host memory
    and the optimizer steps on the CPU (stage >= 1); ``none``: on the role's device."""

    def __post_init__(self):
        super().__post_init__()
        _check(self.backend in ("torch", "deepspeed"), "backend", f"{self.backend!r} must be torch or deepspeed")
        _check(self.zero_stage in (0, 1, 2, 3), "zero_stage", f"{self.zero_stage} must be 0, 1, 2 or 3")
        _check(self.offload in ("none", "optimizer"), "offload", f"{self.offload!r} must be none or optimizer")
        _check(self.backend == "deepspeed" or (self.zero_stage == 0 and self.offload == "none"), "backend",
               "zero_stage and offload need backend: deepspeed")
        _check(self.offload == "none" or self.zero_stage >= 1, "offload",
               "optimizer offload needs zero_stage >= 1 (ZeRO-Offload partitions the optimizer)")

    def learner_options(self) -> dict:
        """The PolicyLearner's keyword arguments for the backend (none for the torch default)."""
        if self.backend == "torch":
            return {}
        return {"backend": self.backend, "zero_stage": self.zero_stage, "offload": self.offload}


@dataclass(frozen=True)
class TrialResources:
    """Resources of the actors of one RL run (one Tune trial later): all its roles are reserved
    together in one placement group, so concurrent runs never deadlock on half-placed actors."""

    learner: LearnerResources = field(default_factory=lambda: LearnerResources(1, 0.4))
    """The run's PolicyLearner; ``replicas`` N > 1 is a learner group: N actors in one
    torch.distributed group (gloo on CPU, NCCL on GPUs), each with a shard of every minibatch and
    the gradients all-reduced -- the same updates as one learner (to float rounding), N times the
    devices (not with ``colocate``)."""
    generator: RoleResources = field(default_factory=lambda: RoleResources(1, 0.3))
    """The run's RolloutGenerator replicas."""
    proxy: RoleResources = field(default_factory=lambda: RoleResources(1, 0.2))
    """The run's proxy RewardEnsemble (all members in one actor)."""
    gold: RoleResources = field(default_factory=lambda: RoleResources(1, 0.1))
    """The run's gold RewardEnsemble (measurement only)."""
    strategy: str = "PACK"
    """Placement-group strategy: PACK (share nodes), SPREAD, STRICT_PACK or STRICT_SPREAD."""
    max_concurrent: int = 0
    """RL runs at once; 0 = as many as the cluster's CPUs hold."""
    colocate: bool = False
    """All roles of a run in one process (one actor, one bundle with the sum of the roles'
    resources) instead of one actor per role. Same results bit for bit; on a small CPU machine it
    removes the ~35-50% cost of processes taking turns on a core. Keep False on a GPU cluster
    where each role has its own device."""
    weight_sync: str = "object_store"
    """How the learner's weights reach the generators after each update: ``object_store`` (one
    device-to-host copy into a flat buffer in Ray's object store, read by every generator) or
    ``broadcast`` (a process group of the learner and the generators: NCCL device to device when
    all of them hold GPUs, else gloo; ``orchestrator.nn.broadcast``). The same weights bit for bit.
    Not with ``colocate`` (one process: nothing to send)."""
    reward_service: str = "actor"
    """Where the run's proxy and gold score: ``actor`` (the slot's ensemble actors) or ``serve``
    (the reward service, ``orchestrator.run.rm_server``, deployed by the sweep: scoring scales apart from the
    learner, its replicas from ``cluster.serve.models``). The same scores bit for bit, so the same
    run; the slot's proxy actor stays for the monitor's latent features."""
    generator_restarts: int = 3
    """Times Ray restarts a RolloutGenerator whose process died (killed, OOM, its node lost) within
    a run: the run re-pushes the policy's weights and retries the step, so the results equal an
    undisturbed run. Other roles hold state a restart would lose (optimizer, ensemble members): their
    death fails the run, which Tune retries from its last checkpoint (``sweep.max_failures``)."""

    def __post_init__(self):
        _check(self.reward_service in ("actor", "serve"), "reward_service",
               f"{self.reward_service!r} must be actor or serve")
        _check(self.generator_restarts >= 0, "generator_restarts", f"{self.generator_restarts} must be >= 0")
        _check(self.weight_sync in ("object_store", "broadcast"), "weight_sync",
               f"{self.weight_sync!r} must be object_store or broadcast")
        _check(not (self.colocate and self.weight_sync == "broadcast"), "weight_sync",
               "broadcast needs the roles in separate processes (colocate: false)")
        _check(not self.colocate or self.learner.replicas == 1, "learner.replicas",
               f"{self.learner.replicas}: a learner group needs one process per replica (colocate: false)")
        _check(self.learner.replicas == 1 or self.learner.num_gpus == 0 or self.learner.num_gpus >= 1,
               "learner.num_gpus", f"{self.learner.num_gpus}: a learner group on GPUs needs a whole GPU per "
               "replica (NCCL refuses two ranks on one device)")
        _check(self.proxy.replicas == 1 and self.gold.replicas == 1, "proxy.replicas",
               "proxy and gold ensembles have one actor per run")
        _check(self.strategy in ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"), "strategy",
               f"{self.strategy!r} must be PACK, SPREAD, STRICT_PACK or STRICT_SPREAD")
        _check(self.max_concurrent >= 0, "max_concurrent", "must be >= 0 (0 = as many as fit)")

    def role_bundles(self) -> list[dict]:
        """One bundle per actor: learner, generator replicas, proxy, gold (``slots.Slot``'s layout,
        whatever ``colocate`` says)."""
        return [role.bundle() for role in (self.learner, self.generator, self.proxy, self.gold)
                for _ in range(role.replicas)]

    def bundles(self) -> list[dict]:
        """One bundle per actor (``role_bundles``), or their sum when colocated."""
        out = self.role_bundles()
        if self.colocate:
            total: dict = {}
            for b in out:
                for k, v in b.items():
                    total[k] = round(total.get(k, 0.0) + v, 6)
            out = [total]
        return out

    @property
    def num_cpus(self) -> float:
        return round(sum(b["CPU"] for b in self.bundles()), 6)


@dataclass(frozen=True)
class ClusterConfig:
    """Where the roles run. Placement lives here, never in algorithm config."""

    address: str = ""
    """Ray address to join; empty = start a local Ray."""
    num_cpus: int = 0
    """CPUs of a local Ray; 0 = all of this machine's."""
    dashboard: bool = False
    """Start Ray's dashboard with a local Ray."""
    dashboard_host: str = "127.0.0.1"
    """Address the dashboard binds to."""
    learner: LearnerResources = field(default_factory=lambda: LearnerResources(1, 2.0))
    """The PolicyLearner of the SFT stage (``backend`` as ``rl.learner``'s)."""
    generator: RoleResources = field(default_factory=lambda: RoleResources(2, 1.0))
    """RolloutGenerator replicas."""
    proxy: RoleResources = field(default_factory=lambda: RoleResources(1, 1.0))
    """Each proxy RewardEnsemble (one per proxy size); ``replicas`` is ignored."""
    gold: RoleResources = field(default_factory=lambda: RoleResources(1, 1.0))
    """The gold RewardEnsemble."""
    labeler: RoleResources = field(default_factory=lambda: RoleResources(1, 2.0))
    """The AILabeler (RLAIF judge) replicas, when ``label.source: ai``."""
    rl: TrialResources = field(default_factory=TrialResources)
    """The actors of one RL run (its own placement group)."""
    serve: ServeConfig = field(default_factory=ServeConfig)
    """The reward service (``python -m jobs.serve``): HTTP address, batching, load shedding,
    replicas per model."""

    def __post_init__(self):
        _check(self.num_cpus >= 0, "num_cpus", "must be >= 0 (0 = all)")


def validate_resources(cfg, available: dict[str, float]) -> None:
    """Cluster-dependent checks of a ``FrontierConfig``: every role must fit on the cluster it will
    run on (CPUs, GPUs and custom resources per actor; one RL run's placement group as a whole)."""
    cpus, gpus = available.get("CPU", 0.0), available.get("GPU", 0.0)

    def fits(key: str, r: RoleResources) -> None:
        _check(r.num_cpus <= cpus, f"{key}.num_cpus", f"{r.num_cpus} CPUs per actor, but the cluster has {cpus:g}")
        _check(r.num_gpus <= gpus, f"{key}.num_gpus", f"{r.num_gpus} GPUs per actor, but the cluster has {gpus:g}")
        for k, v in r.resources.items():
            _check(v <= available.get(k, 0.0), f"{key}.resources.{k}",
                   f"{v:g} per actor, but the cluster has {available.get(k, 0.0):g}")

    for name in ("learner", "generator", "proxy", "gold") + (("labeler",) if cfg.label.source == "ai" else ()):
        fits(f"cluster.{name}", getattr(cfg.cluster, name))
    if cfg.rl.enabled:
        t = cfg.cluster.rl
        _check(t.num_cpus <= cpus, "cluster.rl", f"one RL run needs {t.num_cpus:g} CPUs, the cluster has {cpus:g}")
        need_gpu = sum(b.get("GPU", 0) for b in t.bundles())
        _check(need_gpu <= gpus, "cluster.rl", f"one RL run needs {need_gpu:g} GPUs, the cluster has {gpus:g}")
        for role in ("learner", "generator", "proxy", "gold"):
            fits(f"cluster.rl.{role}", getattr(t, role))
