"""Weight sync by broadcast (``cluster.rl.weight_sync: broadcast``): the learner (rank 0) and the
rollout generators form a process group of their own and the learner broadcasts its flat fp32
weights -- device to device over NCCL when every member holds a GPU, over gloo from host memory
otherwise -- instead of one device-to-host copy into Ray's object store and a read per generator.

The group is *stateless*: a ``TCPStore`` and a ``ProcessGroupGloo`` / ``ProcessGroupNCCL`` built
directly, never ``torch.distributed.init_process_group``. A learner group (``replicas > 1``) and
DeepSpeed already own the process's default group, and a restarted generator must be able to join
a fresh group without tearing anything else down. This is how OpenRLHF and verl hand weights to
vLLM (their ``init_process_group`` helper / vLLM's ``StatelessProcessGroup``). Ray's own
``ray.util.collective`` would do the same job, but its NCCL backend needs CuPy (not a dependency
here) and its gloo backend initializes the default group.
"""

from __future__ import annotations

import datetime
import os
import socket

import torch
import torch.distributed as dist


def free_address() -> str:
    """``host:port`` on this node for the group's store (the learner, rank 0, hosts it)."""
    try:
        import ray

        host = ray.util.get_node_ip_address() if ray.is_initialized() else "127.0.0.1"
    except Exception:  # noqa: BLE001 -- outside Ray
        host = "127.0.0.1"
    with socket.socket() as s:
        s.bind(("", 0))
        return f"{host}:{s.getsockname()[1]}"


class WeightGroup:
    """One member of a broadcast group: ``rank`` 0 sends, the others receive."""

    def __init__(self, address: str, rank: int, world: int, backend: str, timeout_s: float = 120.0):
        host, port = address.rsplit(":", 1)
        self.rank, self.world, self.backend = rank, world, backend
        self.device = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
        store = dist.TCPStore(host, int(port), world, is_master=rank == 0,
                              timeout=datetime.timedelta(seconds=timeout_s))
        self.store = store  # the rank-0 store must outlive the group
        if backend == "nccl":
            # wait() blocks and raises on a timeout (a peer died mid-broadcast) instead of only ordering
            # the stream and leaving NCCL's watchdog to kill the process
            os.environ.setdefault("TORCH_NCCL_BLOCKING_WAIT", "1")
            opts = dist.ProcessGroupNCCL.Options()
            opts._timeout = datetime.timedelta(seconds=timeout_s)
            self.pg = dist.ProcessGroupNCCL(store, rank, world, opts)
        else:  # a peer that died mid-broadcast fails the call within timeout_s instead of hanging it
            self.pg = dist.ProcessGroupGloo(store, rank, world, datetime.timedelta(seconds=timeout_s))

    def broadcast(self, flat: torch.Tensor) -> torch.Tensor:
        """Rank 0's ``flat`` into every member's ``flat`` (same size and dtype); returns it."""
        opts = dist.BroadcastOptions()
        opts.rootRank = 0
        flat = flat.to(self.device).contiguous()
        self.pg.broadcast([flat], opts).wait()
        return flat

    def synchronize(self) -> None:
        """Wait until the device has finished this member's collectives (NCCL runs on a stream)."""
        if self.backend == "nccl":
            torch.cuda.synchronize(self.device)

    def close(self) -> None:
        abort = getattr(self.pg, "abort", None)  # NCCL: release the communicator (a dead peer would hang it)
        if self.backend == "nccl" and abort is not None:
            abort()
        self.pg = None
