"""The CUDA paths of the roles (issue 18), marked ``gpu``: skipped without a CUDA device and in CI
(``-m "not gpu"``); run on a GPU machine with ``python -m pytest -m gpu``. Tiny models of real
architectures from ``tiny:`` references, no Ray (the GPU machine lent to sessions has none)."""

import random

import pytest
import torch

from orchestrator.nn import tiny

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.mktemp("xdg")))
    yield tiny.resolve
    mp.undo()


@pytest.mark.parametrize("arch", ["gpt2", "llama"])
def test_generator_on_cuda_samples_like_the_cpu_model(models, arch):
    """On CUDA (draws from a device generator seeded by the CPU stream) the same seed gives the same
    tokens twice; the sampler's log-probs of what it sampled equal the CPU model's log-probs of
    those responses within 1e-3 (TF32 / kernel differences), and the reference's equal the policy's."""
    from actors.rollout_generator import RolloutGenerator
    from orchestrator.data.tasks import synthetic as T
    from orchestrator.nn.sampling import response_logprobs

    path = models(f"tiny:{arch}-2x32")
    prompts = [r["prompt"] for r in T.make_prompts(6, 1)]
    cpu = RolloutGenerator(path)
    gpu = RolloutGenerator(path, device="cuda")
    assert next(gpu.policy.parameters()).is_cuda and next(gpu.ref.parameters()).is_cuda
    b = gpu.generate(prompts, 4, 11, 12, with_ref=True, fast=arch == "gpt2")
    again = gpu.generate(prompts, 4, 11, 12, with_ref=True, fast=arch == "gpt2")
    assert torch.equal(b.response_ids, again.response_ids)
    on_cpu = response_logprobs(cpu.policy, b.prompt_ids, b.response_ids, b.response_mask, cpu.codec.pad_id)
    m = b.response_mask.bool()
    assert torch.allclose(b.logprobs[m], on_cpu[m], atol=1e-3)
    assert torch.allclose(b.ref_logprobs[m], b.logprobs[m], atol=1e-3)


def test_learner_and_ensemble_on_cuda_match_the_cpu(models):
    """SFT steps on CUDA give the CPU's weights within 1e-4; a reward ensemble on CUDA scores like
    the CPU within 1e-4; checkpoints and weights come back to host memory."""
    from actors.policy_learner import PolicyLearner
    from actors.reward_ensemble import RewardEnsemble
    from orchestrator.data.tasks import synthetic as T

    rng = random.Random(0)
    pairs = [(r["prompt"], T.make_demonstration(r["family"], r["meta"], rng)) for r in T.make_prompts(32, 2)]
    w = {}
    for dev in ("cpu", "cuda"):
        pol = PolicyLearner("", {"path": models("tiny:qwen2-2x32")}, seed=1, device=dev)
        assert next(pol.model.parameters()).device.type == dev
        pol.sft(pairs, steps=3, sequences_per_step=8, lr=1e-3)
        w[dev] = pol.weights()
    assert abs(w["cpu"] - w["cuda"]).max() < 1e-4
    rows = {"prompt": [p for p, _ in pairs], "response": [r for _, r in pairs]}
    member = [{"name": "g", "kind": "hf", "path": models("tiny:llama-2x64-rm"), "head": "trained"}]
    s_cpu = RewardEnsemble("gold", member).score(rows).values
    s_gpu = RewardEnsemble("gold", member, device="cuda").score(rows).values
    assert abs(s_cpu - s_gpu).max() < 1e-4


