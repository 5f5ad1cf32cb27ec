"""The learner's DeepSpeed backend (issue 18): ZeRO stages 0-3 on CPU (DeepSpeed's CPU accelerator,
gloo, the torch AdamW) give the torch learner's losses and weights; a ZeRO-3 group of two with
optimizer offload keeps the checkpoint contract (safetensors + JSON, the torch learner's layout,
loadable by either backend); SFT through a ZeRO-3 engine gives the torch SFT loss."""

import json

import pytest
import torch
from safetensors.torch import load_file

from actors.policy_learner import PolicyLearner
from actors.rollout_generator import RolloutGenerator
from orchestrator.config.schema import (
    ConfigError,
    FrontierConfig,
    LearnerResources,
    build,
)
from orchestrator.data.tasks import synthetic as T
from orchestrator.run.actor_group import ActorGroup

HP = {"epochs": 2, "minibatches": 2, "clip": 0.2, "vf_coef": 0.1, "value_clip": 0.2, "max_grad_norm": 1.0,
      "temperature": 1.0, "chunk_rows": 4}  # 16-row minibatches in 4 pieces: accumulation is exercised



@pytest.fixture(scope="module")
def batch(policy):
    return RolloutGenerator(policy).generate([r["prompt"] for r in T.make_prompts(8, 1)], 4, 7, 10, with_ref=True)


class Driver:
    """PPO updates of one fixed batch on a learner: in this process, or on every actor of a group."""

    def __init__(self, batch, learner=None, group: ActorGroup | None = None):
        self.batch, self.learner, self.group = batch, learner, group
        adv = torch.randn(len(batch), generator=torch.Generator().manual_seed(0))
        self.adv = adv[:, None].expand_as(batch.response_mask).contiguous() * batch.response_mask

    def submit(self, method, *args):
        if self.group is None:
            return getattr(self.learner, method)(*args)
        return [getattr(a, method).remote(*args) for a in self.group.actors]

    def __call__(self, method, *args):
        import ray

        out = self.submit(method, *args)
        return out if self.group is None else ray.get(out)[0]

    def steps(self, start: int, stop: int) -> list[dict]:
        out = []
        for k in range(start, stop):
            old = self("evaluate", self.batch)
            out.append(self("update_ppo", self.batch, old, self.adv, self.adv, HP, k))
        return out


def _group(policy, replicas: int, stage: int, offload: str = "none") -> ActorGroup:
    import ray

    g = ActorGroup(PolicyLearner, LearnerResources(replicas, 0.4, backend="deepspeed", zero_stage=stage,
                                                   offload=offload), "", {"path": policy}, 3)
    if replicas > 1:
        address = ray.get(g.actors[0].group_address.remote())
        ray.get([a.join_group.remote(r, replicas, address) for r, a in enumerate(g.actors)])
    return g


def _close(a: list[dict], b: list[dict], tol: float) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        assert all(abs(x[k] - y[k]) <= tol * max(1.0, abs(y[k])) for k in x), (x, y)


@pytest.mark.slow
def test_zero_stages_give_the_torch_learners_losses(ray_session, policy, batch, tmp_path):
    """5 PPO updates (policy and value head in the engine, 4 accumulated pieces per minibatch): ZeRO
    stages 0, 1, 2 and 3 report the torch learner's losses within 1e-4 and end on its weights
    within 1e-5 (stages 0-2 to the last bit on this model). Then each engine, fresh (the slot's
    next run), resumes the torch learner's step-2 checkpoint and ends on the same weights; and SFT
    through the ZeRO-3 engine gives the torch SFT losses within 1e-4, its policy saved whole."""
    import ray

    torch_run = Driver(batch, PolicyLearner("", {"path": policy}, seed=3))
    torch_run("init_rl", 1e-3, True, 5, 1.0)
    ref = torch_run.steps(0, 2)
    torch_run("save_checkpoint", str(tmp_path / "torch"))
    ref += torch_run.steps(2, 5)
    ref_w = torch_run("weights")
    start = PolicyLearner("", {"path": policy}, seed=3).weights()
    assert abs(ref_w - start).max() > 1e-3  # the updates moved the weights: the comparison is not vacuous

    groups = {s: _group(policy, 1, s) for s in (0, 1, 2, 3)}
    try:
        runs = {s: Driver(batch, group=g) for s, g in groups.items()}
        ray.get([r for d in runs.values() for r in d.submit("init_rl", 1e-3, True, 5, 1.0)])
        stats: dict[int, list] = {s: [] for s in runs}
        for k in range(5):  # the four engines step side by side
            olds = {s: d.submit("evaluate", batch) for s, d in runs.items()}
            ups = {s: d.submit("update_ppo", batch, olds[s][0], d.adv, d.adv, HP, k) for s, d in runs.items()}
            for s, refs in ups.items():
                stats[s].append(ray.get(refs)[0])
        weights = {s: d("weights") for s, d in runs.items()}
        resumed = {}
        for s, d in runs.items():  # a fresh engine (reset, init) takes the torch checkpoint's moments
            d("reset", policy)
            d("init_rl", 1e-3, True, 5, 1.0)
            assert d("load_checkpoint", str(tmp_path / "torch")) == 2
            d.steps(2, 5)
            resumed[s] = d("weights")
        # SFT (AdamW, the cosine schedule, clipping) through a ZeRO-3 engine, its policy saved from the shards
        pairs = [(r["prompt"], r["prompt"]) for r in T.make_prompts(24, 2)]
        runs[3]("reset", policy)
        sft = runs[3]("sft", pairs, 6, 8, 1e-3)
        sft_w = runs[3]("weights")
        runs[3]("save", str(tmp_path / "sft-policy"))
    finally:
        for g in groups.values():
            g.shutdown()
    for s in runs:
        _close(stats[s], ref, 1e-4)
        assert abs(weights[s] - ref_w).max() < 1e-5, (s, abs(weights[s] - ref_w).max())
    assert all(abs(weights[s] - ref_w).max() == 0 for s in (0, 1, 2))
    assert all(abs(resumed[s] - ref_w).max() < 1e-5 for s in runs), {s: abs(w - ref_w).max() for s, w in resumed.items()}
    sft_ref = PolicyLearner("", {"path": policy}, seed=3).sft(pairs, 6, 8, 1e-3)
    assert abs(sft["loss_first"] - sft_ref["loss_first"]) < 1e-4 and abs(sft["loss_last"] - sft_ref["loss_last"]) < 1e-4
    assert sft["params"] == sft_ref["params"]
    saved = PolicyLearner("", {"path": str(tmp_path / "sft-policy")}, seed=3).weights()
    assert abs(saved - sft_w).max() == 0 and abs(saved - start).max() > 1e-4


