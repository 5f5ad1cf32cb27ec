"""Creating actors from config: replicas and resources per role, ``ray.get`` only at phase ends."""

from __future__ import annotations

import itertools

import ray

from orchestrator.config import RoleResources


class ActorGroup:
    """``replicas`` actors of one role, each with the role's CPUs / GPUs and matching torch threads.

    ``cls`` is a plain class (usable in-process in tests); it is wrapped by ``ray.remote`` here and
    receives ``num_cpus`` so it can set its torch threads to its share.
    """

    def __init__(self, cls, resources: RoleResources, *args, name: str = "", replicas: int | None = None,
                 options: dict | None = None, **kwargs):
        n = resources.replicas if replicas is None else replicas
        remote = ray.remote(cls).options(num_cpus=resources.num_cpus, num_gpus=resources.num_gpus,
                                         **(options or {}))
        self.name = name or cls.__name__
        self.actors = [remote.remote(*args, num_cpus=resources.num_cpus, **kwargs) for _ in range(n)]
        self._rr = itertools.cycle(range(n))

    def __len__(self) -> int:
        return len(self.actors)

    def all(self, method: str, *args, **kwargs) -> list:
        """Call ``method`` on every replica; returns object refs."""
        return [getattr(a, method).remote(*args, **kwargs) for a in self.actors]

    def one(self, method: str, *args, **kwargs):
        """Call ``method`` on the next replica in round-robin order; returns an object ref."""
        return getattr(self.actors[next(self._rr)], method).remote(*args, **kwargs)

    def shutdown(self) -> None:
        for a in self.actors:
            ray.kill(a)
        self.actors = []
