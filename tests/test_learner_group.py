"""A learner group (issue 18): N ``PolicyLearner`` replicas in one torch.distributed group (gloo on
CPU), each with a shard of every minibatch and the gradients all-reduced, give the weights of one
learner on the same global batch."""

import pytest
import torch

from actors.policy_learner import PolicyLearner
from actors.rollout_generator import RolloutGenerator
from orchestrator.config.schema import RoleResources
from orchestrator.data.tasks import synthetic as T
from orchestrator.run.actor_group import ActorGroup


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["rloo", "ppo"])
def test_two_replicas_give_the_weights_of_one_learner(ray_session, policy, algorithm, tmp_path):
    """3 updates of the same batch (2 minibatches, 2 epochs) by one learner and by a group of two
    Ray actors: the same weights within 1e-5, the same loss statistics; the group's checkpoint,
    written by its second replica, restores its weights."""
    import ray

    gen = RolloutGenerator(policy)
    batch = gen.generate([r["prompt"] for r in T.make_prompts(8, 1)], 4, 7, 10, with_ref=True)
    adv = torch.randn(len(batch), generator=torch.Generator().manual_seed(0))
    hp = {"epochs": 2, "minibatches": 2, "clip": 0.2, "vf_coef": 0.1, "value_clip": 0.2, "max_grad_norm": 1.0,
          "temperature": 1.0, "chunk_rows": 4}

    def steps(call, init):
        init(1e-3, algorithm == "ppo", 5)
        out = []
        for k in range(3):
            old = call("evaluate", batch)
            if algorithm == "ppo":
                adv_t = adv[:, None].expand_as(batch.response_mask).contiguous() * batch.response_mask
                out.append(call("update_ppo", batch, old, adv_t, adv_t, hp, k))
            else:
                out.append(call("update_pg", batch, old, adv, hp, k))
        return out, call("weights")

    one = PolicyLearner("", {"path": policy}, seed=3)
    ref_stats, ref_w = steps(lambda m, *a: getattr(one, m)(*a), one.init_rl)

    group = ActorGroup(PolicyLearner, RoleResources(2, 0.5), "", {"path": policy}, 3)
    try:
        address = ray.get(group.actors[0].group_address.remote())
        assert ray.get([a.join_group.remote(r, 2, address) for r, a in enumerate(group.actors)]) == [0, 1]

        def call(m, *a):
            return ray.get([getattr(x, m).remote(*a) for x in group.actors])[0]

        stats, w = steps(call, lambda *a: ray.get([x.init_rl.remote(*a) for x in group.actors]))
        w1 = ray.get(group.actors[1].weights.remote())
        # any replica writes the run's checkpoint (the RL loop asks one, round robin): here the second
        files = ray.get(group.actors[1].save_checkpoint.remote(str(tmp_path / "ckpt")))
    finally:
        group.shutdown()
    assert abs(w - ref_w).max() < 1e-5 and abs(w1 - w).max() == 0  # the replicas stay equal
    start = PolicyLearner("", {"path": policy}, seed=3).weights()
    assert abs(ref_w - start).max() > 1e-3  # the updates moved the weights: the comparison is not vacuous
    for a, b in zip(stats, ref_stats):
        assert a.keys() == b.keys()
        assert all(abs(a[k] - b[k]) < 1e-4 * max(1.0, abs(b[k])) for k in a), (a, b)
    assert abs(ref_w - one.weights()).max() == 0 and ref_stats[-1]["learner/grad_norm"] > 0
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted(files)
    back = PolicyLearner("", {"path": policy}, seed=3)
    back.init_rl(1e-3, algorithm == "ppo", 5)
    assert back.load_checkpoint(str(tmp_path / "ckpt")) == 3 and abs(back.weights() - w1).max() == 0