def test_bf16_generation_matches_fp32_within_tolerance(models):
    """A bf16 generator's log-probs of fp32-sampled responses stay within 0.02 nats per token on
    average (0.15 at most) of the fp32 generator's, on CUDA: the stated tolerance of ``dtype:
    bfloat16`` for generators (measured on CPU for tiny llama: 1.7e-3)."""
    from actors.rollout_generator import RolloutGenerator
    from orchestrator.data.tasks import synthetic as T
    from orchestrator.nn.sampling import response_logprobs

    path = models("tiny:llama-2x64")
    prompts = [r["prompt"] for r in T.make_prompts(8, 1)]
    fp32 = RolloutGenerator(path, device="cuda")
    b = fp32.generate(prompts, 4, 5, 16)
    bf16 = RolloutGenerator(path, device="cuda", dtype="bfloat16")
    assert next(bf16.policy.parameters()).dtype == torch.bfloat16
    lp = response_logprobs(bf16.policy, b.prompt_ids, b.response_ids, b.response_mask, bf16.codec.pad_id).float().cpu()
    m = b.response_mask.bool()
    diff = (lp[m] - b.logprobs[m]).abs()
    assert diff.mean() < 0.02 and diff.max() < 0.15, (float(diff.mean()), float(diff.max()))


@pytest.mark.parametrize("stage,dtype", [(0, "float32"), (2, "float32"), (3, "float32"), (2, "bfloat16")])
def test_deepspeed_learner_on_one_gpu_gives_the_torch_losses(models, stage, dtype):
    """The DeepSpeed engine on one GPU (NCCL group of one): 3 PPO updates give the torch learner's
    losses on the same GPU within 1e-4 and weights within 1e-5 -- in bf16 too (autocast inside the
    engine's module: DeepSpeed turns an outer CUDA autocast off, which would run fp32 silently)."""
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:  # importorskip would import it on the CPU accelerator
        pytest.skip("deepspeed is not installed")
    from actors.policy_learner import PolicyLearner
    from actors.rollout_generator import RolloutGenerator
    from orchestrator.data.tasks import synthetic as T

    path = models("tiny:llama-2x32")
    batch = RolloutGenerator(path).generate([r["prompt"] for r in T.make_prompts(8, 1)], 4, 7, 10, with_ref=True)
    adv = torch.randn(len(batch), generator=torch.Generator().manual_seed(0))
    adv = adv[:, None].expand_as(batch.response_mask).contiguous() * batch.response_mask
    hp = {"epochs": 2, "minibatches": 2, "clip": 0.2, "vf_coef": 0.1, "value_clip": 0.2, "max_grad_norm": 1.0,
          "temperature": 1.0, "chunk_rows": 4}
    out = {}
    for backend in ("torch", "deepspeed"):
        pol = PolicyLearner("", {"path": path}, seed=3, device="cuda", backend=backend, dtype=dtype,
                            zero_stage=stage if backend == "deepspeed" else 0)
        pol.init_rl(1e-3, True, 5, 1.0)
        stats = [pol.update_ppo(batch, pol.evaluate(batch), adv, adv, hp, k) for k in range(3)]
        out[backend] = ([s["learner/loss"] for s in stats], pol.weights())
    (lt, wt), (ld, wd) = out["torch"], out["deepspeed"]
    assert max(abs(a - b) for a, b in zip(lt, ld)) < 1e-4 and abs(wt - wd).max() < 1e-5


def _broadcast_member(rank: int, address: str, queue) -> None:
    from orchestrator.nn.broadcast import WeightGroup

    torch.cuda.set_device(rank)
    g = WeightGroup(address, rank, 2, "nccl", timeout_s=60)
    flat = torch.arange(1000, dtype=torch.float32) if rank == 0 else torch.zeros(1000)
    queue.put((rank, g.broadcast(flat).cpu().tolist()[:5], str(g.device)))
    g.close()


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two GPUs")
def test_weight_broadcast_over_nccl_between_two_gpus():
    """``weight_sync: broadcast`` on GPUs: a stateless NCCL group of two processes on two GPUs
    delivers rank 0's buffer to rank 1, device to device."""
    import torch.multiprocessing as mp

    from orchestrator.nn.broadcast import free_address

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    address = free_address()
    procs = [ctx.Process(target=_broadcast_member, args=(r, address, queue)) for r in range(2)]
    for p in procs:
        p.start()
    got = dict((r, (v, d)) for r, v, d in (queue.get(timeout=120) for _ in procs))
    for p in procs:
        p.join(timeout=60)
    assert got[1][0] == [0.0, 1.0, 2.0, 3.0, 4.0] and got[1][1] == "cuda:1"
