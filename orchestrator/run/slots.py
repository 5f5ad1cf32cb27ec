"""Where one RL run's roles live (``cluster.rl``): ``Slot`` -- the learner, generator, proxy and
gold as separate actors in one placement group (or in this process, ``local=True``).
``orchestrator.run.colocated`` puts every role in one actor instead."""

from __future__ import annotations

import os

from actors.policy_learner import PolicyLearner
from actors.reward_ensemble import RewardEnsemble
from actors.rollout_generator import RolloutGenerator
from orchestrator.config.schema import TrialResources
from orchestrator.data.checkpoint import stream
from orchestrator.run.actor_group import ActorGroup, fetch


class Slot:
    """The actors one RL run needs -- learner, generator replicas, proxy and gold ensembles -- in one
    placement group (all bundles or none, so concurrent runs never deadlock on half-placed actors).
    A slot outlives a run: ``reset`` readies it for the next one in a fraction of a second, where
    starting four fresh actor processes costs ~15 s of CPU on a small machine.
    ``local=True`` builds the roles in this process instead (the benchmark's overhead baseline)."""

    def __init__(self, resources: TrialResources, policy_dir: str, tokenizer_dir: str, members: list[dict],
                 seed: int, gold: bool | list = True, local: bool = False, name: str = "rl", pg: tuple | None = None,
                 chat_template: str = "auto", reward_app: str = ""):
        """pg: ``(placement_group, first bundle index)`` to place the role actors into an existing
        group (a Tune trial's own) instead of creating one. ``gold``: False (no gold ensemble), True
        (the task's oracle) or the gold ensemble's member dicts (gold RMs). ``reward_app``: the
        reward service's Serve application that scores for the proxy and gold roles
        (``cluster.rl.reward_service: serve``; ``service_client.ServiceScorer``)."""
        self.local, self.pg = local, None
        placement: dict = {}
        if not local:
            import ray
            from ray.util.placement_group import placement_group

            if pg is None:
                group, o = placement_group(resources.role_bundles(), strategy=resources.strategy,
                                           name=f"{name}-{os.urandom(4).hex()}"), 0
                ray.get(group.ready())
                self.pg = group  # ours to remove
            else:
                group, o = pg
            g, n = resources.generator.replicas, resources.learner.replicas
            placement = {"learner": (group, list(range(o, o + n))),
                         "generator": (group, list(range(o + n, o + n + g))),
                         "proxy": (group, [o + n + g]), "gold": (group, [o + n + g + 1])}
        self.policy_dir = policy_dir
        self.learner = ActorGroup(PolicyLearner, resources.learner, tokenizer_dir, {"path": policy_dir},
                                  stream(seed, "rl/learner"), placement=placement.get("learner"), local=local,
                                  chat_template=chat_template)
        if len(self.learner) > 1 and not local:  # a learner group: one torch.distributed group over the replicas
            address = fetch(self.learner.actors[0].group_address.remote())
            fetch([a.join_group.remote(r, len(self.learner), address) for r, a in enumerate(self.learner.actors)])
        # calls every replica of a DeepSpeed group must make together (collectives inside): gathering the
        # ZeRO shards for a checkpoint; at stage 3 also the weights and any forward pass
        lr = resources.learner
        self.collective: set[str] = set()
        if len(self.learner) > 1 and getattr(lr, "backend", "torch") == "deepspeed":
            self.collective = {"save_checkpoint"} | ({"weights", "evaluate", "push_weights"} if lr.zero_stage == 3
                                                      else set())
        # generators hold nothing a restart loses (the run re-pushes the weights): Ray restarts them
        self.gen = ActorGroup(RolloutGenerator, resources.generator, policy_dir,
                              placement=placement.get("generator"), local=local,
                              options={"max_restarts": resources.generator_restarts})
        self.generator_restarts = 0 if local else resources.generator_restarts
        self.weight_sync = "object_store" if local else resources.weight_sync
        # NCCL needs one GPU per member (it refuses two ranks on one device): whole GPUs, else gloo
        self.weight_backend = ("nccl" if resources.learner.num_gpus >= 1 and resources.generator.num_gpus >= 1
                               else "gloo")
        if self.weight_sync == "broadcast":
            self.open_weight_group()
        self.proxy = ActorGroup(RewardEnsemble, resources.proxy, "proxy", list(members), tokenizer_dir,
                                placement=placement.get("proxy"), local=local, chat_template=chat_template)
        gold_members = list(gold) if isinstance(gold, list) else [{"name": "oracle", "kind": "oracle"}]
        self.gold = (ActorGroup(RewardEnsemble, resources.gold, "gold", gold_members,
                                placement=placement.get("gold"), local=local, chat_template=chat_template)
                     if gold else None)
        if reward_app:  # scoring through the service; the actors keep the rest (the monitor's features)
            from orchestrator.run.service_client import ServiceScorer

            self.proxy = ServiceScorer(reward_app, self.proxy, list(members), self.local)
            if self.gold is not None:
                self.gold = ServiceScorer(reward_app, self.gold, gold_members, self.local)
        self.members = list(members)

    def open_weight_group(self) -> None:
        """(Re)form the broadcast group of the learner (rank 0) and the generators -- at the start,
        and after a generator restart (the restarted process left the old group)."""
        learner = self.learner.actors[0]
        address = fetch(learner.weight_group_address.remote())
        world = 1 + len(self.gen)
        fetch([a.open_weight_group.remote(address, 0, world, self.weight_backend) for a in self.learner.actors] +
              [g.open_weight_group.remote(address, 1 + i, world, self.weight_backend)
               for i, g in enumerate(self.gen.actors)])

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