@pytest.mark.slow
def test_zero3_group_with_offload_keeps_the_checkpoint_contract(ray_session, policy, batch, tmp_path):
    """A ZeRO-3 group of two replicas with the optimizer offloaded: after 2 updates its checkpoint
    (gathered by both, written by rank 0) is safetensors + JSON in the torch learner's layout, with
    the torch learner's weights and Adam moments; a torch learner resumes from it, and the group
    resumes from the torch learner's checkpoint -- both end on the uninterrupted run's weights."""
    torch_run = Driver(batch, PolicyLearner("", {"path": policy}, seed=3))
    torch_run("init_rl", 1e-3, True, 5, 1.0)
    torch_run.steps(0, 2)
    torch_run("save_checkpoint", str(tmp_path / "torch"))
    ref = torch_run.steps(2, 5)
    ref_w = torch_run("weights")

    g = _group(policy, 2, 3, offload="optimizer")
    try:
        group = Driver(batch, group=g)
        group("init_rl", 1e-3, True, 5, 1.0)
        group.steps(0, 2)
        files = group("save_checkpoint", str(tmp_path / "zero3"))
        group("load_checkpoint", str(tmp_path / "torch"))  # and resume from the torch learner's
        resumed_group = group.steps(2, 5)
        group_w = group("weights")
    finally:
        g.shutdown()
    written = sorted(p.name for p in (tmp_path / "zero3").iterdir())
    assert written == sorted(files) and all(f.endswith((".safetensors", ".json")) for f in written)
    for name in ("learner.safetensors", "optimizer.safetensors"):
        a, b = load_file(str(tmp_path / "zero3" / name)), load_file(str(tmp_path / "torch" / name))
        assert a.keys() == b.keys()
        for k in a:
            if k != "rng.torch":
                assert a[k].shape == b[k].shape and torch.allclose(a[k].float(), b[k].float(), atol=1e-5, rtol=1e-4), k
    assert json.loads((tmp_path / "zero3" / "optimizer.json").read_text()) == \
        json.loads((tmp_path / "torch" / "optimizer.json").read_text())

    back = Driver(batch, PolicyLearner("", {"path": policy}, seed=3))  # the torch learner from ZeRO-3's
    back("init_rl", 1e-3, True, 5, 1.0)
    assert back("load_checkpoint", str(tmp_path / "zero3")) == 2
    resumed_torch = back.steps(2, 5)
    _close(resumed_torch, ref, 1e-4)
    _close(resumed_group, ref, 1e-4)
    assert abs(back("weights") - ref_w).max() < 1e-5 and abs(group_w - ref_w).max() < 1e-5


def test_backend_options_are_checked_by_key():
    """zero_stage / offload without DeepSpeed, offload at stage 0 and unknown values name their key."""
    for over, key in (({"zero_stage": 2}, "backend"), ({"backend": "deepspeed", "offload": "optimizer"}, "offload"),
                      ({"backend": "fsdp"}, "backend"), ({"backend": "deepspeed", "zero_stage": 4}, "zero_stage"),
                      ({"offload": "nvme", "backend": "deepspeed", "zero_stage": 3}, "offload")):
        with pytest.raises(ConfigError, match=f"cluster.rl.learner.{key}"):
            build(FrontierConfig, {"cluster": {"rl": {"learner": over}}})
    cfg = build(FrontierConfig, {"cluster": {"rl": {"learner": {"backend": "deepspeed", "zero_stage": 3}},
                                             "learner": {"backend": "deepspeed", "zero_stage": 2}}})
    assert cfg.cluster.rl.learner.learner_options() == {"backend": "deepspeed", "zero_stage": 3, "offload": "none"}
    assert cfg.cluster.learner.zero_stage == 2 and FrontierConfig().cluster.rl.learner.learner_options() == {}
