"""Creating actors from config: replicas and resources per role, ``ray.get`` only at phase ends.

``local=True`` builds the same objects in this process and runs calls eagerly -- the baseline the
benchmark measures actor overhead against, and a debugging aid. ``fetch`` resolves either kind.
"""

from __future__ import annotations

import itertools

import ray

from orchestrator.config.schema import RoleResources


class Ready:
    """The already-computed result of a local call (stands where an ``ObjectRef`` would)."""

    __slots__ = ("value",)

    def __init__(self, value):
        self.value = value


def fetch(x):
    """``ray.get`` for object refs (and lists of them), identity for local results."""
    if isinstance(x, Ready):
        return x.value
    if isinstance(x, list):
        if x and all(isinstance(v, Ready) for v in x):
            return [v.value for v in x]
        return ray.get(x)
    return ray.get(x)


def put(x, local: bool):
    return Ready(x) if local else ray.put(x)


def with_progress(cls):
    """``cls`` whose ``progress()`` runs in a concurrency group of its own: it answers polls while a
    long call (SFT, proxy training) runs, and every other call still runs one at a time, in the
    order it was made, as in any actor's default group (a plain ``max_concurrency=2`` would let a
    ``save`` queued after ``train`` run beside it)."""

    class WithProgress(cls):
        @ray.method(concurrency_group="progress")
        def progress(self) -> dict:
            return cls.progress(self)

    WithProgress.__name__ = WithProgress.__qualname__ = cls.__name__
    return WithProgress


class ActorGroup:
    """``replicas`` actors of one role, each with the role's CPUs / GPUs and matching torch threads.

    ``cls`` is a plain class; it is wrapped by ``ray.remote`` here and receives ``num_cpus`` so it
    can set its torch threads to its share. ``placement``: ``(placement_group, [bundle index per
    replica])`` schedules the replicas into a placement group (one per RL run).
    """

    def __init__(self, cls, resources: RoleResources, *args, name: str = "", replicas: int | None = None,
                 options: dict | None = None, placement: tuple | None = None, local: bool = False,
                 progress: bool = False, **kwargs):
        """progress: the actors answer ``progress()`` while another call runs (``with_progress``)."""
        n = resources.replicas if replicas is None else replicas
        import inspect

        takes = inspect.signature(cls.__init__).parameters
        if resources.batch_tokens and "batch_tokens" in takes:  # the role's token budget per forward pass
            kwargs["batch_tokens"] = resources.batch_tokens
        if resources.num_gpus and "device" in takes and "device" not in kwargs:  # the role's GPU computes
            kwargs["device"] = "cuda"
        if resources.dtype != "float32" and "dtype" in takes and "dtype" not in kwargs:  # the role's precision
            kwargs["dtype"] = resources.dtype
        if hasattr(resources, "learner_options") and "backend" in takes:  # a learner's training backend
            kwargs.update(resources.learner_options())
        self.name = name or cls.__name__
        self.local = local
        if local:
            self.actors = [cls(*args, num_cpus=resources.num_cpus, **kwargs) for _ in range(n)]
        else:
            self.actors = []
            for i in range(n):
                opts = {**resources.actor_options(), **(options or {})}
                if placement is not None:
                    from ray.util.scheduling_strategies import (
                        PlacementGroupSchedulingStrategy,
                    )

                    pg, indices = placement
                    opts["scheduling_strategy"] = PlacementGroupSchedulingStrategy(
                        pg, placement_group_bundle_index=indices[i])
                remote = (ray.remote(concurrency_groups={"progress": 1})(with_progress(cls)) if progress
                          else ray.remote(cls))
                self.actors.append(remote.options(**opts).remote(*args, num_cpus=resources.num_cpus,
                                                                             **kwargs))
        self._rr = itertools.cycle(range(n))

    def __len__(self) -> int:
        return len(self.actors)

    def _call(self, actor, method: str, args, kwargs):
        if self.local:  # results passed on as arguments resolve, as Ray resolves top-level refs
            args = [a.value if isinstance(a, Ready) else a for a in args]
            kwargs = {k: v.value if isinstance(v, Ready) else v for k, v in kwargs.items()}
            return Ready(getattr(actor, method)(*args, **kwargs))
        return getattr(actor, method).remote(*args, **kwargs)

    def all(self, method: str, *args, **kwargs) -> list:
        """Call ``method`` on every replica; returns object refs."""
        return [self._call(a, method, args, kwargs) for a in self.actors]

    def one(self, method: str, *args, **kwargs):
        """Call ``method`` on the next replica in round-robin order; returns an object ref."""
        return self._call(self.actors[next(self._rr)], method, args, kwargs)

    def shutdown(self) -> None:
        if not self.local:
            for a in self.actors:
                ray.kill(a)
        self.actors = []
