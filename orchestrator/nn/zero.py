"""The learner's DeepSpeed backend (``cluster.rl.learner.backend: deepspeed``): a ZeRO engine over
the trained modules (the policy and PPO's value head), stages 0-3 and optimizer offload, with the
project's checkpoint contract kept -- every parameter's full fp32 weights and Adam moments gathered
into the same safetensors layout the torch learner writes (a torch checkpoint resumes on DeepSpeed
and back); DeepSpeed's own (pickled) checkpoint format is never written or read.

ZeRO: Rajbhandari et al. 2020, "ZeRO: Memory Optimizations Toward Training Trillion Parameter
Models"; ZeRO-Offload: Ren et al. 2021. OpenRLHF trains its actor and critic the same way
(``DeepspeedStrategy``); verl offers the same split with FSDP.

How the learner drives the engine (``PolicyLearner._epochs``): a minibatch is several weighted
pieces, each its own forward and ``engine.backward(loss * weight * world, scale_wrt_gas=False)``,
the accumulation boundary set by hand on the last piece (the piece count varies with lengths, so a
fixed ``gradient_accumulation_steps`` cannot express it), then one ``engine.step()``. Every forward
goes through the engine (``engine(...)``): ZeRO-3 counts micro-steps there, and without it the
pieces' gradients overwrite each other instead of adding up.
"""

from __future__ import annotations

import contextlib
import os
import socket

import torch


class Trained(torch.nn.Module):
    """What the engine trains: the policy and, for PPO, its value head (one parameter list, in the
    order the torch learner's optimizer holds them: policy, then head). ``forward`` is the policy's,
    under the role's autocast: DeepSpeed's engine turns off a CUDA autocast entered outside it."""

    def __init__(self, policy: torch.nn.Module, value_head: torch.nn.Module | None,
                 device: torch.device = torch.device("cpu"), dtype: str = "float32"):
        super().__init__()
        self.policy = policy
        self.value_head = value_head
        self.device, self.dtype = device, dtype

    def forward(self, **kwargs):
        from orchestrator.nn.device import autocast

        with autocast(self.device, self.dtype):
            return self.policy(**kwargs)


def _import_deepspeed(device: torch.device):
    """deepspeed, with its accelerator matching ``device`` (it is chosen once per process, at import)."""
    want = "cuda" if device.type == "cuda" else "cpu"
    os.environ["DS_ACCELERATOR"] = want  # whatever the environment (a test env sets cpu) says
    os.environ.setdefault("LOCAL_RANK", "0")  # Ray shows each actor its own GPU(s) as cuda:0..
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != want:  # imported earlier in this process for the other device
        raise RuntimeError(f"deepspeed was imported with its {get_accelerator().device_name()} accelerator, "
                           f"this learner computes on {want}")

    if device.type == "cpu":
        # DeepSpeed's CPU accelerator JIT-compiles a shared-memory all-reduce kernel (C++ with OpenMP,
        # ~60 s on 2 cores, needs a compiler) the first time a process starts its comm backend; it only
        # speeds up intra-node collectives, which gloo does as well. Marking it incompatible makes
        # ``deepspeed.comm`` fall back to torch.distributed (gloo) -- the same numbers.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    return deepspeed


def ensure_group(device: torch.device) -> None:
    """A one-process torch.distributed group when the learner is alone (a learner group has formed
    its own in ``join_group``): DeepSpeed needs one even at world size 1."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", init_method=f"tcp://127.0.0.1:{port}",
                            rank=0, world_size=1)


def make_engine(module: torch.nn.Module, optimizer: torch.optim.Optimizer, stage: int, offload: str,
                max_grad_norm: float, device: torch.device, lr_scheduler=None):
    """A DeepSpeed engine over ``module`` with the torch ``optimizer`` (fp32 master weights and
    moments; the learner's ``dtype`` stays autocast around forward passes, as on the torch backend).
    ``offload: optimizer`` keeps the fp32 partitions and Adam moments in host memory (ZeRO-Offload);
    the torch optimizer then steps on the CPU."""
    deepspeed = _import_deepspeed(device)
    ensure_group(device)
    zero: dict = {"stage": stage}
    if offload == "optimizer":
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": device.type == "cuda"}
    config = {
        "train_micro_batch_size_per_gpu": 1,  # the learner cuts its own pieces; the engine never sees batches
        "gradient_accumulation_steps": 1,
        "gradient_clipping": float(max_grad_norm),
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # a torch AdamW: the torch learner's update, exactly
        "zero_force_ds_cpu_optimizer": False,  # offload with the torch optimizer (no compiled CPU Adam)
        "steps_per_print": 2 ** 62,
        "wall_clock_breakdown": False,
    }
    engine, *_ = deepspeed.initialize(model=module, optimizer=optimizer, config=config, lr_scheduler=lr_scheduler)
    return engine


def gathered(engine, params: list, modify: bool = False):
    """Full parameters inside the block (ZeRO-3 partitions them; a no-op below stage 3). With
    ``modify`` the block's writes are partitioned back on exit."""
    if engine is None or engine.zero_optimization_stage() != 3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=0 if modify else None)


def numel(p: torch.nn.Parameter) -> int:
    """A parameter's full size (ZeRO-3 leaves an empty local tensor and records it in ``ds_numel``)."""
    return int(getattr(p, "ds_numel", p.numel()))


def _inner(engine):
    """The torch optimizer the engine steps (ZeRO wraps it; stage 0 holds it directly)."""
    opt = engine.optimizer
    return getattr(opt, "optimizer", opt)


def optimizer_state(engine, params: list, template: list[dict]) -> tuple[dict, list[dict]]:
    """The torch-format optimizer state of ``params``: ({index: {step, exp_avg, exp_avg_sq}}, param
    groups) with every moment gathered to its full shape on the host -- what ``torch.optim.AdamW.
    state_dict()`` gives on the torch backend. A collective under ZeRO (every replica calls it)."""
    if engine.zero_optimization_stage() == 0:
        sd = engine.optimizer.state_dict()
        return sd["state"], sd["param_groups"]
    from deepspeed.utils import safe_get_full_optimizer_state

    steps = [st["step"] for st in _inner(engine).state.values() if "step" in st]
    step = torch.as_tensor(steps[0] if steps else 0.0, dtype=torch.float32).reshape(())
    state = {}
    for i, p in enumerate(params):
        m = {k: safe_get_full_optimizer_state(p, k) for k in ("exp_avg", "exp_avg_sq")}
        if all(v is not None for v in m.values()):
            state[i] = {"step": step.clone(), **{k: v.detach().float().cpu().reshape(p.ds_shape if hasattr(p, "ds_shape")
                                                                                     else p.shape) for k, v in m.items()}}
    return state, template


def full_weights(engine, module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """``module.state_dict()`` with every tensor whole and on the host (a collective under ZeRO-3)."""
    params = list(module.parameters())
    with gathered(engine, params):
        return {k: v.detach().cpu().clone().contiguous() for k, v in module.state_dict().items()}


def load_state(engine, module: torch.nn.Module, weights: dict[str, torch.Tensor], params: list,
               opt_state: dict, groups: list[dict]) -> None:
    """Restore ``module``'s weights and the optimizer's moments from the torch-format tensors
    ``optimizer_state`` and ``full_weights`` produce: the model's copy and ZeRO's fp32 master
    partition of each parameter, then each moment's partition, then the step count."""
    with gathered(engine, params, modify=True), torch.no_grad():
        module.load_state_dict(weights)
    if engine.zero_optimization_stage() == 0:
        engine.optimizer.load_state_dict({"state": opt_state, "param_groups": groups})
        return
    _ensure_moments(engine)
    named = dict(module.named_parameters())
    by_param = {id(p): k for k, p in named.items()}
    for i, p in enumerate(params):
        _set_full(p, weights[by_param[id(p)]])
        if i in opt_state:
            for k in ("exp_avg", "exp_avg_sq"):
                _set_full(p, opt_state[i][k], k)
    steps = [float(v["step"]) for v in opt_state.values() if "step" in v]
    for st in _inner(engine).state.values():
        if "step" in st and steps:
            st["step"] = torch.full_like(st["step"], steps[0]) if torch.is_tensor(st["step"]) else steps[0]


def _ensure_moments(engine) -> None:
    """Give the engine's torch Adam(W), if it has not stepped yet, the (zero) state its first step
    would create, so a checkpoint's moments can be written into it (ZeRO-3 creates them lazily,
    keyed by its flat fp32 partitions rather than by what its param groups hold between steps)."""
    opt, zopt = _inner(engine), engine.optimizer
    flat = getattr(zopt, "fp32_partitioned_groups_flat", None)  # ZeRO-3
    if flat is None:
        flat = getattr(zopt, "single_partition_of_fp32_groups", None)  # ZeRO-1/2
    for p in flat if flat is not None else [p for g in opt.param_groups for p in g["params"]]:
        if "exp_avg" not in opt.state.get(p, {}):
            opt.state[p] = {"step": torch.tensor(0.0), "exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
    if hasattr(zopt, "_lazy_init_hp_params_optimizer_state"):  # ZeRO-1/2 link moments to parameters after a step
        zopt._lazy_init_hp_params_optimizer_state()


def _set_full(p: torch.nn.Parameter, value: torch.Tensor, key: str | None = None) -> None:
    """Write the full fp32 ``value`` (the master weight, or the moment ``key``) into this replica's
    partition of ``p``. ZeRO-1/2 through ``safe_set_full_*``; ZeRO-3 here, because DeepSpeed
    0.19's ``set_full_hp_param`` reads past the end of a parameter whose size the group does not
    divide (the last replica's partition is padded): the padding stays zero."""
    value = value.detach().to(torch.float32)
    if not hasattr(p, "ds_id"):
        from deepspeed.utils import (
            safe_set_full_fp32_param,
            safe_set_full_optimizer_state,
        )

        safe_set_full_fp32_param(p, value) if key is None else safe_set_full_optimizer_state(p, value, key)
        return
    opt = p._z3_optimizer
    part, group = opt._get_fp32_opt_state_partition(p, release_swap_buffers=False, optim_state_key=key)
    flat = value.flatten()
    lo = part.numel() * opt._get_param_partition_rank(p)
    piece = flat[lo: lo + part.numel()]
    with torch.no_grad():
        part.zero_()
        part[: piece.numel()].copy_(piece.to(part.device))
    if opt._swappable_optimizer_subgroup(group):
        opt._optimizer_states_and_gradient_swap_out(group)


def step(engine, params: list) -> float:
    """Apply the accumulated gradients (clipped to the engine's ``gradient_clipping``); returns the
    step's global gradient norm before clipping -- ZeRO records it during the step; at stage 0 (plain
    data-parallel, gradients already all-reduced by the boundary backward) it is read beforehand."""
    if engine.zero_optimization_stage() == 0:
        norms = [p.grad.detach().float().norm() for p in params if p.grad is not None]
        norm = float(torch.linalg.vector_norm(torch.stack(norms))) if norms else 0.0
        engine.step()
        return norm
    engine.step()
    g = engine.get_global_grad_norm()
    return float(g) if g is not None else float("nan")


def destroy(engine) -> None:
    """Release an engine (its ZeRO-3 hooks) before the slot's next run builds another."""
    if engine is not None and hasattr(engine, "destroy"):
        engine.destroy()
